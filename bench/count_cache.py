"""Detections cache for the counting benchmarks: every frame of a clip, detected once.

Runs the real detector (ONNX Runtime through ``itsd.engines``) over every frame of a clip
and stores the raw detections at a low candidate threshold in an ``.npz`` file under a
cache folder outside the repository (default ``/tmp/itsd-count-cache``), keyed by the
clip's and the model's names and sizes and the threshold, so that ``count_tune.py`` can
replay tracker and counting lines for many settings without running the model again.

Usage: .venv/bin/python bench/count_cache.py CLIP [CLIP ...] [--model PATH] [--conf 0.05]

This script must never be imported by the package or the tests.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO.parent / "shared" / "models" / "yolo11n_int8_320.onnx"
DEFAULT_CACHE = Path("/tmp/itsd-count-cache")
DEFAULT_CONF = 0.05


@dataclass(frozen=True)
class ClipDetections:
    """Every frame's detections of one clip, flattened: frame ``i`` owns rows
    ``offsets[i]:offsets[i + 1]``."""

    fps: float
    width: int
    height: int
    offsets: np.ndarray  # (F + 1,) int64
    boxes: np.ndarray  # (N, 4) float32, frame pixels
    scores: np.ndarray  # (N,) float32
    class_ids: np.ndarray  # (N,) int32
    class_names: tuple[str, ...]

    @property
    def n_frames(self) -> int:
        return int(self.offsets.size - 1)

    def frame(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.boxes[a:b], self.scores[a:b], self.class_ids[a:b]


def _key(clip: Path, model: Path, conf: float) -> str:
    parts = f"{clip.name}:{clip.stat().st_size}:{model.name}:{model.stat().st_size}:{conf:.4f}"
    return hashlib.sha256(parts.encode()).hexdigest()[:16]


def cache_path(clip: Path, model: Path, conf: float, cache_dir: Path = DEFAULT_CACHE) -> Path:
    return cache_dir / f"{clip.stem}-{_key(clip, model, conf)}.npz"


def detect_clip(clip: Path, model: Path, conf: float) -> ClipDetections:
    """Run the detector over every frame of ``clip``."""
    from itsd.engines import EngineOptions, create_engine

    engine = create_engine(model, "onnxruntime", EngineOptions(confidence=conf))
    offsets = [0]
    boxes: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    classes: list[np.ndarray] = []
    width = height = 0
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 25.0
        for frame in container.decode(stream):
            img = frame.to_ndarray(format="rgb24")
            height, width = img.shape[:2]
            det = engine.infer([img])[0]
            boxes.append(det.boxes.astype(np.float32))
            scores.append(det.scores.astype(np.float32))
            classes.append(det.class_ids.astype(np.int32))
            offsets.append(offsets[-1] + len(det))
    names = tuple(engine.class_names)
    engine.close()
    return ClipDetections(
        fps=fps,
        width=width,
        height=height,
        offsets=np.asarray(offsets, dtype=np.int64),
        boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32),
        scores=np.concatenate(scores) if scores else np.zeros(0, np.float32),
        class_ids=np.concatenate(classes) if classes else np.zeros(0, np.int32),
        class_names=names,
    )


def load_or_detect(
    clip: Path,
    model: Path = DEFAULT_MODEL,
    conf: float = DEFAULT_CONF,
    cache_dir: Path = DEFAULT_CACHE,
) -> ClipDetections:
    """The cached detections of ``clip``, running the detector first when not cached."""
    path = cache_path(clip, model, conf, cache_dir)
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        return ClipDetections(
            fps=float(z["fps"]),
            width=int(z["width"]),
            height=int(z["height"]),
            offsets=z["offsets"],
            boxes=z["boxes"],
            scores=z["scores"],
            class_ids=z["class_ids"],
            class_names=tuple(str(n) for n in z["class_names"]),
        )
    t0 = time.perf_counter()
    det = detect_clip(clip, model, conf)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp,
        fps=det.fps,
        width=det.width,
        height=det.height,
        offsets=det.offsets,
        boxes=det.boxes,
        scores=det.scores,
        class_ids=det.class_ids,
        class_names=np.asarray(det.class_names),
    )
    tmp.replace(path)
    print(
        f"{clip.name}: {det.n_frames} frames detected in {time.perf_counter() - t0:.1f} s "
        f"-> {path}",
        file=sys.stderr,
    )
    return det


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="+", type=Path)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--conf", type=float, default=DEFAULT_CONF)
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = ap.parse_args()
    for clip in args.clips:
        det = load_or_detect(clip, args.model, args.conf, args.cache_dir)
        print(
            f"{clip.name}: {det.n_frames} frames, {det.width}x{det.height} @ {det.fps:.3f} "
            f"fps, {det.scores.size} detections >= {args.conf}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
