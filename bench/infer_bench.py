"""Inference benchmark: raw ONNX Runtime vs OnnxEngine, and how to spend two CPU cores.

Contenders, each timed for the same number of frames per round, in an order rotated every
round (so drift and noise from a shared core hit all of them alike); the report gives
the median frames/s over rounds:

  raw-1t       session.run on one pre-made input tensor, 1 intra-op thread
  engine-1t    OnnxEngine.infer on real decoded frames (letterbox + run + decode/NMS), 1 thread
  raw-2t       as raw-1t with 2 intra-op threads in one session
  engine-2t    as engine-1t with 2 intra-op threads in one session
  engine-2p1t  two processes, each an OnnxEngine with 1 thread (aggregate frames/s)

engine/raw shows what pre- and postprocessing cost; 2t/1t and 2p1t/1t show whether a
second core is better spent on one session or on a second engine. The preprocess and
postprocess of one frame are also timed on their own.

Usage: .venv/bin/python bench/infer_bench.py [--model PATH] [--clip PATH] [--rounds N]

This script must never be imported by the package or the tests, and never measures
anything but inference (no decode: frames are decoded once, before timing).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import av
import numpy as np
import onnxruntime as ort

from itsd.engines.base import EngineOptions
from itsd.engines.onnx_backend import OnnxEngine, session_options
from itsd.engines.postprocess import decode_yolo
from itsd.engines.preprocess import letterbox_into, letterbox_params

SHARED = Path(__file__).resolve().parents[2] / "shared"


def decode_frames(clip: Path, count: int, start: int = 0) -> list[np.ndarray]:
    """`count` frames of a clip from frame `start` on, as (H, W, 3) uint8 RGB."""
    frames: list[np.ndarray] = []
    with av.open(str(clip)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index < start:
                continue
            frames.append(np.asarray(frame.to_ndarray(format="rgb24")))
            if len(frames) == count:
                break
    if not frames:
        raise SystemExit(f"no frames decoded from {clip}")
    return frames


def engine_loop(engine: OnnxEngine, frames: list[np.ndarray]) -> Callable[[int], float]:
    """A timed run of n frames through engine.infer, one frame per call (static batch 1)."""

    def run(n: int) -> float:
        start = time.perf_counter()
        for i in range(n):
            engine.infer([frames[i % len(frames)]])
        return time.perf_counter() - start

    return run


def raw_loop(session: ort.InferenceSession, tensor: np.ndarray) -> Callable[[int], float]:
    """A timed run of n session.run calls on one pre-made input tensor."""
    name = session.get_inputs()[0].name

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            session.run(None, {name: tensor})
        return time.perf_counter() - start

    return run


def _worker(model: str, clip: str, count: int, start: int, conn: Connection) -> None:
    """A second-process engine: answers each 'n' on the pipe with its time for n frames."""
    engine = OnnxEngine(model, EngineOptions(intra_op_threads=1))
    run = engine_loop(engine, decode_frames(Path(clip), count, start))
    run(3)
    conn.send("ready")
    while (n := conn.recv()) is not None:
        conn.send(run(n))
    engine.close()


class TwoProcesses:
    """Two single-threaded engines in two processes, started together (aggregate fps)."""

    def __init__(self, model: Path, clip: Path, count: int, start: int) -> None:
        ctx = mp.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs = []
        for _ in range(2):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(str(model), str(clip), count, start, child))
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        for conn in self.conns:
            if conn.recv() != "ready":
                raise SystemExit("benchmark worker failed to start")

    def __call__(self, n: int) -> float:
        """Wall time for each process to do n frames; reported as 2n frames."""
        start = time.perf_counter()
        for conn in self.conns:
            conn.send(n)
        for conn in self.conns:
            conn.recv()
        return time.perf_counter() - start

    def close(self) -> None:
        for conn in self.conns:
            conn.send(None)
        for proc in self.procs:
            proc.join(timeout=10)


def time_per_call(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of one call of fn."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=SHARED / "models/yolo11n_int8_320.onnx")
    parser.add_argument("--clip", type=Path, default=SHARED / "media/street_overhead_dusk.mp4")
    parser.add_argument("--frames", type=int, default=64, help="distinct frames to cycle")
    parser.add_argument("--start", type=int, default=180, help="first frame (busy traffic)")
    parser.add_argument("--iters", type=int, default=100, help="frames per contender per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    frames = decode_frames(args.clip, args.frames, args.start)
    engines = {t: OnnxEngine(args.model, EngineOptions(intra_op_threads=t)) for t in (1, 2)}
    h, w = engines[1].input_size
    tensor = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    sessions = {
        t: ort.InferenceSession(
            str(args.model), session_options(t), providers=["CPUExecutionProvider"]
        )
        for t in (1, 2)
    }
    two = TwoProcesses(args.model, args.clip, args.frames, args.start)
    contenders: dict[str, tuple[Callable[[int], float], int]] = {
        "raw-1t": (raw_loop(sessions[1], tensor), 1),
        "engine-1t": (engine_loop(engines[1], frames), 1),
        "raw-2t": (raw_loop(sessions[2], tensor), 1),
        "engine-2t": (engine_loop(engines[2], frames), 1),
        "engine-2p1t": (two, 2),
    }
    try:
        for run, _ in contenders.values():  # warm-up
            run(5)
        fps: dict[str, list[float]] = {name: [] for name in contenders}
        names = list(contenders)
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                run, frames_per_iter = contenders[name]
                fps[name].append(args.iters * frames_per_iter / run(args.iters))
    finally:
        two.close()

    lb = letterbox_params(frames[0].shape[0], frames[0].shape[1], h, w)
    buffer = np.empty((3, h, w), np.float32)
    letterbox_into(frames[0], buffer, lb)
    real_out = sessions[1].run(None, {sessions[1].get_inputs()[0].name: buffer[None]})[0][0]
    opts = EngineOptions()
    pre = time_per_call(lambda: letterbox_into(frames[0], buffer, lb), 300)
    post = time_per_call(lambda: decode_yolo(real_out, lb, lb.src_h, lb.src_w, opts), 300)
    boxes = len(decode_yolo(real_out, lb, lb.src_h, lb.src_w, opts))

    med = {name: statistics.median(values) for name, values in fps.items()}
    print(
        f"model {args.model.name}  clip {args.clip.name} {frames[0].shape[1]}x{frames[0].shape[0]}"
    )
    print(f"onnxruntime {ort.__version__}  cpus {os.cpu_count()}  python {sys.version.split()[0]}")
    print(f"{args.rounds} rounds x {args.iters} frames per contender, rotated; median frames/s")
    print(f"{'contender':<13}{'median':>9}{'min':>9}{'max':>9}")
    for name, values in fps.items():
        print(f"{name:<13}{med[name]:>9.1f}{min(values):>9.1f}{max(values):>9.1f}")
    print(f"engine/raw 1 thread     {med['engine-1t'] / med['raw-1t']:.3f}")
    print(f"engine/raw 2 threads    {med['engine-2t'] / med['raw-2t']:.3f}")
    print(f"2 threads / 1 thread    {med['engine-2t'] / med['engine-1t']:.3f} (one session)")
    print(f"2 procs x 1t / 1 thread {med['engine-2p1t'] / med['engine-1t']:.3f} (aggregate)")
    print(f"preprocess (letterbox) {pre * 1e3:.3f} ms/frame")
    print(f"postprocess (decode+NMS, {boxes} boxes) {post * 1e3:.3f} ms/frame")


if __name__ == "__main__":
    main()
