"""ONNX Runtime's GPU input path (IOBinding over a letterboxed device buffer), on the CPU.

On the CUDA provider `OnnxEngine` letterboxes on the GPU into a `DeviceInput` buffer and
binds it to the session with an IOBinding. Here the real model runs on the CPU provider
with a stand-in DeviceInput whose buffer is host memory (IOBinding device "cpu") and
whose letterbox is the real kernel's arithmetic compiled as C (the conftest): the
binding's shape, type and address are exercised by the real ONNX Runtime, and the boxes
must be those of the plain CPU path. The CUDA build itself runs only on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from itsd.engines.base import EngineOptions
from itsd.engines.onnx_backend import OnnxEngine
from itsd.engines.preprocess import Letterbox


class _HostInput:
    """The DeviceInput interface over host memory and the kernel compiled as C."""

    device_type = "cpu"
    gpu = 0

    def __init__(self, kernel: Any, max_batch: int, size: tuple[int, int]) -> None:
        self.kernel, self.size = kernel, size
        self.buf = np.full((max_batch, 3, *size), np.nan, dtype=np.float32)
        self.ptr = self.buf.ctypes.data
        self.calls = 0
        self.closed = False

    def letterbox(self, frames: list[np.ndarray]) -> list[Letterbox]:
        self.calls += 1
        return self.kernel.run(frames, *self.size, self.ptr)

    def close(self) -> None:
        self.closed = True


def test_bound_device_input_gives_the_cpu_paths_boxes(
    model_path: Path,
    clip_frames: Callable[[str, int, int], list[np.ndarray]],
    letterbox_kernel: Any,
) -> None:
    street = clip_frames("street_overhead_dusk.mp4", 20, 6)
    plain = OnnxEngine(model_path, EngineOptions())
    bound = OnnxEngine(model_path, EngineOptions())
    stand_in = _HostInput(letterbox_kernel, bound.max_batch, bound.input_size)
    bound._device_input = stand_in  # type: ignore[assignment]
    want, got = plain.infer(street), bound.infer(street)
    assert stand_in.calls == len(street)  # static batch 1: one letterbox per frame
    assert sum(len(d) for d in want) >= 4  # the dusk street has vehicles in it
    for g, w in zip(got, want, strict=True):
        assert list(g.class_ids) == list(w.class_ids)
        np.testing.assert_allclose(g.boxes, w.boxes, atol=1.0)
        np.testing.assert_allclose(g.scores, w.scores, atol=0.02)
    bound.close()
    assert stand_in.closed


def test_cpu_provider_letterboxes_on_the_cpu(model_path: Path) -> None:
    engine = OnnxEngine(model_path, EngineOptions())
    assert engine._device_input is None
