"""Benchmark: one inference backend, raw forward pass vs the worker's whole frame path.

    python bench/infer_backend_bench.py [--backend onnxruntime|torch] [--model M]
        [--batches 1,8,32,64] [--gpu 0] [--precision fp16] [--no-graphs] [--seconds 3]
        [--clip C] [--json F]

For each batch size, in rotation over ``--rounds`` rounds (medians printed):

* ``raw``: the backend's forward pass alone on pre-letterboxed tensors (ONNX Runtime
  ``session.run``; PyTorch the model's forward, with CUDA graphs unless --no-graphs; on
  a GPU the input is already on the device in the model's precision and the output stays
  there: the most the GPU gives the model);
* ``worker``: ``Engine.infer`` on real clip frames, as the inference worker calls it:
  letterbox, the same forward, decode and class-aware NMS;
* the ratio worker / raw (the goal on a GPU: at least 0.8), and the batch latency
  p50/p99 of the worker path at half load (batches submitted at half the worker's
  measured rate, latency = submit to detections).

Without --model, onnxruntime runs the shared yolo11n_int8_320.onnx and torch builds
YOLO11n from Ultralytics' yaml with random weights whose batch-norm statistics come
from the clip (so the network gives a realistic number of boxes to NMS; speed does not
depend on the weights). The machine this project is built on has 2 shared cores: its
numbers are noisy; compare rounds, not single runs. ``--json`` writes every number
(the GPU check, bench/gpu_check.sh, reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from itsd.engines.base import EngineOptions  # noqa: E402
from itsd.engines.preprocess import letterbox_batch  # noqa: E402

MEDIA = Path(os.environ.get("ITSD_TEST_MEDIA", REPO.parent / "shared" / "media"))
CLIP = MEDIA / "street_overhead_dusk.mp4"
ONNX_MODEL = REPO.parent / "shared" / "models" / "yolo11n_int8_320.onnx"


def clip_frames(n: int, clip: Path = CLIP) -> list[np.ndarray]:
    """The first ``n`` frames of the clip as RGB arrays (looped when it is shorter)."""
    out: list[np.ndarray] = []
    with av.open(str(clip)) as c:
        for f in c.decode(video=0):
            out.append(np.asarray(f.to_ndarray(format="rgb24")))
            if len(out) >= n:
                break
    while len(out) < n:
        out.append(out[len(out) % max(1, len(out))])
    return out


def random_yolo11n(imgsz: int, frames: list[np.ndarray], folder: Path) -> Path:
    """A YOLO11n checkpoint with random weights, batch norms fitted on `frames`."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    net = DetectionModel("yolo11n.yaml", verbose=False)
    batch = np.empty((min(8, len(frames)), 3, imgsz, imgsz), np.float32)
    letterbox_batch(frames[: len(batch)], batch)
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = None
            mod.reset_running_stats()
    net.train()
    with torch.no_grad():
        net(torch.from_numpy(batch))
    net.eval()
    for seq in net.model[-1].cv3:
        seq[-1].bias.data.fill_(-3.0)
    path = folder / "rand11n.pt"
    torch.save({"model": net, "train_args": {"imgsz": imgsz}}, path)
    return path


def make_engine(args: argparse.Namespace, frames: list[np.ndarray], tmp: Path) -> Any:
    opts = EngineOptions(confidence=0.25, gpu=args.gpu, precision=args.precision)
    if args.backend == "onnxruntime":
        from itsd.engines.onnx_backend import OnnxEngine

        return OnnxEngine(args.model or ONNX_MODEL, opts)
    from itsd.engines.torch_backend import TorchEngine

    model = args.model or random_yolo11n(args.imgsz, frames, tmp)
    return TorchEngine(
        model, opts, imgsz=args.imgsz, max_batch=max(args.batches), cuda_graphs=not args.no_graphs
    )


def rate(fn: Any, images: int, seconds: float) -> float:
    """Images per second of `fn` (one call = `images` images) over about `seconds`."""
    fn()  # warm-up (CUDA graph capture, allocator)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * images / (time.perf_counter() - t0)


