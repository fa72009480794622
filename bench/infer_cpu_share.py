"""Where the CPU goes in a whole-pipeline run: CPU seconds per stage process.

    python bench/infer_cpu_share.py [--model M] [--clip C] [--cameras 4] [--workers 0]
    python bench/infer_cpu_share.py --paced-fps 5 --cameras 11 [--seconds 40] [--warmup 12]

Runs ``itsd start`` on ``--cameras`` lossless copies of the clip (every frame, as fast
as the machine allows, as ``bench/pipeline_bench.py`` does), maps each stage's pid from
the daemon's log ("started infer:0 (pid N)") and samples ``/proc/<pid>/stat`` until the
run ends. It prints each stage kind's CPU seconds, its share of all the CPU the daemon
used, and CPU milliseconds per frame, beside a raw ONNX Runtime loop's CPU milliseconds
per frame on the same letterboxed frames. The inference workers' CPU per frame over the
raw loop's is the overhead of the worker's frame path; the other stages' share is the
CPU a 2-core machine cannot give to inference.

With ``--paced-fps F`` the cameras are live-like instead: looping copies of the clip
re-timed to F frames a second (ffmpeg, as ``bench/max_cameras.py`` does), paced
(``realtime: true``), so frames the pipeline cannot take are dropped. After ``--warmup``
seconds it samples each process (all its threads) for ``--seconds`` and prints per stage
kind the cores used, CPU ms per analysed frame and the voluntary and involuntary context
switches per second (an inference worker with no voluntary switch never waited for a
frame: the machine was its limit), then stops the daemon.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import scaled_clip, stat_cpu_s
from pipeline_bench import session_and_tensors
from soak import start_daemon, stop_daemon

REPO = Path(__file__).resolve().parent.parent
CLIP = REPO.parent / "shared" / "media" / "bikes.mp4"
MODEL = REPO.parent / "shared" / "models" / "yolo11n_int8_320.onnx"


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process, seconds (None once it is gone)."""
    try:
        return stat_cpu_s(Path(f"/proc/{pid}/stat"))
    except OSError:
        return None


def raw_cpu_ms(model: Path, clip: Path, frames: int = 60) -> float:
    """CPU ms per frame of a bare single-threaded session.run loop."""
    sess, name, tensors = session_and_tensors(model, clip, frames)
    sess.run(None, {name: tensors[0]})
    c0 = time.process_time()
    for t in tensors:
        sess.run(None, {name: t})
    return (time.process_time() - c0) / len(tensors) * 1e3


def _start(
    d: Path, model: Path, cameras: list[dict[str, Any]], performance: dict[str, Any], **extra: Any
) -> subprocess.Popen[bytes]:
    """``itsd start`` on these cameras in folder `d` (events to d/events.jsonl, its log
    to d/itsd.log)."""
    cfg = {
        "model": {"path": str(model)},
        "performance": performance,
        "outputs": {"jsonl_path": str(d / "events.jsonl")},
        "server": {"grpc_port": 0, "monitoring_port": 0},
        "pid_file": str(d / "itsd.pid"),
        "state_dir": str(d / "state"),
        "cameras": cameras,
        **extra,
    }
    return start_daemon(d, cfg)


def _stage_pids(log_text: str) -> dict[int, str]:
    """Stage name by pid, from the daemon's "started infer:0 (pid N)" lines."""
    return {int(m[2]): m[1] for m in re.finditer(r"started (\S+) \(pid (\d+)\)", log_text)}


