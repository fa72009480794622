"""Benchmark: the whole daemon on clips, beside the raw model loop on the same machine.

    python bench/pipeline_bench.py --model M [--clip C] [--cameras 4] [--rounds R]

Each round runs, in rotation:

* ``raw x1``: one ONNX Runtime session (1 thread) looping over pre-decoded,
  pre-letterboxed frames of the clip: the ceiling of one inference process;
* ``raw all cores``: one such loop per core, in parallel processes: the machine's limit;
* ``pipeline, W workers``: ``itsd start`` with ``--cameras`` copies of the clip as
  lossless file sources (``realtime: false``: every frame, as fast as the machine
  allows), for W = 1 and W = the default (one inference worker per core). Frames per
  second = detection events / wall time from the first decoder's start to the end.

It prints median frames/s, the ratios to the limits, and the capture-to-analytics
latency percentiles of a paced run (one camera at the clip's own rate).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

import av
import numpy as np
import onnxruntime as ort
import yaml

from itsd.engines.preprocess import letterbox_into, letterbox_params

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CLIP = REPO.parent / "shared" / "media" / "street_overhead_dusk.mp4"
DEFAULT_MODEL = REPO.parent / "shared" / "models" / "yolo11n_int8_320.onnx"


def session_and_tensors(
    model: Path, clip: Path, frames: int
) -> tuple[ort.InferenceSession, str, list[Any]]:
    """A single-threaded ONNX Runtime session of `model`, its input's name, and the first
    `frames` frames of `clip` letterboxed to that input (copies, ready to run)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    buf = np.empty((1, 3, int(inp.shape[2]), int(inp.shape[3])), np.float32)
    tensors = [t.copy() for t in islice(_decoded_tensors(str(clip), buf), frames)]
    return sess, inp.name, tensors


def raw_fps(model: Path, clip: Path, frames: int = 120) -> float:
    """Frames/s of a bare session.run loop on letterboxed frames of the clip."""
    sess, name, tensors = session_and_tensors(model, clip, frames)
    sess.run(None, {name: tensors[0]})
    t0 = time.perf_counter()
    for t in tensors:
        sess.run(None, {name: t})
    return len(tensors) / (time.perf_counter() - t0)


def _raw_worker(
    model: str, clip: str, frames: int, seconds: float, decode: bool, start: Any, q: Any
) -> None:
    sess, name, tensors = session_and_tensors(Path(model), Path(clip), 1 if decode else frames)
    sess.run(None, {name: tensors[0]})
    stream = _decoded_tensors(clip, tensors[0]) if decode else None
    if stream is not None:
        next(stream)  # the container open and the first frame, before the clock
    start.wait()  # every core's loop starts together and runs for the same time
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sess.run(None, {name: next(stream) if stream is not None else tensors[n % len(tensors)]})
        n += 1
    q.put(n / (time.perf_counter() - t0))


def _decoded_tensors(clip: str, tensor: np.ndarray) -> Iterator[np.ndarray]:
    """The clip's frames, decoded one by one (PyAV, its default threads), converted to
    RGB and letterboxed into `tensor`, over and over: the least work a frame needs
    before the model."""
    h, w = tensor.shape[2], tensor.shape[3]
    while True:
        with av.open(clip) as c:
            for frame in c.decode(video=0):
                img = frame.to_ndarray(format="rgb24")
                letterbox_into(img, tensor[0], letterbox_params(img.shape[0], img.shape[1], h, w))
                yield tensor


