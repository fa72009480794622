"""Benchmark: the most cameras at a given rate that itsd keeps up with, beside the model.

    .venv/bin/python bench/max_cameras.py [--fps 5] [--cameras 8,10,11,12] [--duration 60]
        [--source file|rtsp] [--rounds R] [--json out.json]
    .venv/bin/python bench/max_cameras.py --paired R [--duration 50] [--json out.json]

The model's own limit comes first: (a) of ``bench/e2e_bench.py`` (one single-threaded
ONNX Runtime session per core on pre-decoded, pre-letterboxed frames), frames/s divided
by ``--fps`` = the cameras the model allows. Beside it (a+d): the same loops, each also
decoding the re-timed clip as it goes (PyAV, RGB, letterbox): the cameras a machine
allows that must decode its streams too, which no pipeline avoids. Then, for each count
N (in rotation over ``--rounds``), a fresh daemon with its defaults (events to a JSONL
file) runs N cameras whose streams run at ``--fps`` (the clip re-timed with ffmpeg, as
an IP camera's substream set to the analysis rate), for ``--duration`` seconds:

* ``--source file`` (default): N looping file cameras paced at their rate
  (``realtime: true``), set in the configuration: only the daemon runs;
* ``--source rtsp``: N RTSP cameras from ``bench/loadgen.py`` (one GStreamer RTSP server,
  registered over gRPC): closer to the field, but on a small machine the server and the
  event reader take a good share of the CPU from the daemon.

A count is kept up with when the events reach at least ``--keep-up`` of the frames
offered (N x fps). The frame-to-event latency (capture time to the event being readable
in the JSONL file) is reported beside it, and whether its p99 is under 100 ms plus the
model's own time per frame (the latency goal is for half load; near the limit frames
queue behind each other until a camera's next frame replaces the one waiting, so the p99
there nears one frame interval plus the model's time). (a) and (a+d) are measured again
at the end and the median of each pair taken. It prints a table (events/s, share of
offered, p50/p99 latency, daemon CPU in cores) and the largest count kept up with beside
the count the model allows; ``--json`` writes it all. Needs ffmpeg; the RTSP mode also
Debian's GStreamer RTSP server (``make system-deps``).

``--paired R`` asks the goal's question directly, (b)/(a) at the count of cameras the
model allows, in R rounds: each measures (a), runs itsd at the count that (a) allows and
measures (a) again, and compares itsd's events/s with the mean of the two (a)s; the
median of the rounds is the answer, (c) runs once at the median count.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from e2e_bench import ULTRALYTICS_VENV, ultralytics_track  # noqa: E402
from loadgen import Latencies, pct, scaled_clip, stat_cpu_s, tail_jsonl  # noqa: E402
from pipeline_bench import DEFAULT_CLIP, DEFAULT_MODEL, raw_all_cores  # noqa: E402
from soak import start_daemon, stop_daemon, wait_ready  # noqa: E402

from itsd.control import client  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants now alive."""
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += stat_cpu_s(Path(f"/proc/{pid}/stat"))
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return total


def run_files(n: int, args: argparse.Namespace, clip: Path, d: Path) -> dict[str, Any]:
    """N looping file cameras of the re-timed clip, paced at its rate, set in the config:
    no load generator shares the machine. Latency from the events as they are written."""
    port = _free_port()
    cfg = _base_config(args, d, port)
    cameras = [
        {"id": f"cam-{i:03d}", "source": str(clip), "realtime": True, "loop": True}
        for i in range(n)
    ]
    spread = getattr(args, "start", "together") == "spread"
    if not spread:
        cfg["cameras"] = cameras
    proc = start_daemon(d, cfg)
    lat = Latencies("cam-")
    reader = threading.Thread(target=tail_jsonl, args=(d / "events.jsonl", lat), daemon=True)
    reader.start()
    try:
        target = f"127.0.0.1:{port}"
        wait_ready(target, proc)
        if spread:
            add_spread(target, cameras, args.fps)
        time.sleep(args.warmup)
        base = len(lat.snapshot()[0])
        cpu0, t0 = _tree_cpu_s(proc.pid), time.monotonic()
        time.sleep(max(1.0, args.duration - args.warmup))
        dt = time.monotonic() - t0
        cpu = _tree_cpu_s(proc.pid) - cpu0
        run = lat.snapshot()[0][base:]
    finally:
        lat.stop.set()
        stop_daemon(proc)
    return {
        "measured_s": round(dt, 1),
        "events_per_s": round(len(run) / dt, 1),
        "latency_ms": {q: round(pct(run, float(q[1:])) * 1000, 1) for q in ("p50", "p95", "p99")},
        "daemon_cpu_cores": round(cpu / dt, 2),
    }


