"""Benchmark: the whole daemon on a clip, beside the raw model loop on the same machine.

    python bench/pipeline_bench.py --model M [--clip C] [--rounds R]

Each round runs, in rotation:

* ``raw``: one ONNX Runtime session (1 thread) looping over pre-decoded, pre-letterboxed
  frames of the clip: the ceiling for one inference process;
* ``pipeline``: ``itsd start`` on the clip as fast as it decodes (no pacing), through
  decode -> frame ring -> inference -> detection ring -> analytics -> event ring ->
  JSONL, until the clip ends. Frames per second are counted from the events written,
  over the time between the first and the last event.

It prints median frames/s of both, their ratio, and the capture-to-analytics latency
percentiles of the pipeline (a paced run at the clip's own rate, where latency means
something: with unpaced input the newest frame always waits for the previous batch).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
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


def raw_fps(model: Path, clip: Path, frames: int = 120) -> float:
    """Frames/s of a bare session.run loop on letterboxed frames of the clip."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    h, w = int(inp.shape[2]), int(inp.shape[3])
    tensors = []
    with av.open(str(clip)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= frames:
                break
            img = f.to_ndarray(format="rgb24")
            t = np.empty((1, 3, h, w), np.float32)
            letterbox_into(img, t[0], letterbox_params(img.shape[0], img.shape[1], h, w))
            tensors.append(t)
    sess.run(None, {inp.name: tensors[0]})
    t0 = time.perf_counter()
    for t in tensors:
        sess.run(None, {inp.name: t})
    return len(tensors) / (time.perf_counter() - t0)


def run_pipeline(model: Path, clip: Path, realtime: bool) -> list[dict[str, Any]]:
    """Run the daemon on the clip until it ends; return its detection events."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        cfg = {
            "model": {"path": str(model)},
            "performance": {"target_fps": 240},
            "outputs": {"jsonl_path": str(d / "events.jsonl")},
            "server": {"grpc_port": 0, "monitoring_port": 0},
            "pid_file": str(d / "itsd.pid"),
            "logging": {"level": "WARNING"},
            "supervisor": {"exit_when_sources_end": True},
            "cameras": [
                {
                    "id": "bench",
                    "source": str(clip),
                    "realtime": realtime,
                    "lines": [{"id": "mid", "start": [0.5, 0.0], "end": [0.5, 1.0]}],
                }
            ],
        }
        (d / "c.yaml").write_text(yaml.safe_dump(cfg))
        proc = subprocess.run(
            [sys.executable, "-m", "itsd", "start", "--config", str(d / "c.yaml")],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise SystemExit(f"itsd failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        lines = (d / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    return [e for e in events if e["event_type"] == "detection"]


def pipeline_fps(dets: list[dict[str, Any]]) -> float:
    """Frames/s over the span of the events' capture times."""
    from datetime import datetime

    def t(e: dict[str, Any]) -> float:
        return datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()

    span = t(dets[-1]) - t(dets[0])
    return (len(dets) - 1) / span if span > 0 else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    raws: list[float] = []
    pipes: list[float] = []
    for r in range(args.rounds):
        raws.append(raw_fps(args.model, args.clip))
        dets = run_pipeline(args.model, args.clip, realtime=False)
        pipes.append(pipeline_fps(dets))
        print(f"round {r + 1}: raw {raws[-1]:.1f} frames/s, pipeline {pipes[-1]:.1f} frames/s")
    paced = run_pipeline(args.model, args.clip, realtime=True)
    lat = np.array([e["data"]["latency_ms"]["capture_to_analytics"] for e in paced])
    raw_m, pipe_m = statistics.median(raws), statistics.median(pipes)
    print()
    print(f"{'contender':<28}{'frames/s':>10}")
    print(f"{'raw model loop (1 thread)':<28}{raw_m:>10.1f}")
    print(f"{'whole pipeline (unpaced)':<28}{pipe_m:>10.1f}")
    print(f"pipeline / raw model        {pipe_m / raw_m:>10.2f}")
    p50, p90, p99, mx = np.percentile(lat, [50, 90, 99, 100])
    print(
        f"paced run, {len(lat)} frames: capture->analytics latency ms "
        f"p50 {p50:.1f}  p90 {p90:.1f}  p99 {p99:.1f}  max {mx:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
