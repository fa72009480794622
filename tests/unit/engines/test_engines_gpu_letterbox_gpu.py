"""The GPU letterbox kernel on a real GPU gives the CPU letterbox's pixels (fp32, fp16).

Compiled with NVRTC and launched through cuda.bindings exactly as the TensorRT and ONNX
Runtime CUDA backends do, on street frames and odd sizes in one batch; read back and
held to `preprocess.letterbox_batch` within one grey level. Marked ``gpu``: skipped,
saying why, without cuda-python or a CUDA device (every machine without a GPU, CI's
too). bench/gpu_check.sh runs it on a lent GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from itsd.engines.gpu_letterbox import cuda_unavailable
from itsd.engines.preprocess import letterbox_batch

WHY = cuda_unavailable()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(WHY is not None, reason=WHY or "")]


@pytest.fixture(scope="module")
def frames(clip_frames: Callable[[str, int, int], list[np.ndarray]]) -> list[np.ndarray]:
    out = clip_frames("street_overhead_dusk.mp4", 40, 3)
    rng = np.random.default_rng(5)
    out.append(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    out.append(rng.integers(0, 256, (640, 640, 3), dtype=np.uint8))
    return out


def _read(cudart: Any, ptr: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    host = np.empty(shape, dtype=dtype)
    (err,) = cudart.cudaMemcpy(
        host.ctypes.data, ptr, host.nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
    )
    assert int(err) == 0
    return host


@pytest.mark.parametrize("half", [False, True])
def test_gpu_kernel_matches_cpu_letterbox(frames: list[np.ndarray], half: bool) -> None:
    from cuda.bindings import runtime as cudart

    from itsd.engines.gpu_letterbox import DeviceInput, GpuLetterbox

    size = (320, 416)
    dtype = np.float16 if half else np.float32
    dev = DeviceInput(GpuLetterbox(0, size, half=half), len(frames), np.dtype(dtype).itemsize)
    try:
        for _ in range(2):  # the second run reuses every buffer
            boxes = dev.letterbox(frames)
            got = _read(cudart, dev.ptr, (len(frames), 3, *size), dtype).astype(np.float32)
        want = np.zeros((len(frames), 3, *size), np.float32)
        assert letterbox_batch(frames, want) == boxes
        if half:
            want = want.astype(np.float16).astype(np.float32)
        tol = 1 / 255 + (1e-3 if half else 1e-6)
        assert float(np.abs(got - want).max()) <= tol
        assert float(np.abs(got - want).mean()) < 0.25 / 255
    finally:
        dev.close()
