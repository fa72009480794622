"""The GPU letterbox's kernel, compiled as C, gives the pixels of the CPU letterbox.

`itsd.engines.gpu_letterbox.LETTERBOX_SOURCE` is the CUDA kernel the TensorRT and ONNX
Runtime CUDA backends launch; `cpu_reference_source` wraps the same arithmetic in a loop,
so these tests compile it with the C compiler and hold it to `preprocess.letterbox_into`
(OpenCV's INTER_LINEAR) on real street frames and odd sizes: the same geometry, the
border exactly, the pixels within one grey level. The table the kernel reads and the
packing of frames are checked here too; the CUDA build itself is checked on a GPU by
test_engines_gpu_letterbox_gpu.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from itsd.engines.gpu_letterbox import (
    TABLE_FIELDS,
    describe_batch,
    pack_frames,
    try_gpu_letterbox,
)
from itsd.engines.preprocess import PAD_VALUE, letterbox_batch, letterbox_params

ONE_LEVEL = 1.0 / 255.0 + 1e-6


def _run_kernel(kernel: Any, frames: list[np.ndarray], h: int, w: int) -> np.ndarray:
    out = np.full((len(frames), 3, h, w), np.nan, dtype=np.float32)
    kernel.run(frames, h, w, out.ctypes.data)
    return out


@pytest.fixture(scope="module")
def street(clip_frames: Callable[[str, int, int], list[np.ndarray]]) -> list[np.ndarray]:
    return clip_frames("street_overhead_dusk.mp4", 25, 4)


def _compare(got: np.ndarray, frames: list[np.ndarray], h: int, w: int) -> None:
    want = np.zeros((len(frames), 3, h, w), dtype=np.float32)
    boxes = letterbox_batch(frames, want)
    assert not np.isnan(got).any(), "the kernel left pixels unwritten"
    diff = np.abs(got - want)
    assert float(diff.max()) <= ONE_LEVEL
    assert float(diff.mean()) < 0.25 / 255, "most pixels should match exactly"
    for i, lb in enumerate(boxes):
        border = np.ones((h, w), dtype=bool)
        border[lb.pad_y : lb.pad_y + lb.new_h, lb.pad_x : lb.pad_x + lb.new_w] = False
        assert np.all(got[i][:, border] == np.float32(PAD_VALUE))


@pytest.mark.parametrize("size", [(320, 320), (640, 640), (256, 416)])
def test_kernel_matches_cpu_letterbox_on_street_frames(
    letterbox_kernel: Any, street: list[np.ndarray], size: tuple[int, int]
) -> None:
    h, w = size
    _compare(_run_kernel(letterbox_kernel, street, h, w), street, h, w)


def test_kernel_mixed_sizes_upscale_odd_and_unscaled(letterbox_kernel: Any) -> None:
    rng = np.random.default_rng(7)
    smooth = np.kron(rng.integers(0, 256, (12, 20, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    frames = [
        rng.integers(0, 256, (37, 53, 3), dtype=np.uint8),  # odd, upscaled
        smooth,  # 96x160, upscaled 2x
        rng.integers(0, 256, (320, 320, 3), dtype=np.uint8),  # the model size: copied
        rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)[::2, ::2].copy(),  # 540x960
        rng.integers(0, 256, (1, 700, 3), dtype=np.uint8),  # one row
    ]
    _compare(_run_kernel(letterbox_kernel, frames, 320, 320), frames, 320, 320)
    got = _run_kernel(letterbox_kernel, [frames[2]], 320, 320)
    want = np.zeros((1, 3, 320, 320), np.float32)
    letterbox_batch([frames[2]], want)
    assert np.array_equal(got, want)  # unscaled pixels are copied, bit for bit


def test_table_offsets_sizes_and_letterboxes() -> None:
    frames = [np.zeros((360, 640, 3), np.uint8), np.zeros((7, 5, 3), np.uint8)]
    table, boxes, total = describe_batch(frames, 320, 320)
    assert table.shape == (2, TABLE_FIELDS) and table.dtype == np.int64
    assert boxes == [letterbox_params(360, 640, 320, 320), letterbox_params(7, 5, 320, 320)]
    assert list(table[0]) == [0, 360, 640, 180, 320, 70, 0, 0]
    assert table[1][0] == 360 * 640 * 3 and table[1][0] % 16 == 0
    assert total == 360 * 640 * 3 + 112  # 105 bytes rounded up to 16
    lb = boxes[1]
    assert list(table[1][1:7]) == [7, 5, lb.new_h, lb.new_w, lb.pad_y, lb.pad_x]


def test_pack_frames_places_each_frame_at_its_offset() -> None:
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, s, dtype=np.uint8) for s in ((3, 5, 3), (4, 4, 3))]
    frames.append(rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)[:, ::2])  # not contiguous
    table, _, total = describe_batch(frames, 64, 64)
    packed = np.zeros(total, np.uint8)
    pack_frames(frames, table, packed)
    for frame, row in zip(frames, table, strict=True):
        start = int(row[0])
        assert np.array_equal(packed[start : start + frame.size].reshape(frame.shape), frame)


def test_bad_frame_is_named() -> None:
    with pytest.raises(ValueError, match="frame 1"):
        describe_batch([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8)], 32, 32)


def test_no_gpu_asked_means_cpu_letterbox() -> None:
    assert try_gpu_letterbox(None, (320, 320), False, "here") is None


def test_missing_cuda_python_falls_back_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import itsd.engines.gpu_letterbox as gl

    def no_cuda() -> None:
        raise ImportError("No module named 'cuda'")

    monkeypatch.setattr(gl, "_imports", no_cuda)
    with caplog.at_level(logging.WARNING):
        assert try_gpu_letterbox(0, (320, 320), False, "TensorRT engine m.engine") is None
    assert "TensorRT engine m.engine: letterboxing on the CPU: cuda-python" in caplog.text
