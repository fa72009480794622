"""Soak: the whole daemon for a long run, every process's memory and the latency sampled.

    .venv/bin/python bench/soak.py [--cameras 8] [--fps 2] [--duration 600] \\
        [--warmup 120] [--json soak.json] [--png soak.png] [--tracemalloc DIR]

Starts ``itsd start`` on ``--cameras`` file cameras that loop the shared clips in real
time (``loop: true, realtime: true``, each at ``--fps``), each with a counting line, a
calibrated ground plane (speed, heading) and a zone with a speed limit, events to a
JSONL file. Every ``--interval`` seconds (default 10) it reads the stages from the
daemon's health (gRPC: name, pid, restarts) and samples each process's PSS and RSS
from ``/proc`` (the supervisor too), and the frame-to-event latency of the detection
events published since the last sample (capture time to the moment the event was
readable in the file: p50/p99).

At the end, per process, the growth after warm-up (the first ``--warmup`` seconds are
left out) of its own memory (``--judge-on own``: PSS less the file-backed pages, i.e.
heap plus its share of the shared-memory rings; the file-backed share moves with other
processes mapping the same libraries) or of all its PSS (``--judge-on pss``): the
median of the last three samples over the median of the first three, in percent, and
the fitted slope in MiB per minute; and the latency trend: the fitted
slope of the windows' p50 and p99 in ms per minute. It prints a table and PASS or FAIL:
every process grows less than ``--max-growth`` percent (default 5) and neither latency
slope, over the measured span, rises more than ``max(10 ms, 20 %)`` of its median. The
JSON report (``--json``) holds every sample; the PNG (``--png``, OpenCV, as
``bench/e2e_bench.py``) draws the memory of each process and the latency over time.

``--tracemalloc DIR`` runs analytics and the publisher with ``ITSD_TRACEMALLOC=DIR``
(see ``itsd.runtime.memtrace``; ``ITSD_TRACEMALLOC_STAGES`` picks others): each writes
what grew since its warm-up, by source line.

A bench tool: it starts its own daemon in a temporary folder, on this machine only, and
must never touch another daemon or anything outside that folder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from loadgen import Latencies, pct, tail_jsonl  # noqa: E402

MEDIA = REPO.parent / "shared" / "media"
DEFAULT_CLIPS = (
    "street_overhead_dusk.mp4",
    "suburban_street.mp4",
    "bikes.mp4",
    "car_detection_topdown.mp4",
)
DEFAULT_MODEL = REPO.parent / "shared" / "models" / "yolo11n_int8_320.onnx"
MAX_CAMERAS, MAX_DURATION_S = 64, 24 * 3600.0
PREFIX = "soak-"


# -- the numbers ---------------------------------------------------------------------------
def slope_per_min(ts: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` over ``ts`` (seconds), per minute; 0 with < 2 points."""
    pts = [(t, y) for t, y in zip(ts, ys, strict=True) if not math.isnan(y)]  # NaN windows left out
    if len(pts) < 2:
        return 0.0
    mt = statistics.fmean(t for t, _ in pts)
    my = statistics.fmean(y for _, y in pts)
    den = sum((t - mt) ** 2 for t, _ in pts)
    if den == 0:
        return 0.0
    return sum((t - mt) * (y - my) for t, y in pts) / den * 60.0


