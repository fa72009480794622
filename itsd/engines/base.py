"""The contract every inference backend fulfils: options in, per-frame detections out.

`Detections` is what a backend returns for one frame, already in that frame's own pixel
coordinates; `Engine` is the protocol the inference stage codes against; `EngineOptions`
holds the knobs every backend shares (thresholds, NMS, threads, precision, class filter).

This module must never import a backend library (onnxruntime, torch, tensorrt), OpenCV,
or anything from itsd other than `itsd.errors`: configuration and the inference stage
import it without paying for a backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from itsd.errors import ConfigError

#: The 80 COCO classes in Ultralytics' index order; the fallback when a model carries
#: no class names in its metadata.
COCO_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)  # fmt: skip

#: Precisions a backend may be asked for. ONNX Runtime runs a model in the precision it
#: was exported in; TensorRT and PyTorch convert at load time.
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")


@dataclass(frozen=True, slots=True)
class Detections:
    """One frame's detections, in the ORIGINAL frame's pixel coordinates.

    boxes: (N, 4) float32 x_min, y_min, x_max, y_max, clipped to the frame.
    scores: (N,) float32 confidences, in descending order when made by `decode_yolo`.
    class_ids: (N,) int32 indices into the engine's `class_names`.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @staticmethod
    def empty() -> Detections:
        """No detections, with the right dtypes and shapes."""
        return Detections(
            boxes=np.zeros((0, 4), dtype=np.float32),
            scores=np.zeros((0,), dtype=np.float32),
            class_ids=np.zeros((0,), dtype=np.int32),
        )


@dataclass(frozen=True)
class EngineOptions:
    """Knobs every backend shares. Invalid values raise ConfigError at construction.

    confidence: keep a box only if its best class score is above this (0..1).
    iou: NMS drops a box whose IoU with a kept box of the same class is above this (0..1].
    max_detections: at most this many boxes per frame, best first.
    precision: "fp32", "fp16" or "int8" (what TensorRT/PyTorch build; ONNX Runtime runs
        the precision the file was exported in).
    intra_op_threads: threads one inference call may use (1 is best on small CPUs: run
        one single-threaded engine per core instead of one engine with many threads).
    classes: keep only these class ids (None keeps all).
    gpu: CUDA device index to run on; None runs on the CPU. A backend that cannot reach
        the GPU here falls back to the CPU with a warning.
    max_batch: the most frames one model run takes with a dynamic-batch model (the
        inference worker's ``performance.max_batch_size``); a static-batch model runs its
        own batch size.
    """

    confidence: float = 0.25
    iou: float = 0.45
    max_detections: int = 300
    precision: str = "fp32"
    intra_op_threads: int = 1
    classes: tuple[int, ...] | None = None
    gpu: int | None = None
    max_batch: int = 32

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ConfigError(f"EngineOptions.confidence must be in [0, 1], got {self.confidence}")
        if not 0.0 < self.iou <= 1.0:
            raise ConfigError(f"EngineOptions.iou must be in (0, 1], got {self.iou}")
        if self.max_detections < 1:
            raise ConfigError(
                f"EngineOptions.max_detections must be at least 1, got {self.max_detections}"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"EngineOptions.precision must be one of {', '.join(PRECISIONS)}, "
                f"got {self.precision!r}"
            )
        if self.intra_op_threads < 1:
            raise ConfigError(
                f"EngineOptions.intra_op_threads must be at least 1, got {self.intra_op_threads}"
            )
        if self.gpu is not None and self.gpu < 0:
            raise ConfigError(f"EngineOptions.gpu must be a device index >= 0, got {self.gpu}")
        if self.max_batch < 1:
            raise ConfigError(f"EngineOptions.max_batch must be at least 1, got {self.max_batch}")
        if self.classes is not None and any(c < 0 for c in self.classes):
            raise ConfigError(f"EngineOptions.classes must be class ids >= 0, got {self.classes}")


@runtime_checkable
class Engine(Protocol):
    """An inference backend: frames in, one `Detections` per frame out.

    An engine is not thread-safe: it owns reusable input buffers. Use one per thread or
    process.
    """

    name: str
    """Backend name: "onnxruntime", "torch" or "tensorrt"."""
    input_size: tuple[int, int]
    """(height, width) of the model input."""
    class_names: list[str]
    """Class names by class id, from the model's metadata."""
    max_batch: int
    """The most frames one model run takes; `infer` accepts more and splits them."""

    def infer(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """Detect objects in (H, W, 3) uint8 RGB frames of any sizes, in order."""
        ...

    def close(self) -> None:
        """Release the model and its buffers; the engine cannot be used afterwards."""
        ...