def add_spread(target: str, cameras: list[dict[str, Any]], fps: float) -> None:
    """Add the cameras to the running daemon over gRPC one by one, each a random part of
    a frame interval after the one before, so their frames do not all come at the same
    instant, as with cameras whose clocks are independent."""
    rng = random.Random(len(cameras))
    for cam in cameras:
        options = {k: v for k, v in cam.items() if k not in ("id", "source")}
        client.register_stream(target, 60, cam["id"], cam["source"], 0.0, 0, options)
        time.sleep(rng.uniform(0.0, 1.0 / fps))


def run_rtsp(n: int, args: argparse.Namespace, d: Path) -> dict[str, Any]:
    """N RTSP cameras from bench/loadgen.py (its server and reader share the machine)."""
    port = _free_port()
    proc = start_daemon(d, _base_config(args, d, port))
    target = f"127.0.0.1:{port}"
    try:
        wait_ready(target, proc)
        out = subprocess.run(
            [
                sys.executable,
                str(REPO / "bench" / "loadgen.py"),
                "--cameras",
                str(n),
                "--fps",
                f"{args.fps:g}",
                "--source-fps",
                f"{args.fps:g}",
                "--duration",
                f"{args.duration:g}",
                "--warmup",
                f"{args.warmup:g}",
                "--clip",
                str(args.clip),
                "--target-server",
                target,
                "--events",
                str(d / "events.jsonl"),
                "--json",
                str(d / "report.json"),
            ],
            capture_output=True,
            text=True,
            timeout=args.duration + 300,
        )
        if out.returncode != 0:
            raise SystemExit(f"loadgen failed ({out.returncode}):\n{out.stderr[-3000:]}")
        report: dict[str, Any] = json.loads((d / "report.json").read_text())
    finally:
        stop_daemon(proc)
    return report


def _base_config(args: argparse.Namespace, d: Path, port: int) -> dict[str, Any]:
    return {
        "model": {"path": str(args.model)},
        "outputs": {"jsonl_path": str(d / "events.jsonl")},
        "server": {"grpc_port": port, "monitoring_port": 0},
        "pid_file": str(d / "itsd.pid"),
        "state_dir": str(d / "state"),
        "logging": {"level": "WARNING"},
    }


def run_count(n: int, args: argparse.Namespace, model_ms: float, clip: Path) -> dict[str, Any]:
    """One daemon with N cameras for the duration; its report plus the verdict."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        report = run_rtsp(n, args, d) if args.source == "rtsp" else run_files(n, args, clip, d)
    offered = n * args.fps
    share = report["events_per_s"] / offered
    p99 = report["latency_ms"]["p99"]
    budget = 100.0 + model_ms
    report["share_of_offered"] = round(share, 3)
    report["p99_budget_ms"] = round(budget, 1)
    report["p99_within_budget"] = bool(p99 <= budget)
    report["kept_up"] = bool(share >= args.keep_up)
    return report


def write_report(args: argparse.Namespace, **fields: Any) -> None:
    """The JSON report to ``--json`` (when given): the run's settings, then `fields`."""
    if not args.json:
        return
    report = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": {"cores": len(os.sched_getaffinity(0)), "load_at_end": os.getloadavg()},
        "model": args.model.name,
        "clip": args.clip.name,
        "source": getattr(args, "source", "file"),
        "start": args.start,
        "fps": args.fps,
        **fields,
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")


