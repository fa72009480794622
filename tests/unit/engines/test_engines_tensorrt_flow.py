"""The TensorRT backend's frame path around TensorRT and CUDA, with stand-ins for both.

TensorRT cannot be installed here, so this runs `TensorRTEngine` against a stand-in
TensorRT (an "engine" whose execution reads its input binding and writes a YOLO head
output) and a stand-in CUDA runtime whose "device" memory is host memory. The GPU
letterbox is the real kernel's arithmetic (`cpu_reference_source`, compiled by the
conftest) writing where the backend tells it. What is checked is the backend's own
plumbing: the batch letterboxed "on the GPU" lands in the input binding of the slot
that then executes (two slots in flight), no float batch is copied up in that case,
chunks and a static batch are honoured, and the boxes are those of the CPU letterbox
path. Whether the real libraries behave as these stand-ins do is for a GPU run.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import itsd.engines.tensorrt_backend as trtb
from itsd.engines.base import EngineOptions
from itsd.engines.preprocess import Letterbox

SIZE = 64
ANCHORS = 8 * 8 + 4 * 4 + 2 * 2


class _Cudart:
    """Host memory standing in for device memory; every call succeeds."""

    class cudaMemcpyKind:  # noqa: N801 - the name cuda.bindings uses
        cudaMemcpyHostToDevice = 1  # noqa: N815
        cudaMemcpyDeviceToHost = 2  # noqa: N815

    def __init__(self) -> None:
        self.blocks: dict[int, Any] = {}
        self.h2d: list[int] = []
        self._ids = 100

    def _alloc(self, n: int) -> tuple[int, int]:
        buf = ctypes.create_string_buffer(n)
        self.blocks[ctypes.addressof(buf)] = buf
        return 0, ctypes.addressof(buf)

    def _id(self) -> tuple[int, int]:
        self._ids += 1
        return 0, self._ids

    def cudaMalloc(self, n: int) -> tuple[int, int]:  # noqa: N802
        return self._alloc(n)

    def cudaHostAlloc(self, n: int, flags: int) -> tuple[int, int]:  # noqa: N802
        return self._alloc(n)

    def cudaMemcpyAsync(self, dst: int, src: int, n: int, kind: int, stream: Any) -> tuple[int]:  # noqa: N802
        if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice:
            self.h2d.append(n)
        ctypes.memmove(int(dst), int(src), n)
        return (0,)

    def cudaEventElapsedTime(self, a: int, b: int) -> tuple[int, float]:  # noqa: N802
        return 0, 1.5

    def __getattr__(self, name: str) -> Any:
        if name in ("cudaStreamCreate", "cudaEventCreate"):
            return self._id
        return lambda *args: (0,)  # set device, record, synchronize, free, destroy


class _Context:
    def __init__(self, engine: _Engine) -> None:
        self.engine = engine
        self.addr: dict[str, int] = {}
        self.n = 0

    def set_tensor_address(self, name: str, ptr: int) -> None:
        self.addr[name] = ptr

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> None:
        self.n = shape[0]

    def execute_async_v3(self, stream: int) -> bool:
        n = self.n
        x = np.ctypeslib.as_array(
            (ctypes.c_float * (n * 3 * SIZE * SIZE)).from_address(self.addr["images"])
        ).reshape(n, 3, SIZE, SIZE)
        self.engine.seen.append(x.copy())
        out = np.ctypeslib.as_array(
            (ctypes.c_float * (n * 84 * ANCHORS)).from_address(self.addr["output0"])
        ).reshape(n, 84, ANCHORS)
        out[:] = 0
        out[:, :4, 0] = (32, 32, 20, 20)  # one box in the middle of the input
        out[:, 4 + 2, 0] = 0.5 + x.mean(axis=(1, 2, 3)) / 2  # a car, scored by the pixels
        return True


class _Engine:
    num_io_tensors = 2

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def get_tensor_name(self, i: int) -> str:
        return ("images", "output0")[i]

    def get_tensor_mode(self, name: str) -> str:
        return "in" if name == "images" else "out"

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1, 3, SIZE, SIZE) if name == "images" else (-1, 84, ANCHORS)

    def get_tensor_dtype(self, name: str) -> Any:
        return type("DataType", (), {"name": "FLOAT"})()

    def create_execution_context(self) -> _Context:
        return _Context(self)


class _Trt:
    __version__ = "10.0.0-standin"

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    class TensorIOMode:
        INPUT = "in"

    def __init__(self) -> None:
        self.engine = _Engine()

    def Runtime(self, logger: Any) -> Any:  # noqa: N802
        engine = self.engine
        return type("R", (), {"deserialize_cuda_engine": lambda self, b: engine})()


class _KernelLetterbox:
    """The GpuLetterbox interface around the kernel compiled as C."""

    def __init__(self, kernel: Any, input_size: tuple[int, int]) -> None:
        self.kernel, self.input_size = kernel, input_size
        self.streams: list[Any] = []
        self.closed = False

    def run(self, frames: list[np.ndarray], out_ptr: int, stream: Any) -> list[Letterbox]:
        self.streams.append(stream)
        return self.kernel.run(frames, *self.input_size, out_ptr)

    def close(self) -> None:
        self.closed = True


def _engine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kernel: Any, device: bool
) -> tuple[trtb.TensorRTEngine, _Trt, _Cudart, _KernelLetterbox | None]:
    trt, cudart = _Trt(), _Cudart()
    made: list[_KernelLetterbox] = []

    def start(gpu: int | None, size: tuple[int, int], half: bool, where: str) -> Any:
        assert gpu == 0 and not half
        made.append(_KernelLetterbox(kernel, size))
        return made[-1]

    monkeypatch.setattr(trtb, "_imports", lambda: (trt, cudart))
    monkeypatch.setattr(trtb, "try_gpu_letterbox", start)
    path = tmp_path / "m.engine"
    path.write_bytes(b"engine")
    engine = trtb.TensorRTEngine(path, EngineOptions(gpu=0), max_batch=3, device_letterbox=device)
    return engine, trt, cudart, (made[0] if made else None)


def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    sizes = [(36, 64), (64, 48), (90, 160), (64, 64), (20, 30)]
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def test_gpu_letterbox_feeds_the_executing_slot_and_matches_the_cpu_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, letterbox_kernel: Any
) -> None:
    frames = _frames()
    gpu, trt_g, cud_g, lb = _engine(monkeypatch, tmp_path, letterbox_kernel, device=True)
    cpu, trt_c, cud_c, none = _engine(monkeypatch, tmp_path, letterbox_kernel, device=False)
    assert lb is not None and none is None
    probe_h2d = list(cud_g.h2d)
    got, want = gpu.infer(frames), cpu.infer(frames)
    # Runs of max_batch 3: 3 + 2 frames, through both in-flight slots.
    assert [x.shape[0] for x in trt_g.engine.seen[1:]] == [3, 2]
    assert len({id(s) for s in lb.streams}) == 2
    assert cud_g.h2d[len(probe_h2d) :] == []  # no float batch went up: the kernel wrote it
    assert len(cud_c.h2d) == len(probe_h2d) + 2
    for a, b in zip(trt_g.engine.seen[1:], trt_c.engine.seen[1:], strict=True):
        assert np.abs(a - b).max() <= 1 / 255 + 1e-6
    for g, w in zip(got, want, strict=True):
        assert len(g) == len(w) == 1
        np.testing.assert_allclose(g.boxes, w.boxes, atol=1e-4)
        np.testing.assert_allclose(g.scores, w.scores, atol=1 / 255)
        assert list(g.class_ids) == list(w.class_ids) == [2]
    gpu.close()
    assert lb.closed


def test_infer_after_the_letterbox_fails_to_start_runs_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, letterbox_kernel: Any
) -> None:
    trt, cudart = _Trt(), _Cudart()
    monkeypatch.setattr(trtb, "_imports", lambda: (trt, cudart))
    monkeypatch.setattr(trtb, "try_gpu_letterbox", lambda *a: None)
    path = tmp_path / "m.engine"
    path.write_bytes(b"engine")
    engine = trtb.TensorRTEngine(path, EngineOptions(gpu=0), max_batch=3)
    out = engine.infer(_frames()[:2])
    assert [len(d) for d in out] == [1, 1]
    assert len(cudart.h2d) == 2  # the probe and one batch, letterboxed on the host