def raw_all_cores(
    model: Path, clip: Path, frames: int = 120, seconds: float = 8.0, decode: bool = False
) -> float:
    """Sum of frames/s of one raw loop per core, all running at the same time.

    Each process letterboxes its `frames` first; then every loop starts together (a
    barrier) and runs for `seconds`, so the cores are busy together the whole time, as
    they are under the pipeline: a loop that ran while another was still preparing would
    have the machine's shared caches and memory bandwidth to itself and count high.

    `decode`: each loop decodes the clip as it goes (PyAV, RGB, letterbox) instead of
    reading prepared frames: the limit of a machine that must also decode its cameras.
    """
    import multiprocessing as mp

    n = len(os.sched_getaffinity(0))
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    start = ctx.Barrier(n)
    procs = [
        ctx.Process(
            target=_raw_worker, args=(str(model), str(clip), frames, seconds, decode, start, q)
        )
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    out = [q.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
    return float(sum(out))


def _log_time(line: str) -> float:
    stamp = line[:23]
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def run_pipeline(
    model: Path, clip: Path, realtime: bool, cameras: int = 1, workers: int = 0
) -> tuple[list[dict[str, Any]], float]:
    """Run the daemon on ``cameras`` copies of the clip until they end.

    Returns the detection events and the wall time from the first source opened (its
    first frame follows; the raw loops are timed from their first frame too) to the end
    of the last source.
    """
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        cfg = {
            "model": {"path": str(model)},
            "performance": {"target_fps": 240, "inference_workers": workers},
            "outputs": {"jsonl_path": str(d / "events.jsonl")},
            "server": {"grpc_port": 0, "monitoring_port": 0},
            "pid_file": str(d / "itsd.pid"),
            "state_dir": str(d / "state"),
            "logging": {"level": "INFO"},
            "supervisor": {"exit_when_sources_end": True},
            "cameras": [
                {
                    "id": f"bench{i}",
                    "source": str(clip),
                    "realtime": realtime,
                    "lines": [{"id": "mid", "start": [0.5, 0.0], "end": [0.5, 1.0]}],
                }
                for i in range(cameras)
            ],
        }
        (d / "c.yaml").write_text(yaml.safe_dump(cfg))
        proc = subprocess.run(
            [sys.executable, "-m", "itsd", "start", "--config", str(d / "c.yaml")],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if proc.returncode != 0:
            raise SystemExit(f"itsd failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        log = proc.stderr.splitlines()
        opened = [_log_time(x) for x in log if "itsd.decode: camera " in x and ": opened " in x]
        t0 = min(opened or [_log_time(x) for x in log if "started decode" in x])
        t1 = max(_log_time(x) for x in log if "every source has ended" in x)
        lines = (d / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    return [e for e in events if e["event_type"] == "detection"], t1 - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    results: dict[str, list[float]] = {
        "raw x1": [],
        "raw all cores": [],
        "pipeline 1 worker": [],
        "pipeline default workers": [],
    }
    for r in range(args.rounds):
        results["raw x1"].append(raw_fps(args.model, args.clip))
        results["raw all cores"].append(raw_all_cores(args.model, args.clip))
        for key, workers in (("pipeline 1 worker", 1), ("pipeline default workers", 0)):
            dets, wall = run_pipeline(args.model, args.clip, False, args.cameras, workers)
            results[key].append(len(dets) / wall)
        print(
            f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in results.items()),
            flush=True,
        )
    med = {k: statistics.median(v) for k, v in results.items()}
    paced, _ = run_pipeline(args.model, args.clip, realtime=True)
    lat = np.array([e["data"]["latency_ms"]["capture_to_analytics"] for e in paced])
    print()
    print(f"{'contender':<34}{'frames/s':>10}")
    for k, v in med.items():
        print(f"{k:<34}{v:>10.1f}")
    limit = med["raw all cores"]
    for k in ("pipeline 1 worker", "pipeline default workers"):
        print(f"{k} / raw all cores{'':<2}{med[k] / limit:>10.2f}")
    p50, p90, p99, mx = np.percentile(lat, [50, 90, 99, 100])
    print(
        f"paced run, {len(lat)} frames: capture->analytics latency ms "
        f"p50 {p50:.1f}  p90 {p90:.1f}  p99 {p99:.1f}  max {mx:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
