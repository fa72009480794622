"""Many cameras on one daemon: registration time against camera count, memory per camera.

    .venv/bin/python bench/cameras_bench.py [--cameras 64] [--run-s 60] [--model PATH]

Starts a real daemon with no camera, registers ``--cameras`` synthetic cameras one by
one over gRPC (``pattern://`` sources: decoding costs almost nothing, so what is
measured is itsd's own cost per camera), keeps them running for ``--run-s`` seconds,
then removes them all. It prints:

* the time each registration took (until the stages serve the camera), at every
  power of two, so the growth with the number of cameras shows;
* shared memory in /dev/shm: the core and each camera's share;
* memory of the processes (PSS, so shared libraries are counted once): the core with
  no camera, and each camera's share;
* frames decoded and inferred per second during the run, and the frame drops.

Writes the figures as JSON to ``--json`` when given. Nothing here is asserted: this is a
measurement, and this machine's noise is part of it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from itsd.control import client  # noqa: E402

SHM = Path(os.environ.get("ITSD_SHM_DIR", "/dev/shm"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(p.name))
    return out


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _memory(sup_pid: int) -> dict[str, int]:
    pids = [sup_pid, *_children(sup_pid)]
    return {"processes": len(pids), "pss_kib": sum(_pss_kib(p) for p in pids)}


def _shm_bytes(run_id: str) -> dict[str, int]:
    core = cams = 0
    for p in SHM.glob(f"itsd-{run_id}-*"):
        size = p.stat().st_blocks * 512  # what tmpfs really holds
        if "-frames-" in p.name or "camk" in p.name:
            cams += size
        else:
            core += size
    return {"core": core, "cameras": cams}


def _state(http_port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/state", timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cameras", type=int, default=64)
    ap.add_argument("--run-s", type=float, default=60.0)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument(
        "--model",
        default=os.environ.get(
            "ITSD_TEST_MODEL", str(REPO.parent / "shared/models/yolo11n_int8_320.onnx")
        ),
    )
    ap.add_argument(
        "--decode-workers", type=int, default=0, help="performance.decode_workers (0: auto)"
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="itsd-cameras-bench-"))
    grpc_port, http_port = _free_port(), _free_port()
    cfg = {
        "model": {"path": args.model},
        "outputs": {"jsonl_path": None},
        "server": {"grpc_port": grpc_port, "monitoring_port": http_port},
        "pid_file": str(work / "itsd.pid"),
        "state_dir": str(work / "state"),
        "performance": {"decode_workers": args.decode_workers},
        "supervisor": {"max_cameras": max(64, args.cameras)},
        "cameras": [],
    }
    (work / "itsd.yaml").write_text(yaml.safe_dump(cfg))
    log = open(work / "itsd.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "itsd", "start", "--config", str(work / "itsd.yaml")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    target = f"127.0.0.1:{grpc_port}"
    result: dict[str, Any] = {
        "cameras": args.cameras,
        "fps": args.fps,
        "decode_workers": args.decode_workers or "auto",
    }
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                h = client.get_health(target, 2)
                if any(s.name.startswith("infer") and s.state == 2 for s in h.stages):
                    break
            except client.ControlClientError:
                pass
            time.sleep(0.2)
        text = (work / "itsd.log").read_text()
        run_id = text.split("shared memory ready: run ", 1)[1].split(",", 1)[0]
        time.sleep(2)
        base_mem = _memory(proc.pid)
        base_shm = _shm_bytes(run_id)
        times: list[float] = []
        src = f"pattern://moving?width=320&height=240&fps={args.fps:g}"
        opts = {"max_width": 320, "max_height": 240}
        for i in range(args.cameras):
            t0 = time.perf_counter()
            client.register_stream(target, 120, f"cam{i:03d}", src, args.fps, 0, opts)
            times.append(time.perf_counter() - t0)
        print(f"registered {args.cameras} cameras; running {args.run_s:.0f} s", flush=True)
        time.sleep(min(10.0, args.run_s))
        s0 = _state(http_port)
        t_run = time.monotonic()
        time.sleep(max(0.0, args.run_s - 10.0))
        s1 = _state(http_port)
        dt = time.monotonic() - t_run
        mem = _memory(proc.pid)
        shm = _shm_bytes(run_id)
        c0, c1 = (x.get("counters") or x["metrics"]["counters"] for x in (s0, s1))
        n = args.cameras
        marks = sorted({1, *[2**k for k in range(1, 12) if 2**k <= n], n})
        result.update(
            {
                "registration_ms": {str(k): round(times[k - 1] * 1000, 1) for k in marks},
                "registration_ms_median": round(statistics.median(times) * 1000, 1),
                "shm_core_mib": round(base_shm["core"] / 2**20, 2),
                "shm_per_camera_kib": round(shm["cameras"] / n / 1024, 1),
                "pss_core_mib": round(base_mem["pss_kib"] / 1024, 1),
                "pss_per_camera_mib": round((mem["pss_kib"] - base_mem["pss_kib"]) / n / 1024, 1),
                "processes": mem["processes"],
                "decode_fps": round((c1["frames_decoded"] - c0["frames_decoded"]) / dt, 1),
                "infer_fps": round((c1["frames_inferred"] - c0["frames_inferred"]) / dt, 1),
                "frames_dropped": int(c1["frames_dropped"]),
                "health": s1["health"]["status"],
            }
        )
        t0 = time.perf_counter()
        for i in range(n):
            client.unregister_stream(target, 120, f"cam{i:03d}")
        result["removal_ms_mean"] = round((time.perf_counter() - t0) / n * 1000, 1)
        result["shm_after_removal_mib"] = round(_shm_bytes(run_id)["cameras"] / 2**20, 2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        log.close()
    print(json.dumps(result, indent=2))
    print(
        "\n| cameras | registration ms (k-th camera) | shm per camera | PSS per camera | "
        "core PSS | decode fps | infer fps |"
    )
    print("|---|---|---|---|---|---|---|")
    regs = ", ".join(f"{k}: {v}" for k, v in result["registration_ms"].items())
    print(
        f"| {n} | {regs} | {result['shm_per_camera_kib']} KiB | "
        f"{result['pss_per_camera_mib']} MiB | {result['pss_core_mib']} MiB | "
        f"{result['decode_fps']} | {result['infer_fps']} |"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