def paired(args: argparse.Namespace, clip: Path) -> int:
    """(b)/(a) at the model's count of cameras, round by round: the machine's speed
    moves the count the model allows from one minute to the next, so each round measures
    (a), runs itsd at the count that (a) allows, and measures (a) again."""
    cores = len(os.sched_getaffinity(0))
    rounds: list[dict[str, Any]] = []
    for r in range(args.paired):
        before = raw_all_cores(args.model, args.clip)
        n = max(1, int(before // args.fps))
        rep = run_count(n, args, 1000.0 * cores / before, clip)
        after = raw_all_cores(args.model, args.clip)
        limit = (before + after) / 2
        row = {
            "limit_fps": [round(before, 1), round(after, 1)],
            "cameras": n,
            **rep,
            "b_over_a": round(rep["events_per_s"] / limit, 3),
        }
        rounds.append(row)
        print(
            f"round {r + 1}: (a) {before:.1f} -> {n} cameras at {args.fps:g} fps: "
            f"{rep['events_per_s']:.1f} events/s ({rep['share_of_offered']:.0%} of offered), "
            f"p99 {rep['latency_ms']['p99']:.0f} ms; (a) after {after:.1f}; "
            f"(b)/(a) {row['b_over_a']:.2f}",
            flush=True,
        )
    ratio = statistics.median(x["b_over_a"] for x in rounds)
    counts = sorted(x["cameras"] for x in rounds)
    track: dict[str, Any] | None = None
    line = f"(b)/(a) at the model's count, median of {len(rounds)} rounds: {ratio:.2f}"
    if args.ultralytics_python.exists():
        n = int(statistics.median_low(counts))
        track = ultralytics_track(args.ultralytics_python, args.model, clip, n)
        b = statistics.median(x["events_per_s"] for x in rounds if x["cameras"] == n)
        line += f"; (c) Ultralytics track, {n} cameras: {track['fps']:.1f} frames/s, "
        line += f"(b)/(c) {b / track['fps']:.2f}"
    print(line)
    write_report(args, paired_rounds=rounds, b_over_a_median=ratio, ultralytics_track=track)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument(
        "--cameras",
        default="",
        help="counts to try, e.g. 8,10,11,12 (default: "
        "the count the model allows and the two below and one above it)",
    )
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--keep-up", type=float, default=0.95, help="share of offered frames")
    ap.add_argument(
        "--source",
        choices=("file", "rtsp"),
        default="file",
        help="file: looping file cameras paced at --fps (nothing else on the machine); "
        "rtsp: bench/loadgen.py's RTSP cameras (its server and reader take CPU too)",
    )
    ap.add_argument(
        "--start",
        choices=("together", "spread"),
        default="together",
        help="file cameras: together (in the configuration: their frames come in step, "
        "every camera's at the same instant) or spread (added over gRPC one by one, a "
        "random part of a frame interval apart, as cameras with their own clocks)",
    )
    ap.add_argument(
        "--ultralytics-python",
        type=Path,
        default=ULTRALYTICS_VENV / "bin" / "python",
        help="(c): Ultralytics track, one thread per camera, at the model's count of "
        "cameras on the same clip (left out without bench/setup_ultralytics.sh's venv)",
    )
    ap.add_argument(
        "--paired",
        type=int,
        default=0,
        metavar="R",
        help="instead of the sweep, R paired rounds: (a), then itsd at the count of "
        "cameras that (a) allows, then (a) again; (b)/(a) per round against the mean of "
        "the two (a)s around it",
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    clip = scaled_clip(args.clip, None, args.fps)
    if args.paired:
        return paired(args, clip)

    limit = [raw_all_cores(args.model, args.clip)]
    with_decode = [raw_all_cores(args.model, clip, decode=True)]
    cores = len(os.sched_getaffinity(0))
    model_ms = 1000.0 * cores / limit[0]  # one frame's model time on one core
    allows = int(limit[0] // args.fps)
    counts = (
        [int(x) for x in args.cameras.split(",") if x.strip()]
        if args.cameras
        else [c for c in (allows - 2, allows - 1, allows, allows + 1) if c > 0]
    )
    print(
        f"(a) model limit {limit[0]:.1f} frames/s on {cores} cores: {allows} cameras at "
        f"{args.fps:g} fps; (a+d) with decoding {with_decode[0]:.1f} frames/s; trying {counts}",
        flush=True,
    )
    results: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    for r in range(args.rounds):
        order = counts[r % len(counts) :] + counts[: r % len(counts)]
        for n in order:
            rep = run_count(n, args, model_ms, clip)
            results[n].append(rep)
            print(
                f"round {r + 1}, {n:>3} cameras: {rep['events_per_s']:6.1f} events/s of "
                f"{n * args.fps:g} ({rep['share_of_offered']:.0%}), p50 "
                f"{rep['latency_ms']['p50']:.0f} ms, p99 {rep['latency_ms']['p99']:.0f} ms, "
                f"{rep['daemon_cpu_cores']:.2f} cores: "
                f"{'kept up' if rep['kept_up'] else 'fell behind'}",
                flush=True,
            )
    limit.append(raw_all_cores(args.model, args.clip))
    with_decode.append(raw_all_cores(args.model, clip, decode=True))
    limit_fps = statistics.median(limit)
    allows = int(limit_fps // args.fps)
    decode_fps = statistics.median(with_decode)
    decode_allows = int(decode_fps // args.fps)
    track: dict[str, Any] | None = None
    if args.ultralytics_python.exists():
        # Every frame of the clip, as fast as it goes: at this count it cannot keep up
        # with 5 fps, so its frames/s is what it analyses.
        track = ultralytics_track(args.ultralytics_python, args.model, clip, allows)
        print(f"(c) Ultralytics track, {allows} cameras: {track['fps']:.1f} frames/s", flush=True)
    rows = []
    for n in counts:
        reps = results[n]
        rows.append(
            {
                "cameras": n,
                "events_per_s": statistics.median(x["events_per_s"] for x in reps),
                "share_of_offered": statistics.median(x["share_of_offered"] for x in reps),
                "p50_ms": statistics.median(x["latency_ms"]["p50"] for x in reps),
                "p99_ms": statistics.median(x["latency_ms"]["p99"] for x in reps),
                "daemon_cpu_cores": statistics.median(x["daemon_cpu_cores"] for x in reps),
                "kept_up": sum(x["kept_up"] for x in reps) * 2 > len(reps),
            }
        )
    best = max((row["cameras"] for row in rows if row["kept_up"]), default=0)
    print()
    print(f"{'cameras':>8}{'events/s':>10}{'of offered':>12}{'p50 ms':>8}{'p99 ms':>8}{'cores':>7}")
    for row in rows:
        print(
            f"{row['cameras']:>8}{row['events_per_s']:>10.1f}{row['share_of_offered']:>12.0%}"
            f"{row['p50_ms']:>8.0f}{row['p99_ms']:>8.0f}{row['daemon_cpu_cores']:>7.2f}"
            f"  {'kept up' if row['kept_up'] else 'fell behind'}"
        )
    print(
        f"(a) model limit {limit_fps:.1f} frames/s (runs {[round(x, 1) for x in limit]}): "
        f"{allows} cameras at {args.fps:g} fps; itsd kept up with {best} "
        f"({best / allows if allows else 0:.2f} of the model's count; "
        f"{best * args.fps / limit_fps:.2f} of its frames/s)"
    )
    print(
        f"(a+d) decode and model {decode_fps:.1f} frames/s (runs "
        f"{[round(x, 1) for x in with_decode]}): {decode_allows} cameras at {args.fps:g} fps; "
        f"itsd kept up with {best / decode_allows if decode_allows else 0:.2f} of that count"
    )
    at = next((row for row in rows if row["cameras"] == allows), None)
    if at is not None:
        line = (
            f"at the model's count ({allows} cameras, {allows * args.fps:g} frames/s offered):"
            f" (b) itsd {at['events_per_s']:.1f} frames/s, (b)/(a) "
            f"{at['events_per_s'] / limit_fps:.2f}"
        )
        if track is not None:
            line += f", (b)/(c) {at['events_per_s'] / track['fps']:.2f}"
        print(line)
    write_report(
        args,
        limit_fps=limit,
        model_allows=allows,
        limit_with_decode_fps=with_decode,
        decode_and_model_allow=decode_allows,
        kept_up_with=best,
        ultralytics_track=track,
        rows=rows,
        runs={str(k): v for k, v in results.items()},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
