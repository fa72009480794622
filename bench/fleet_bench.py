"""Fleet capacity: many cameras in the registry topic shared by several itsd nodes.

    python bench/fleet_bench.py [--cameras 1000] [--nodes 4] [--partitions 64] [--fps 0.02]
                                [--capacity 25]

A Tansu broker, ``--cameras`` synthetic cameras (``pattern://`` 64x48, ``--fps`` frames
per second each, so inference stays light) written with ``itsd fleet apply``, and
``--nodes`` itsd nodes (one decode and one inference worker each) with
``fleet.capacity`` ``--capacity``: a node *owns* every camera of its partitions (reads
them, lists them) but starts at most that many, so the group's side (assignment,
reading 1000 cameras, moving them) is measured apart from how fast one daemon starts
cameras (one at a time; the rate is measured on the cameras it does start). It records:

* **start-up**: each node's start until its stages run (not the fleet's doing);
* **first assignment**: from the moment every node runs (they join at once) until
  every camera is owned by a node, and until each node runs its share (up to its
  capacity); the time the group took to hand out the partitions (first ``assigned`` log
  line of each node) and the cameras a node starts per second;
* **rebalance after a kill**: one node SIGKILLed; the time until its partitions are
  reassigned (from the nodes' logs), until every camera is owned again and until the
  survivors run their share (from the status topic, which adds up to
  ``status_interval_s`` of its own).

Prints one JSON object at the end. Keep it to one run on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

from tansu_broker import TansuBroker, free_port  # noqa: E402

from itsd.config import parse_config  # noqa: E402
from itsd.fleet.status import fleet_status  # noqa: E402

ITSD = [sys.executable, "-m", "itsd"]
MODEL = REPO.parent / "shared" / "models" / "yolo11n_int8_320.onnx"
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")


def log_times(path: Path, pattern: str) -> list[float]:
    """Wall times of the log lines matching ``pattern``."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        m = LOG_TIME.match(line)
        if m and re.search(pattern, line):
            out.append(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--partitions", type=int, default=64)
    ap.add_argument("--fps", type=float, default=0.02)
    ap.add_argument("--session-ms", type=int, default=6000)
    ap.add_argument("--capacity", type=int, default=25, help="Cameras each node starts.")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--model", default=str(MODEL))
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="itsd-fleet-bench-"))
    broker = TansuBroker(log_path=tmp / "tansu.log")
    broker.start()
    tag = uuid.uuid4().hex[:8]
    per_node = args.cameras  # sizes the daemon; fleet.capacity limits what it starts
    fleet = {
        "bootstrap_servers": broker.bootstrap,
        "registry_topic": f"cams-{tag}",
        "status_topic": f"nodes-{tag}",
        "group_id": f"bench-{tag}",
        "partitions": args.partitions,
        "session_timeout_ms": args.session_ms,
        "status_interval_s": 2.0,
        "capacity": args.capacity,
    }

    def config(name: str) -> Path:
        wd = tmp / name
        wd.mkdir(exist_ok=True)
        cfg = {
            "model": {"path": args.model},
            "performance": {
                "inference_workers": 1,
                "decode_workers": 1,
                "cameras_per_decode_worker": per_node,
                "frame_ring_slots": 3,
            },
            "outputs": {"jsonl_path": str(wd / "events.jsonl")},
            "server": {"grpc_port": free_port(), "monitoring_port": 0},
            "pid_file": str(wd / "itsd.pid"),
            "state_dir": str(wd / "state"),
            "store": {"enabled": False},
            "supervisor": {"max_cameras": per_node, "startup_grace_s": 300},
            "fleet": {**fleet, "enabled": True, "node_id": name},
        }
        path = wd / "itsd.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    cli_cfg = config("cli")
    fleet_cfg = parse_config(yaml.safe_load(cli_cfg.read_text()))
    src = f"pattern://moving?width=64&height=48&fps={args.fps:g}"
    cams = [
        {"id": f"cam-{i:04d}", "source": src, "max_width": 64, "max_height": 48}
        for i in range(args.cameras)
    ]
    (tmp / "cameras.yaml").write_text(yaml.safe_dump({"cameras": cams}))
    t0 = time.monotonic()
    out = subprocess.run(
        [*ITSD, "fleet", "apply", str(tmp / "cameras.yaml"), "--config", str(cli_cfg)],
        capture_output=True,
        text=True,
        check=False,
    )
    apply_s = time.monotonic() - t0
    print(out.stdout.strip(), out.stderr.strip()[-500:], f"({apply_s:.1f} s)", flush=True)

    procs: dict[str, subprocess.Popen[bytes]] = {}
    names = [f"n{i + 1}" for i in range(args.nodes)]
    result: dict[str, Any] = {
        "cameras": args.cameras,
        "nodes": args.nodes,
        "partitions": args.partitions,
        "fps_per_camera": args.fps,
        "session_timeout_ms": args.session_ms,
        "apply_s": round(apply_s, 1),
    }

    def counts() -> dict[str, tuple[int, int]]:
        """node -> (cameras owned, cameras running)."""
        st = fleet_status(fleet_cfg, timeout=30)
        return {
            n["node"]: (len(n["cameras"]) + len(n["starting"]) + len(n["waiting"]),
                        len(n["cameras"]))
            for n in st["nodes"]
            if n["state"] == "running"
        }  # fmt: skip

    def wait_all(alive: set[str], what: str) -> tuple[float, float]:
        """(when every camera was owned, when every node ran its share)."""
        start = time.monotonic()
        owned_at = None
        last: dict[str, tuple[int, int]] = {}
        while time.monotonic() - start < args.timeout:
            last = counts()
            if set(last) == alive and sum(o for o, _ in last.values()) == args.cameras:
                owned_at = owned_at or time.monotonic()
                if all(r == min(o, args.capacity) for o, r in last.values()):
                    return owned_at, time.monotonic()
            print(f"  {what}: (owned, running) {last}", flush=True)
            time.sleep(1)
        raise SystemExit(f"{what}: not done within {args.timeout:.0f} s: {last}")

    try:
        t_start = time.time()
        for name in names:
            path = config(name)
            fh = open(path.parent / "itsd.log", "ab")  # noqa: SIM115 - the node's log
            procs[name] = subprocess.Popen(
                [*ITSD, "start", "--foreground", "--config", str(path)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=path.parent,
            )
        logs = {n: tmp / n / "itsd.log" for n in names}
        while not all(log_times(p, "joining group") for p in logs.values()):
            time.sleep(0.5)
        joined = {n: log_times(p, "joining group")[0] for n, p in logs.items()}
        t_all_up_wall = max(joined.values())
        t_all_up = time.monotonic()
        result["node_startup_s"] = {n: round(joined[n] - t_start, 1) for n in names}
        t_owned, t_done = wait_all(set(names), "first assignment")
        first_assign = {n: log_times(p, "assigned partition")[0] for n, p in logs.items()}
        result["first_assignment"] = {
            "group_s": round(max(first_assign.values()) - t_all_up_wall, 1),
            "all_cameras_owned_s": round(t_owned - t_all_up, 1),
            "every_node_runs_its_share_s": round(t_done - t_all_up, 1),
            "owned_running_per_node": counts(),
        }
        adds = sorted(t for p in logs.values() for t in log_times(p, r"added \(fleet\)"))
        per_node_rate = []
        for p in logs.values():
            ts = log_times(p, r"added \(fleet\)")
            if len(ts) > 1:
                per_node_rate.append((len(ts) - 1) / (ts[-1] - ts[0]))
        result["first_assignment"]["camera_starts_per_s_per_node"] = [
            round(r, 1) for r in per_node_rate
        ]
        result["first_assignment"]["camera_start_span_s"] = round(adds[-1] - adds[0], 1)
        time.sleep(4)

        victim = names[0]
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait(10)
        t_kill_wall, t_kill = time.time(), time.monotonic()
        t_owned, t_done = wait_all(set(names[1:]), "after the kill")
        reassigned = [
            t
            for n in names[1:]
            for t in log_times(logs[n], "assigned partition")
            if t > t_kill_wall
        ]
        result["rebalance_after_kill"] = {
            "partitions_reassigned_s": round(min(reassigned) - t_kill_wall, 1)
            if reassigned
            else None,
            "last_assignment_s": round(max(reassigned) - t_kill_wall, 1) if reassigned else None,
            "all_cameras_owned_s": round(t_owned - t_kill, 1),
            "every_node_runs_its_share_s": round(t_done - t_kill, 1),
            "owned_running_per_node": counts(),
        }
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        broker.stop()
    print(json.dumps(result, indent=1))
    print(f"logs in {tmp}")


if __name__ == "__main__":
    main()