def latency_at(engine: Any, batch: list[np.ndarray], per_s: float, seconds: float) -> list[float]:
    """Batch latencies (ms) with batches submitted at `per_s` batches per second."""
    out, period = [], 1.0 / per_s
    t_next = time.perf_counter()
    end = t_next + seconds
    while t_next < end:
        now = time.perf_counter()
        if now < t_next:
            time.sleep(t_next - now)
        start = max(t_next, time.perf_counter())
        engine.infer(batch)
        out.append((time.perf_counter() - start) * 1e3)
        t_next += period
    return out


def device_forward(engine: Any, tensor: np.ndarray) -> Any:
    """The PyTorch engine's forward on a GPU with the input already on the device in the
    model's precision and the output left there: one call runs and waits for it."""
    torch = engine._torch
    x = torch.from_numpy(tensor).to(engine.device)
    x = (x.half() if engine.half else x).contiguous(memory_format=torch.channels_last)
    torch.cuda.synchronize()  # x is made on the default stream; the engine reads it on its own
    n = int(tensor.shape[0])

    def run() -> None:
        with torch.inference_mode(), torch.cuda.stream(engine._stream):
            if engine.cuda_graphs:
                engine._replay(x, n)
            else:
                engine._run_net(x)
        engine._stream.synchronize()

    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backend", choices=["onnxruntime", "torch"], default="onnxruntime")
    ap.add_argument("--model", type=Path)
    ap.add_argument("--clip", type=Path, default=CLIP)
    ap.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--gpu", type=int)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    ap.add_argument("--no-graphs", action="store_true")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write every number here")
    args = ap.parse_args()
    frames = clip_frames(max(args.batches), args.clip)
    report: dict[str, Any] = {
        "bench": "infer_backend",
        "backend": args.backend,
        "precision": args.precision,
        "cuda_graphs": not args.no_graphs,
        "imgsz": args.imgsz,
        "clip": args.clip.name,
        "frame": list(frames[0].shape),
        "host": platform.node(),
        "batches": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(args, frames, Path(tmp))
        h, w = engine.input_size
        on_gpu = bool(getattr(engine, "gpu", False))
        report.update(engine=repr(engine), device="gpu" if on_gpu else "cpu")
        if args.backend == "torch":
            report["precision"] = engine.precision
            report["cuda_graphs"] = engine.cuda_graphs
        print(f"{engine!r}, max batch {engine.max_batch}", flush=True)
        raw: dict[int, list[float]] = {b: [] for b in args.batches}
        worker: dict[int, list[float]] = {b: [] for b in args.batches}
        for r in range(args.rounds):
            for b in args.batches:
                tensor = np.empty((b, 3, h, w), np.float32)
                letterbox_batch(frames[:b], tensor)
                step = engine.static_batch or b

                def forward(t: np.ndarray = tensor, step: int = step) -> None:
                    for i in range(0, len(t), step):
                        engine._forward(t[i : i + step])

                fn = device_forward(engine, tensor) if on_gpu else forward
                raw[b].append(rate(fn, b, args.seconds))
                worker[b].append(rate(lambda b=b: engine.infer(frames[:b]), b, args.seconds))
                print(
                    f"round {r + 1} batch {b}: raw {raw[b][-1]:.1f} img/s, "
                    f"worker {worker[b][-1]:.1f} img/s",
                    flush=True,
                )
        print(f"\n{'batch':>5} {'raw img/s':>10} {'worker img/s':>13} {'ratio':>6} "
              f"{'p50 ms':>7} {'p99 ms':>7}  (latency at half load)")  # fmt: skip
        for b in args.batches:
            r_med, w_med = statistics.median(raw[b]), statistics.median(worker[b])
            lat = latency_at(engine, frames[:b], 0.5 * w_med / b, args.seconds)
            p50, p99 = (float(v) for v in np.percentile(lat, [50, 99]))
            ratio = w_med / r_med
            print(f"{b:>5} {r_med:>10.1f} {w_med:>13.1f} {ratio:>6.2f} {p50:>7.1f} {p99:>7.1f}")
            report["batches"][str(b)] = {
                "raw_img_s": r_med,
                "worker_img_s": w_med,
                "ratio": ratio,
                "p50_ms": p50,
                "p99_ms": p99,
                "raw_rounds": raw[b],
                "worker_rounds": worker[b],
            }
        engine.close()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
