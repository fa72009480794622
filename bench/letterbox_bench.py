"""Letterbox benchmark: the GPU kernel of the TensorRT / ONNX Runtime CUDA backends beside
the upload it cannot beat, and the CPU letterbox.

    python bench/letterbox_bench.py [--clip C] [--imgsz 640] [--batches 1,16,64]
        [--seconds 1] [--rounds 3] [--json F] [--dry]

For frames of the clip at 640x360 and scaled to 1920x1080, at each batch size, in
rotation over ``--rounds`` (medians reported):

* ``cpu``: `preprocess.letterbox_batch` (OpenCV) into a float32 batch, one core;
* ``gpu``: `gpu_letterbox.DeviceInput.letterbox`: pack the uint8 frames into the pinned
  staging buffer, one asynchronous upload, one kernel launch for the batch, wait;
* ``upload``: the limit: the same packed bytes copied from pinned memory to the device
  and waited for (no packing, no kernel).

Prints frames/s of each and gpu/upload (how close the letterbox gets to the bare copy);
``--json`` writes every number. Without cuda-python or a GPU it says so and exits 2,
unless ``--dry``: then only the CPU column runs (bench/gpu_check.sh's check of itself).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from itsd.engines.gpu_letterbox import cuda_unavailable, describe_batch  # noqa: E402
from itsd.engines.preprocess import letterbox_batch  # noqa: E402

DEFAULT_CLIP = REPO.parent / "shared" / "media" / "street_overhead_dusk.mp4"


def _frames(clip: Path, n: int) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    with av.open(str(clip)) as container:
        for frame in container.decode(video=0):
            out.append(np.asarray(frame.to_ndarray(format="rgb24")))
            if len(out) == n:
                break
    return out


def _rate(seconds: float, batch: int, fn: Callable[[], None]) -> float:
    fn()  # warm-up (first-use allocations)
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += batch
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--dry", action="store_true", help="without a GPU: the CPU column only")
    args = ap.parse_args()
    why = cuda_unavailable()
    if why is not None and not args.dry:
        print(f"letterbox_bench: {why}; nothing to measure (--dry runs the CPU column)")
        return 2
    batches = [int(b) for b in args.batches.split(",")]
    base = _frames(args.clip, max(batches))
    sizes = {
        "640x360": [cv2.resize(f, (640, 360)) for f in base],
        "1920x1080": [cv2.resize(f, (1920, 1080)) for f in base],
    }
    size = (args.imgsz, args.imgsz)
    dev: Any = None
    if why is None:
        from itsd.engines.gpu_letterbox import DeviceInput, GpuLetterbox

        dev = DeviceInput(GpuLetterbox(args.gpu, size), max(batches), 4)
        cudart = dev.letterbox_kernel.cudart
    results: list[dict[str, Any]] = []
    try:
        for name, frames in sizes.items():
            for b in batches:
                chunk = frames[:b]
                host = np.zeros((b, 3, *size), np.float32)

                def cpu(chunk: list[np.ndarray] = chunk, host: np.ndarray = host) -> None:
                    letterbox_batch(chunk, host)

                runs: dict[str, Callable[[], None]] = {"cpu": cpu}
                if dev is not None:
                    _, _, total = describe_batch(chunk, *size)
                    dev.letterbox(chunk)  # sizes the staging and device buffers

                    def upload(total: int = total) -> None:
                        kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
                        lb = dev.letterbox_kernel
                        cudart.cudaMemcpyAsync(
                            lb._frames_dev, lb._stage_ptr, total, kind, dev.stream
                        )
                        cudart.cudaStreamSynchronize(dev.stream)

                    def gpu(chunk: list[np.ndarray] = chunk) -> None:
                        dev.letterbox(chunk)

                    runs["gpu"] = gpu
                    runs["upload"] = upload
                rates: dict[str, list[float]] = {k: [] for k in runs}
                for _ in range(args.rounds):
                    for k, fn in runs.items():
                        rates[k].append(_rate(args.seconds, b, fn))
                row: dict[str, Any] = {"frames": name, "batch": b}
                row.update({k: round(statistics.median(v), 1) for k, v in rates.items()})
                if "gpu" in row:
                    row["gpu_over_upload"] = round(row["gpu"] / row["upload"], 3)
                results.append(row)
                print(
                    f"{name:>9} batch {b:3d}: cpu {row['cpu']:8.1f}"
                    + (
                        f"  gpu {row['gpu']:9.1f}  upload {row['upload']:9.1f}  "
                        f"gpu/upload {row['gpu_over_upload']:.2f}"
                        if "gpu" in row
                        else f"  gpu -  ({why})"
                    )
                    + " frames/s",
                    flush=True,
                )
    finally:
        if dev is not None:
            dev.close()
    if args.json:
        report = {"imgsz": args.imgsz, "gpu": why is None, "why_not": why, "results": results}
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