def run(model: Path, clip: Path, cameras: int, workers: int) -> tuple[dict[str, float], int]:
    """CPU seconds per stage name, and the detection events written."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        log_path = d / "itsd.log"
        proc = _start(
            d,
            model,
            [{"id": f"bench{i}", "source": str(clip), "realtime": False} for i in range(cameras)],
            {"target_fps": 240, "inference_workers": workers},
            supervisor={"exit_when_sources_end": True},
        )
        last: dict[int, float] = {}
        names: dict[int, str] = {}
        while proc.poll() is None:
            names.update(_stage_pids(log_path.read_text()))
            for pid in [proc.pid, *names]:
                value = cpu_seconds(pid)
                if value is not None:
                    last[pid] = value
            time.sleep(0.1)
        names[proc.pid] = "supervisor"
        if proc.returncode != 0:
            raise SystemExit(f"itsd failed ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
        events = [json.loads(x) for x in (d / "events.jsonl").read_text().splitlines()]
    per_stage: dict[str, float] = {}
    for pid, cpu in last.items():
        name = names.get(pid, str(pid))
        per_stage[name] = per_stage.get(name, 0.0) + cpu
    return per_stage, sum(1 for e in events if e["event_type"] == "detection")


def _task_stats(pid: int) -> tuple[float, int, int]:
    """CPU seconds and voluntary / involuntary context switches of all a process's
    threads (zeros once it is gone)."""
    cpu, vol, inv = 0.0, 0, 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            cpu += stat_cpu_s(task / "stat")
            status = dict(line.split(":", 1) for line in (task / "status").read_text().splitlines())
            vol += int(status["voluntary_ctxt_switches"])
            inv += int(status["nonvoluntary_ctxt_switches"])
    except (OSError, KeyError, ValueError):
        pass
    return cpu, vol, inv


def run_paced(args: argparse.Namespace) -> int:
    """Paced looping cameras: per stage kind, cores, CPU ms per frame and switches/s."""
    clip = scaled_clip(args.clip, None, args.paced_fps)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        log_path, events = d / "itsd.log", d / "events.jsonl"
        proc = _start(
            d,
            args.model,
            [
                {"id": f"cam{i}", "source": str(clip), "realtime": True, "loop": True}
                for i in range(args.cameras)
            ],
            {"inference_workers": args.workers},
        )
        try:
            time.sleep(args.warmup)
            if proc.poll() is not None:
                raise SystemExit(
                    f"itsd exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}"
                )
            names = {proc.pid: "supervisor", **_stage_pids(log_path.read_text())}
            before = {pid: _task_stats(pid) for pid in names}
            seen0, t0 = events.read_text().count('"detection"'), time.monotonic()
            time.sleep(args.seconds)
            after = {pid: _task_stats(pid) for pid in names}
            dt = time.monotonic() - t0
            frames = events.read_text().count('"detection"') - seen0
        finally:
            stop_daemon(proc)
    offered = args.cameras * args.paced_fps
    print(
        f"{args.cameras} cameras at {args.paced_fps:g} fps: {frames / dt:.1f} frames/s analysed "
        f"of {offered:g} offered, over {dt:.0f} s"
    )
    print(f"{'stage':<12}{'cores':>7}{'CPU ms/frame':>14}{'vol/s':>8}{'invol/s':>9}")
    kinds: dict[str, list[float]] = {}
    for pid, name in names.items():
        row = kinds.setdefault(name.split(":")[0], [0.0, 0.0, 0.0])
        for i in range(3):
            row[i] += after[pid][i] - before[pid][i]
    for kind, (cpu, vol, inv) in sorted(kinds.items(), key=lambda kv: -kv[1][0]):
        per = cpu / max(frames, 1) * 1e3
        print(f"{kind:<12}{cpu / dt:>7.2f}{per:>14.1f}{vol / dt:>8.0f}{inv / dt:>9.0f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--clip", type=Path, default=CLIP)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--paced-fps", type=float, help="live-like looping cameras at this rate")
    ap.add_argument("--seconds", type=float, default=40.0, help="with --paced-fps")
    ap.add_argument("--warmup", type=float, default=12.0, help="with --paced-fps")
    args = ap.parse_args()
    if args.paced_fps:
        return run_paced(args)
    raw_ms = raw_cpu_ms(args.model, args.clip)
    per_stage, frames = run(args.model, args.clip, args.cameras, args.workers)
    kinds: dict[str, float] = {}
    for name, cpu in per_stage.items():
        kind = name.split(":")[0]
        kinds[kind] = kinds.get(kind, 0.0) + cpu
    total = sum(kinds.values())
    print(f"{frames} frames inferred; raw ONNX Runtime loop: {raw_ms:.1f} CPU ms/frame")
    print(f"{'stage':<12}{'CPU s':>8}{'share':>8}{'CPU ms/frame':>14}")
    for kind, cpu in sorted(kinds.items(), key=lambda kv: -kv[1]):
        per = cpu / max(frames, 1) * 1e3
        print(f"{kind:<12}{cpu:>8.1f}{cpu / total:>8.0%}{per:>14.1f}")
    infer_ms = kinds.get("infer", 0.0) / max(frames, 1) * 1e3
    print(f"inference worker CPU per frame / raw loop: {infer_ms / raw_ms:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
