"""Benchmark: the PyTorch backend's post-processing, full output to the host vs reduced
on the device.

    python bench/torch_post_bench.py [--batches 1,8] [--imgsz 320,640] [--gpu 0]
        [--precision fp16] [--confidence 0.25] [--rounds 5] [--reps 30] [--json F]

The head output of YOLO11n (Ultralytics' yaml, random weights with batch-norm statistics
from the clip, as in infer_backend_bench.py) on real clip frames is made once per batch
size and input size and left where the engine made it. Then, in rotation over
``--rounds`` rounds (medians printed), the time per image of:

* ``before``: the whole (B, 4 + classes, anchors) output to the host as fp32, then
  ``decode_yolo`` per image with the NMS loop (``NMS_MATRIX_LIMIT`` 0): the frame path
  before the device reduction and the IoU-matrix NMS;
* ``old``: the same with today's NMS (the CPU default, and what ONNX Runtime runs);
* ``new``: ``reduce_head`` where the output lies (best class, top-k candidates, boxes),
  the (B, k, 6) rows to the host, then ``decode_candidates`` per image.

Both give the same detections (checked once per case). Single-threaded torch on the
CPU (one thread per worker process, as the daemon runs it). The machine this project is
built on has 2 shared cores: compare rounds, not single runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from infer_backend_bench import CLIP, clip_frames, random_yolo11n  # noqa: E402

from itsd.engines import postprocess  # noqa: E402
from itsd.engines.base import EngineOptions  # noqa: E402
from itsd.engines.postprocess import decode_candidates, decode_yolo  # noqa: E402


def per_image_us(fn: Any, images: int, reps: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps / images * 1e6


def make_case(engine: Any, frames: list[np.ndarray], opts: EngineOptions) -> dict[str, Any]:
    """The head output of `frames` left where the engine made it, and the two
    post-processing paths over it (each returns the detections per image)."""
    from itsd.engines.torch_backend import reduce_head

    torch = engine._torch
    with torch.inference_mode():
        x, boxes = engine._letterbox(frames)
        out = engine._head(x, len(frames)).clone()
    sync = engine._stream.synchronize if engine.gpu else (lambda: None)

    def before() -> list[Any]:
        limit = postprocess.NMS_MATRIX_LIMIT
        postprocess.NMS_MATRIX_LIMIT = 0
        try:
            return old()
        finally:
            postprocess.NMS_MATRIX_LIMIT = limit

    def old() -> list[Any]:
        raw = out.float().cpu().numpy()
        return [decode_yolo(raw[i], lb, lb.src_h, lb.src_w, opts) for i, lb in enumerate(boxes)]

    def new() -> list[Any]:
        with torch.inference_mode():
            cand = reduce_head(out, opts.confidence, opts.classes).cpu().numpy()
        sync()
        return [
            decode_candidates(cand[i], lb, lb.src_h, lb.src_w, opts) for i, lb in enumerate(boxes)
        ]

    a, n = old(), new()
    same = all(
        len(p) == len(q)
        and np.allclose(p.boxes, q.boxes, atol=1e-3)
        and (p.class_ids == q.class_ids).all()
        for p, q in zip(a, n, strict=True)
    )
    boxes_out = sum(len(d) for d in a)
    return {"before": before, "old": old, "new": new, "b": len(frames), "same": same,
            "boxes": boxes_out, "before_us": [], "old_us": [], "new_us": []}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    ap.add_argument("--batches", type=ints, default=[1, 8])
    ap.add_argument("--imgsz", type=ints, default=[320, 640])
    ap.add_argument("--gpu", type=int)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    ap.add_argument("--confidence", type=float, default=0.25)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from itsd.engines.torch_backend import TorchEngine

    frames = clip_frames(max(args.batches), CLIP)
    opts = EngineOptions(confidence=args.confidence, gpu=args.gpu, precision=args.precision)
    report: dict[str, Any] = {"bench": "torch_post", "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        cases: dict[str, Any] = {}
        for imgsz in args.imgsz:
            folder = Path(tmp) / str(imgsz)
            folder.mkdir()
            model = random_yolo11n(imgsz, frames, folder)
            engine = TorchEngine(model, opts, imgsz=imgsz, max_batch=max(args.batches))
            for b in args.batches:
                cases[f"{imgsz}/{b}"] = make_case(engine, frames[:b], opts)
            engine.close()
        for r in range(args.rounds):
            for c in cases.values():
                names = ["before", "old", "new"]
                order = names[r % 3 :] + names[: r % 3]
                for name in order:
                    c[f"{name}_us"].append(per_image_us(c[name], c["b"], args.reps))
            print(f"round {r + 1} done", flush=True)
    head = f"{'imgsz/batch':>11} {'boxes':>6} {'before us':>10} {'old us':>8} {'new us':>8}"
    print(f"\n{head} {'new/old':>8} {'new/before':>10} same   (per image)")
    for key, c in cases.items():
        z, o, n = (statistics.median(c[f"{k}_us"]) for k in ("before", "old", "new"))
        print(
            f"{key:>11} {c['boxes']:>6} {z:>10.1f} {o:>8.1f} {n:>8.1f} {n / o:>8.2f} "
            f"{n / z:>10.2f} {c['same']}"
        )
        keys = ("b", "same", "boxes", "before_us", "old_us", "new_us")
        report["cases"][key] = {k: c[k] for k in keys}
        report["cases"][key].update(before_median_us=z, old_median_us=o, new_median_us=n)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