def growth_pct(values: list[float], edge: int = 3) -> float:
    """Growth from the start to the end of a series, percent: the median of the last
    ``edge`` values over the median of the first ``edge`` (robust to one odd sample)."""
    if len(values) < 2:
        return 0.0
    k = max(1, min(edge, len(values) // 2))
    first = statistics.median(values[:k])
    last = statistics.median(values[-k:])
    return (last - first) / first * 100.0 if first else 0.0


@dataclass
class Verdict:
    """The soak's result: growth per process, latency trend, PASS or FAIL and why."""

    memory: dict[str, dict[str, float]] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def judge(
    samples: list[dict[str, Any]],
    warmup_s: float,
    max_growth_pct: float = 5.0,
    max_latency_rise_ms: float = 10.0,
    max_latency_rise_frac: float = 0.2,
    key: str = "pss_mib",
) -> Verdict:
    """Growth after warm-up per process (by ``key``: PSS, or ``own_mib``) and the
    latency trend of ``samples``.

    Each sample: ``{"t": s, "pss_mib": {process: MiB}, "p50_ms": .., "p99_ms": ..}``. A
    process counts from its first sample after ``warmup_s``; one that restarted (its pid
    changed) is a failure of its own, its memory is not comparable."""
    v = Verdict()
    kept = [s for s in samples if s["t"] >= warmup_s]
    if len(kept) < 2:
        v.failures.append(f"fewer than 2 samples after the {warmup_s:.0f} s warm-up")
        return v
    names = sorted({n for s in kept for n in s[key]})
    for name in names:
        pts = [(s["t"], s[key][name]) for s in kept if name in s[key]]
        pids = {s.get("pids", {}).get(name) for s in kept if name in s[key]} - {None}
        ts, ys = [t for t, _ in pts], [y for _, y in pts]
        g = growth_pct(ys)
        v.memory[name] = {
            "start_mib": round(ys[0], 1),
            "end_mib": round(ys[-1], 1),
            "max_mib": round(max(ys), 1),
            "growth_pct": round(g, 2),
            "slope_mib_per_min": round(slope_per_min(ts, ys), 4),
        }
        if key != "pss_mib":
            v.memory[name]["pss_growth_pct"] = round(
                growth_pct([s["pss_mib"][name] for s in kept if name in s["pss_mib"]]), 2
            )
        for part in ("pss_anon_mib", "pss_shmem_mib"):  # heap and shared-memory shares
            ys_part = [s[part][name] for s in kept if name in s.get(part, {})]
            if ys_part:
                short = part.removesuffix("_mib").removeprefix("pss_")
                v.memory[name][f"{short}_start_mib"] = round(ys_part[0], 1)
                v.memory[name][f"{short}_end_mib"] = round(ys_part[-1], 1)
        if g >= max_growth_pct:
            v.failures.append(f"{name}: memory grew {g:.1f} % after warm-up")
        if len(pids) > 1:
            v.failures.append(f"{name}: restarted during the soak (pids {sorted(pids)})")
    ts = [s["t"] for s in kept]
    span_min = (ts[-1] - ts[0]) / 60.0
    for q in ("p50", "p99"):
        ys = [float(s[f"{q}_ms"]) for s in kept]
        finite = [y for y in ys if not math.isnan(y)]
        slope = slope_per_min(ts, ys)
        med = statistics.median(finite) if finite else float("nan")
        v.latency[f"{q}_median_ms"] = round(med, 1)
        v.latency[f"{q}_slope_ms_per_min"] = round(slope, 3)
        rise = slope * span_min
        allowed = max(max_latency_rise_ms, max_latency_rise_frac * med) if finite else 0.0
        if not finite:
            v.failures.append(f"no detection events after the warm-up ({q})")
        elif rise > allowed:
            v.failures.append(
                f"latency {q} rises {slope:.2f} ms/min ({rise:.0f} ms over the run; "
                f"allowed {allowed:.0f})"
            )
    return v


# -- the daemon ----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def soak_config(
    workdir: Path, model: Path, clips: list[Path], cameras: int, fps: float, grpc_port: int
) -> dict[str, Any]:
    """The daemon's configuration: ``cameras`` looping real-time file cameras, each with
    a line, a calibration and a zone with a speed limit; events to JSONL."""
    cams = []
    for i in range(cameras):
        cams.append(
            {
                "id": f"{PREFIX}{i:02d}",
                "source": str(clips[i % len(clips)]),
                "loop": True,
                "realtime": True,
                "target_fps": fps,
                "lines": [{"id": "mid", "start": [0.5, 0.0], "end": [0.5, 1.0]}],
                "zones": [
                    {
                        "id": "road",
                        "polygon": [[0.05, 0.3], [0.95, 0.3], [0.95, 0.95], [0.05, 0.95]],
                        "speed_limit_kmh": 50.0,
                    }
                ],
                "calibration": {
                    "image_points": [[0.0, 0.3], [1.0, 0.3], [1.0, 1.0], [0.0, 1.0]],
                    "world_points": [[0.0, 40.0], [30.0, 40.0], [30.0, 0.0], [0.0, 0.0]],
                    "note": "rough: a 30 m by 40 m stretch of road",
                },
            }
        )
    return {
        "model": {"path": str(model)},
        "outputs": {"jsonl_path": str(workdir / "events.jsonl")},
        "server": {"grpc_port": grpc_port, "monitoring_port": 0},
        "pid_file": str(workdir / "itsd.pid"),
        "state_dir": str(workdir / "state"),
        "cameras": cams,
    }


MEM_FIELDS = ("Pss", "Rss", "Pss_Anon", "Pss_Shmem")


def _proc_mem_kib(pid: int) -> dict[str, int]:
    """PSS, RSS and PSS's anonymous (heap) and shared-memory parts of a process, KiB
    (``smaps_rollup``); empty once the process is gone."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in MEM_FIELDS:
                out[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    return out


def _of(by_name: dict[str, float], prefix: str) -> float:
    """The sum over processes whose name starts with ``prefix`` (shards: analyze0, ...)."""
    return sum(v for k, v in by_name.items() if k.startswith(prefix))


def stage_pids(target: str) -> dict[str, int]:
    """Stage name -> pid, from the daemon's health."""
    from itsd.control import client

    health = client.get_health(target, 5)
    return {st.name: st.pid for st in health.stages if st.pid}


def start_daemon(d: Path, cfg: dict[str, Any]) -> subprocess.Popen[bytes]:
    """``itsd start`` on `cfg`, written to d/c.yaml; d/events.jsonl made empty first (for
    a reader to tail), the daemon's output to d/itsd.log."""
    (d / "c.yaml").write_text(yaml.safe_dump(cfg))
    (d / "events.jsonl").touch()
    with open(d / "itsd.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "itsd", "start", "--config", str(d / "c.yaml")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, up to a minute to drain and exit, then SIGKILL."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def wait_ready(target: str, proc: subprocess.Popen[bytes], timeout_s: float = 180.0) -> None:
    """Until every stage has a pid and the daemon serves (or it died: SystemExit)."""
    from itsd.control import client

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"soak: the daemon exited with {proc.returncode} (see its log)")
        with contextlib.suppress(client.ControlClientError):
            health = client.get_health(target, 5)
            if health.stages and all(st.pid for st in health.stages):
                return
        time.sleep(1.0)
    raise SystemExit("soak: the daemon did not become ready")


# -- the picture ---------------------------------------------------------------------------
def chart(report: dict[str, Any], path: Path) -> None:
    """Memory (MiB, one line per process) and latency (p50, p99) over time (OpenCV)."""
    import cv2
    import numpy as np

    samples = report["samples"]
    w, h, pad = 960, 720, 70
    img = np.full((h, w, 3), 255, np.uint8)
    t_max = max(s["t"] for s in samples) or 1.0
    panels = [(60, h // 2 - 20), (h // 2 + 40, h - pad)]
    palette = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ]

    def x_of(t: float) -> int:
        return int(pad + (w - 2 * pad - 170) * t / t_max)

    def panel(
        top: int, bottom: int, series: dict[str, list[tuple[float, float]]], unit: str
    ) -> None:
        ys = [y for pts in series.values() for _, y in pts if not math.isnan(y)]
        lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
        lo, hi = lo - (hi - lo) * 0.05 - 0.5, hi + (hi - lo) * 0.05 + 0.5
        cv2.rectangle(img, (pad, top), (x_of(t_max), bottom), (0, 0, 0), 1)
        for k in range(5):
            v = lo + (hi - lo) * k / 4
            y = int(bottom - (bottom - top) * (v - lo) / (hi - lo))
            cv2.putText(img, f"{v:.0f}", (5, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 0, 1)
        cv2.putText(img, unit, (5, top - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 0, 1)
        xw = x_of(report["warmup_s"])
        cv2.line(img, (xw, top), (xw, bottom), (180, 180, 180), 1)
        for i, (name, pts) in enumerate(sorted(series.items())):
            colour = palette[i % len(palette)]
            prev = None
            for t, yv in pts:
                if math.isnan(yv):
                    prev = None
                    continue
                p = (x_of(t), int(bottom - (bottom - top) * (yv - lo) / (hi - lo)))
                if prev is not None:
                    cv2.line(img, prev, p, colour, 2)
                prev = p
            ly = top + 14 + 16 * i
            cv2.line(img, (w - pad - 150, ly - 4), (w - pad - 130, ly - 4), colour, 2)
            cv2.putText(img, name[:22], (w - pad - 125, ly), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 0, 1)

    key = report.get("judged_on", "pss_mib")
    mem: dict[str, list[tuple[float, float]]] = {}
    for s in samples:
        for name, v in s.get(key, s["pss_mib"]).items():
            mem.setdefault(name, []).append((s["t"], v))
    # decode workers are many and alike: the first two are drawn
    decode = sorted(n for n in mem if n.startswith("decode"))
    for n in decode[2:]:
        mem.pop(n)
    lat = {
        "p50": [(s["t"], s["p50_ms"]) for s in samples],
        "p99": [(s["t"], s["p99_ms"]) for s in samples],
    }
    panel(*panels[0], mem, "own PSS MiB (heap + shm)" if key == "own_mib" else "PSS MiB")
    panel(*panels[1], lat, "latency ms")
    for k in range(0, int(t_max) + 1, max(60, int(t_max / 10) // 60 * 60)):
        cv2.putText(
            img, f"{k // 60}m", (x_of(k) - 8, h - pad + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 0, 1
        )
    verdict = "PASS" if report["passed"] else "FAIL"
    title = (
        f"soak {report['cameras']} cameras x {report['fps']:g} fps, {report['duration_s']:.0f} s,"
        f" {report['date']}: {verdict} (grey line: end of warm-up)"
    )
    cv2.putText(img, title, (pad, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 0, 1)
    cv2.imwrite(str(path), img)


# -- the run -------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--fps", type=float, default=2.0, help="frames per second per camera")
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of the soak")
    ap.add_argument("--warmup", type=float, default=120.0, help="seconds left out of growth")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--clip", type=Path, action="append", help="clips (default: 4 shared)")
    ap.add_argument("--max-growth", type=float, default=5.0, help="percent allowed")
    ap.add_argument(
        "--judge-on",
        choices=("own", "pss"),
        default="own",
        help="own: PSS less file-backed pages (heap + shared memory); pss: all of PSS",
    )
    ap.add_argument("--tracemalloc", type=Path, help="trace the stages' allocations here")
    ap.add_argument("--keep", type=Path, help="run in this folder and keep it (log, events)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--png", type=Path)
    args = ap.parse_args(argv)
    if not 1 <= args.cameras <= MAX_CAMERAS:
        ap.error(f"--cameras must be 1..{MAX_CAMERAS}")
    if not 0 < args.duration <= MAX_DURATION_S or not 0 <= args.warmup < args.duration:
        ap.error("--duration must be positive and --warmup shorter than it")
    # SIGTERM ends the soak as Ctrl-C does: the daemon is stopped, nothing is left behind.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    clips = args.clip or [MEDIA / c for c in DEFAULT_CLIPS]
    for c in clips:
        if not c.exists():
            ap.error(f"no clip {c}")

    with contextlib.ExitStack() as stack:
        if args.keep:
            workdir = args.keep
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="itsd-soak-")))
        report = run_soak(args, clips, workdir)
    if args.json:  # the samples are kept even if judging them fails
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    key = "own_mib" if args.judge_on == "own" else "pss_mib"
    v = judge(report["samples"], args.warmup, args.max_growth, key=key)
    report.update(
        {
            "judged_on": key,
            "memory": v.memory,
            "latency": v.latency,
            "failures": v.failures,
            "passed": v.passed,
        }
    )
    print()
    print(f"memory judged on {key} (MiB); PSS growth beside it")
    print(
        f"{'process':<22}{'start':>9}{'end':>9}{'max':>9}{'growth':>9}{'MiB/min':>10}"
        f"{'PSS growth':>11}{'anon':>15}{'shmem':>13}"
    )
    for name, r in v.memory.items():
        anon = f"{r.get('anon_start_mib', 0):.1f}->{r.get('anon_end_mib', 0):.1f}"
        shmem = f"{r.get('shmem_start_mib', 0):.1f}->{r.get('shmem_end_mib', 0):.1f}"
        print(
            f"{name:<22}{r['start_mib']:>9.1f}{r['end_mib']:>9.1f}{r['max_mib']:>9.1f}"
            f"{r['growth_pct']:>8.2f}%{r['slope_mib_per_min']:>10.3f}"
            f"{r.get('pss_growth_pct', r['growth_pct']):>10.2f}%{anon:>15}{shmem:>13}"
        )
    print(
        f"latency after warm-up: p50 {v.latency['p50_median_ms']} ms "
        f"({v.latency['p50_slope_ms_per_min']:+.2f} ms/min), p99 {v.latency['p99_median_ms']} "
        f"ms ({v.latency['p99_slope_ms_per_min']:+.2f} ms/min)"
    )
    print(f"events {report['events']} ({report['events_per_s']}/s)")
    for f in v.failures:
        print(f"  FAIL: {f}")
    print("PASS" if v.passed else "FAIL")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.png:
        chart(report, args.png)
    return 0 if v.passed else 1


def run_soak(args: argparse.Namespace, clips: list[Path], workdir: Path) -> dict[str, Any]:
    """Start the daemon, sample it for ``args.duration`` seconds, stop it; the report."""
    port = _free_port()
    target = f"127.0.0.1:{port}"
    cfg = soak_config(workdir, args.model, clips, args.cameras, args.fps, port)
    if args.tracemalloc:
        # Traced stages are several times slower: their heartbeats must not look stuck.
        cfg["supervisor"] = {"heartbeat_timeout_s": 120.0}
    (workdir / "soak.yaml").write_text(yaml.safe_dump(cfg))
    events = workdir / "events.jsonl"
    events.touch()
    lat = Latencies(PREFIX)
    reader = threading.Thread(target=tail_jsonl, args=(events, lat), daemon=True)
    reader.start()
    env = dict(os.environ)
    if args.tracemalloc:
        env["ITSD_TRACEMALLOC"] = str(args.tracemalloc.resolve())
        env.setdefault("ITSD_TRACEMALLOC_WARMUP", str(args.warmup))
        env.setdefault("ITSD_TRACEMALLOC_PERIOD", "60")
        env.setdefault("ITSD_TRACEMALLOC_STAGES", "analyze,publish")
    samples: list[dict[str, Any]] = []
    with open(workdir / "itsd.log", "wb") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "itsd", "start", "--config", str(workdir / "soak.yaml")],
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
        try:
            wait_ready(target, proc)
            t0 = time.monotonic()
            n_seen = len(lat.snapshot()[0])
            end = t0 + args.duration
            next_at = t0
            while True:
                now = time.monotonic()
                if now >= end:
                    break
                time.sleep(max(0.0, min(next_at, end) - now))
                next_at += args.interval
                if proc.poll() is not None:
                    raise SystemExit(f"soak: the daemon exited with {proc.returncode}")
                try:
                    pids = stage_pids(target)
                except Exception as err:  # a busy daemon: sample again later
                    print(f"soak: health not read: {err}", file=sys.stderr)
                    continue
                pids["supervisor"] = proc.pid
                mem: dict[str, dict[str, float]] = {f: {} for f in MEM_FIELDS}
                for name, pid in pids.items():
                    got = _proc_mem_kib(pid)
                    if got.get("Pss"):
                        for f, v in got.items():
                            mem[f][name] = round(v / 1024, 2)
                pss = mem["Pss"]
                all_lat, _ = lat.snapshot()
                window = all_lat[n_seen:]
                n_seen = len(all_lat)
                s = {
                    "t": round(time.monotonic() - t0, 1),
                    "pss_mib": pss,
                    "rss_mib": mem["Rss"],
                    "pss_anon_mib": mem["Pss_Anon"],
                    "pss_shmem_mib": mem["Pss_Shmem"],
                    "own_mib": {
                        n: round(mem["Pss_Anon"].get(n, 0.0) + mem["Pss_Shmem"].get(n, 0.0), 2)
                        for n in pss
                    },
                    "pids": pids,
                    "events": len(window),
                    "p50_ms": round(pct(window, 50) * 1000, 1),
                    "p99_ms": round(pct(window, 99) * 1000, 1),
                }
                samples.append(s)
                total = sum(pss.values())
                shm = mem["Pss_Shmem"]
                print(
                    f"[{s['t']:6.0f} s] events {len(window) / args.interval:6.1f}/s  latency p50 "
                    f"{s['p50_ms']:6.1f} ms  p99 {s['p99_ms']:6.1f} ms  PSS {total:6.0f} MiB "
                    f"(analyze {_of(pss, 'analyze'):.1f}, shm {_of(shm, 'analyze'):.1f};"
                    f" publish {_of(pss, 'publish'):.1f}, shm {_of(shm, 'publish'):.1f})",
                    flush=True,
                )
            dt = time.monotonic() - t0
        finally:
            stop_daemon(proc)
            lat.stop.set()
    n_events = len(lat.snapshot()[0])
    return {
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores",
        "model": args.model.name,
        "clips": [c.name for c in clips],
        "cameras": args.cameras,
        "fps": args.fps,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "interval_s": args.interval,
        "events": n_events,
        "events_per_s": round(n_events / dt, 1) if dt else 0.0,
        "samples": samples,
    }


if __name__ == "__main__":
    sys.exit(main())
