"""What every YOLO backend shares: the frame path around a backend's own forward pass.

`YoloEngine.infer` checks the frames, letterboxes them (`_prepare`: into a reused
(N, 3, H, W) float32 batch buffer on the CPU, or on the GPU into the backend's device
input for the TensorRT and ONNX Runtime CUDA backends), calls the backend's `_forward`
once per chunk of at most `max_batch` frames and decodes each image's raw head output
with the one shared `decode_yolo` (confidence filter, class-aware NMS, boxes back to
frame pixels). A backend subclass sets `name`, `input_size`, `class_names`, `max_batch`,
`static_batch` and implements `_forward` (and may override `_prepare` and `_close`);
nothing else. `check_yolo_output` is the one
check of a YOLOv8/YOLO11 detection head's output layout that every backend runs on its
probe output at load time.

This module must never import a backend library (onnxruntime, torch, tensorrt) or
anything from itsd outside `itsd.engines` and `itsd.errors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from itsd.engines.base import Detections, EngineOptions
from itsd.engines.postprocess import decode_yolo
from itsd.engines.preprocess import Letterbox, check_frame, letterbox_into, letterbox_params
from itsd.errors import ModelError

#: Detection head strides of YOLOv8/YOLO11 (anchors = sum of (H/s) * (W/s)).
HEAD_STRIDES = (8, 16, 32)


def expected_anchors(height: int, width: int) -> int:
    """Anchors a YOLOv8/YOLO11 detection head has for an input of height x width."""
    return sum((height // s) * (width // s) for s in HEAD_STRIDES)


def check_yolo_output(shape: tuple[int, ...], input_size: tuple[int, int], where: str) -> int:
    """Check a (batch, 4 + classes, anchors) head output; return the number of classes.

    Raises ModelError saying what was expected: a transposed output, a head with NMS in
    the graph or the wrong number of anchors for the input size all fail here, at load
    time, instead of giving wrong boxes in the frame loop.
    """
    h, w = input_size
    anchors = expected_anchors(h, w)
    if len(shape) != 3 or shape[1] < 5 or shape[2] != anchors:
        raise ModelError(
            f"{where}: output is {tuple(shape)} for a {h}x{w} input; expected "
            f"(batch, 4 + classes, {anchors}) (YOLOv8/YOLO11 detection head). "
            "Transposed outputs and models with NMS inside the graph are not supported"
        )
    return int(shape[1]) - 4


@dataclass(frozen=True)
class DeviceBatch:
    """What `_prepare` gives when the batch was letterboxed on the GPU, straight into the
    backend's device input buffer: only its size travels (`n` frames, the static batch
    size for a static-batch model)."""

    n: int


class YoloEngine:
    """Base of the YOLO backends; implements `itsd.engines.base.Engine` around `_forward`.

    Not thread-safe (one batch buffer per engine): use one engine per thread or process.
    """

    name = "yolo"
    options: EngineOptions
    input_size: tuple[int, int]
    class_names: list[str]
    max_batch: int
    #: The batch size a static-batch model always runs with; None when dynamic.
    static_batch: int | None = None
    _buffer: np.ndarray
    _closed: bool = False

    def _forward(self, batch: Any) -> np.ndarray:
        """Run the model on what `_prepare` gave (a (n, 3, H, W) float32 host batch, or
        a `DeviceBatch` for a backend that letterboxes on its GPU); (n, 4 + classes,
        anchors) out."""
        raise NotImplementedError

    def _prepare(self, chunk: Sequence[np.ndarray]) -> tuple[Any, list[Letterbox]]:
        """The model input for at most `max_batch` frames, and their Letterboxes: here
        the frames letterboxed on the CPU into the reused batch buffer (a static-batch
        model's unused slots keep old pixels). A GPU backend overrides this to letterbox
        on its device (`itsd.engines.gpu_letterbox`)."""
        dst_h, dst_w = self.input_size
        batch = self._batch_buffer(self.static_batch or len(chunk))
        boxes = []
        for slot, frame in enumerate(chunk):
            lb = letterbox_params(frame.shape[0], frame.shape[1], dst_h, dst_w)
            letterbox_into(frame, batch[slot], lb)
            boxes.append(lb)
        return batch, boxes

    def _close(self) -> None:
        """Release what the backend holds (session, device memory)."""

    def _batch_buffer(self, n: int) -> np.ndarray:
        """A (n, 3, H, W) float32 view of the reused buffer (grown when too small)."""
        h, w = self.input_size
        if self._buffer.shape[0] < n or self._buffer.shape[2:] != (h, w):
            self._buffer = np.empty((n, 3, h, w), dtype=np.float32)
        return self._buffer[:n]

    def infer(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """Detect objects in (H, W, 3) uint8 RGB frames of any sizes; one result per frame.

        Any number of frames is accepted: they are split into runs of `max_batch`. A
        static-batch model always runs full batches (unused slots keep old pixels and
        their results are ignored); a dynamic one runs exactly the frames it has.
        """
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        for i, frame in enumerate(frames):
            check_frame(frame, f"frame {i}")
        results: list[Detections] = []
        for start in range(0, len(frames), self.max_batch):
            batch, boxes = self._prepare(frames[start : start + self.max_batch])
            output = self._forward(batch)
            for slot, lb in enumerate(boxes):
                results.append(decode_yolo(output[slot], lb, lb.src_h, lb.src_w, self.options))
        return results

    def close(self) -> None:
        """Release the model and buffers; later `infer` calls raise RuntimeError."""
        if not self._closed:
            self._closed = True
            self._close()
        self._buffer = np.empty((0, 3, 0, 0), dtype=np.float32)

    def __enter__(self) -> YoloEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
