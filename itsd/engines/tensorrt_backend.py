"""TensorRT backend: serialized engines run with CUDA-Python (``cuda.bindings``).

NOT RUN ON ANY MACHINE HERE: TensorRT cannot be installed on the machines this project
is built on (its PyPI packages fetch the libraries from NVIDIA's own index). The GPU
path below is complete and typed but unexercised; the logic that needs no GPU (engine
cache keys, binding shapes, buffer plans) is unit-tested.

How it runs: the engine is deserialized once; its input and output bindings are read
(`BindingSpec`); `plan_buffers` sizes every device buffer for ``max_batch`` frames, and
they are allocated once (``cudaMalloc``). The letterbox runs on the GPU
(`itsd.engines.gpu_letterbox`): the batch's uint8 frames go up through one page-locked
staging buffer in one asynchronous copy on the batch's stream, and one kernel writes the
whole (N, 3, H, W) input straight into the engine's input buffer. Where that kernel
cannot start (no NVRTC, a driver too old for its PTX; logged) or ``device_letterbox`` is
False, the letterbox runs on the CPU into a ``cudaHostAlloc`` page-locked batch buffer
and the copy to the device is one asynchronous DMA. Batches take turns over
``IN_FLIGHT`` slots, each with its own stream, execution context and buffers; each
`_forward` still waits for its batch before returning, so the slots overlap only once
the caller runs batches asynchronously. Events time each batch on the GPU. Engines are
cached by `engine_cache_key` (model sha256, GPU name and compute
capability, TensorRT version, precision, batch and input size) and rebuilt when any of
them changes (see ``itsd.engines.models``).

This module must never import tensorrt or cuda at module import time (it imports cleanly
without them), and never fall back silently: a missing library is a ModelError.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from itsd.engines.base import COCO_NAMES, EngineOptions
from itsd.engines.gpu_letterbox import GpuLetterbox, try_gpu_letterbox
from itsd.engines.preprocess import Letterbox
from itsd.engines.yolo import DeviceBatch, YoloEngine, check_yolo_output
from itsd.errors import ModelError

log = logging.getLogger(__name__)

#: Batches in flight at once (one CUDA stream and one set of buffers each).
IN_FLIGHT = 2
_DTYPES: dict[str, Any] = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "BOOL": np.bool_,
}


def engine_cache_key(
    model_sha256: str,
    gpu_name: str,
    compute_capability: tuple[int, int],
    trt_version: str,
    precision: str,
    max_batch: int,
    imgsz: int,
) -> str:
    """The file name of a cached engine: any change in its inputs gives another name.

    ``<model sha256[:16]>-<gpu>-sm<cc>-trt<version>-<precision>-b<batch>-<imgsz>-<digest>``;
    the digest covers every field in full, so two GPUs whose names slugify alike differ.
    """
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    if len(model_sha256) != 64:
        raise ValueError("model_sha256 must be a hex sha256")
    slug = "".join(c if c.isalnum() else "_" for c in gpu_name.lower()).strip("_")[:24]
    cc = f"{compute_capability[0]}{compute_capability[1]}"
    full = "|".join(
        (model_sha256, gpu_name, cc, trt_version, precision, str(max_batch), str(imgsz))
    )
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return (
        f"{model_sha256[:16]}-{slug}-sm{cc}-trt{trt_version}-{precision}-b{max_batch}"
        f"-{imgsz}-{digest}.engine"
    )


@dataclass(frozen=True)
class BindingSpec:
    """One input or output tensor of an engine, as the engine declares it."""

    name: str
    is_input: bool
    shape: tuple[int, ...]  # -1 marks a dynamic dimension
    dtype: str  # TensorRT DataType name: FLOAT, HALF, INT8, ...

    @property
    def np_dtype(self) -> Any:
        if self.dtype not in _DTYPES:
            raise ModelError(f"binding {self.name}: unsupported data type {self.dtype}")
        return _DTYPES[self.dtype]


def resolve_shape(spec: BindingSpec, batch: int, input_size: tuple[int, int]) -> tuple[int, ...]:
    """The concrete shape of a binding for `batch` frames: a dynamic batch dimension
    becomes `batch`, a dynamic height/width of the (N, 3, H, W) input the input size."""
    shape = list(spec.shape)
    if not shape:
        raise ModelError(f"binding {spec.name} has no dimensions")
    if shape[0] == -1:
        shape[0] = batch
    elif shape[0] != batch:
        raise ModelError(f"binding {spec.name} has a static batch of {shape[0]}, not {batch}")
    if spec.is_input and len(shape) == 4:
        for axis, size in ((2, input_size[0]), (3, input_size[1])):
            if shape[axis] == -1:
                shape[axis] = size
    if any(d < 0 for d in shape):
        raise ModelError(f"binding {spec.name}: shape {spec.shape} has unknown dimensions")
    return tuple(shape)


@dataclass(frozen=True)
class BufferPlan:
    """Device buffers of one in-flight slot, sized for max_batch frames."""

    shapes: dict[str, tuple[int, ...]]
    nbytes: dict[str, int]

    @property
    def total_bytes(self) -> int:
        return sum(self.nbytes.values())


def plan_buffers(
    bindings: list[BindingSpec], max_batch: int, input_size: tuple[int, int]
) -> BufferPlan:
    """Shapes and sizes of every binding for `max_batch` frames (allocated once)."""
    inputs = [b for b in bindings if b.is_input]
    outputs = [b for b in bindings if not b.is_input]
    if len(inputs) != 1 or not outputs:
        raise ModelError(
            f"expected 1 input and at least 1 output binding, got {len(inputs)} and {len(outputs)}"
        )
    shapes = {b.name: resolve_shape(b, max_batch, input_size) for b in bindings}
    nbytes = {
        b.name: int(np.prod(shapes[b.name])) * np.dtype(b.np_dtype).itemsize for b in bindings
    }
    inp = shapes[inputs[0].name]
    if len(inp) != 4 or inp[1] != 3:
        raise ModelError(f"input {inputs[0].name} must be (N, 3, H, W), got {inp}")
    return BufferPlan(shapes, nbytes)


def _imports() -> tuple[Any, Any]:
    try:
        import tensorrt as trt
        from cuda.bindings import runtime as cudart
    except ImportError as exc:
        raise ModelError(
            f"the TensorRT backend needs tensorrt and cuda-python ({exc}); install the extra "
            "itsd[gpu] on a machine with an NVIDIA GPU"
        ) from exc
    return trt, cudart


def _check(result: Any, what: str) -> Any:
    """Unwrap a cuda.bindings call's (err, *values) tuple; raise on an error code."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error in {what}: {err}")
    return values[0] if len(values) == 1 else tuple(values)


class TensorRTEngine(YoloEngine):
    """YOLO detection with a serialized TensorRT engine; implements `Engine`."""

    name = "tensorrt"

    def __init__(
        self,
        path: Path,
        options: EngineOptions,
        max_batch: int | None = None,
        device_letterbox: bool = True,
    ) -> None:
        trt, cudart = _imports()
        self._trt, self._cudart = trt, cudart
        self.options = options
        self.model_path = Path(path)
        where = f"TensorRT engine {path}"
        gpu = options.gpu if options.gpu is not None else 0
        _check(cudart.cudaSetDevice(gpu), "cudaSetDevice")
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        try:
            engine = runtime.deserialize_cuda_engine(self.model_path.read_bytes())
        except OSError as exc:
            raise ModelError(f"cannot read {where}: {exc}") from exc
        if engine is None:
            raise ModelError(
                f"{where} does not deserialize: built for another GPU or TensorRT version? "
                "Rebuild it with `itsd models export NAME --format engine`"
            )
        self._engine = engine
        bindings = []
        for i in range(engine.num_io_tensors):
            tname = engine.get_tensor_name(i)
            bindings.append(
                BindingSpec(
                    tname,
                    engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT,
                    tuple(int(d) for d in engine.get_tensor_shape(tname)),
                    engine.get_tensor_dtype(tname).name,
                )
            )
        inp = next(b for b in bindings if b.is_input)
        h = inp.shape[2] if inp.shape[2] > 0 else 640
        w = inp.shape[3] if inp.shape[3] > 0 else 640
        self.input_size = (h, w)
        self.static_batch = inp.shape[0] if inp.shape[0] > 0 else None
        self.max_batch = self.static_batch or max_batch or options.max_batch
        self._bindings = bindings
        self._input = inp
        self._output = next(b for b in bindings if not b.is_input)
        self._plan = plan_buffers(bindings, self.max_batch, self.input_size)
        self._slots = [self._alloc_slot() for _ in range(IN_FLIGHT)]
        self._next = 0
        # Page-locked staging buffer the letterbox writes into: one DMA per batch.
        nbytes = self._plan.nbytes[inp.name]
        self._host_ptr = _check(cudart.cudaHostAlloc(nbytes, 0), "cudaHostAlloc")
        host = (ctypes.c_byte * nbytes).from_address(int(self._host_ptr))
        flat = np.frombuffer(memoryview(host), dtype=np.float32)
        self._buffer = flat.reshape(self._plan.shapes[inp.name])
        self._buffer[:] = 114 / 255
        probe = self._forward(self._buffer[: self.static_batch or 1])
        nc = check_yolo_output(tuple(probe.shape), self.input_size, where)
        self.class_names = list(COCO_NAMES) if nc == 80 else [f"class_{i}" for i in range(nc)]
        self.last_gpu_ms = 0.0
        self._gpu_lb: GpuLetterbox | None = None
        if device_letterbox and inp.np_dtype in (np.float32, np.float16):
            self._gpu_lb = try_gpu_letterbox(
                gpu, self.input_size, inp.np_dtype == np.float16, where
            )
        log.info(
            "TensorRT %s: %s, input %dx%d, batch %d, letterbox on the %s",
            trt.__version__,
            path,
            h,
            w,
            self.max_batch,
            "GPU" if self._gpu_lb is not None else "CPU",
        )

    def _alloc_slot(self) -> dict[str, Any]:
        cudart = self._cudart
        slot: dict[str, Any] = {
            "stream": _check(cudart.cudaStreamCreate(), "cudaStreamCreate"),
            "start": _check(cudart.cudaEventCreate(), "cudaEventCreate"),
            "end": _check(cudart.cudaEventCreate(), "cudaEventCreate"),
            "context": self._engine.create_execution_context(),
            "device": {},
        }
        for name, nbytes in self._plan.nbytes.items():
            slot["device"][name] = _check(cudart.cudaMalloc(nbytes), "cudaMalloc")
            slot["context"].set_tensor_address(name, int(slot["device"][name]))
        out = self._plan.shapes[self._output.name]
        slot["host_out"] = np.empty(out, dtype=self._output.np_dtype)
        return slot

    def _prepare(self, chunk: Sequence[np.ndarray]) -> tuple[Any, list[Letterbox]]:
        """On the GPU when the letterbox kernel runs: queued on the stream of the slot
        the next `_forward` takes, into that slot's input buffer."""
        if self._gpu_lb is None:
            return super()._prepare(chunk)
        slot = self._slots[self._next]
        boxes = self._gpu_lb.run(chunk, int(slot["device"][self._input.name]), slot["stream"])
        return DeviceBatch(self.static_batch or len(chunk)), boxes

    def _forward(self, batch: Any) -> np.ndarray:
        cudart = self._cudart
        kind = cudart.cudaMemcpyKind
        slot = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        n = int(batch.n if isinstance(batch, DeviceBatch) else batch.shape[0])
        ctx, stream = slot["context"], slot["stream"]
        shape = resolve_shape(self._input, n, self.input_size)
        ctx.set_input_shape(self._input.name, shape)
        if not isinstance(batch, DeviceBatch):  # letterboxed on the CPU: one DMA up
            dtype = self._input.np_dtype
            src = batch if dtype == np.float32 else batch.astype(dtype)
            _check(
                cudart.cudaMemcpyAsync(
                    slot["device"][self._input.name],
                    src.ctypes.data,
                    src.nbytes,
                    kind.cudaMemcpyHostToDevice,
                    stream,
                ),
                "cudaMemcpyAsync H2D",
            )
        _check(cudart.cudaEventRecord(slot["start"], stream), "cudaEventRecord")
        if not ctx.execute_async_v3(int(stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        _check(cudart.cudaEventRecord(slot["end"], stream), "cudaEventRecord")
        out = slot["host_out"][:n]
        _check(
            cudart.cudaMemcpyAsync(
                out.ctypes.data,
                slot["device"][self._output.name],
                out.nbytes,
                kind.cudaMemcpyDeviceToHost,
                stream,
            ),
            "cudaMemcpyAsync D2H",
        )
        _check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        self.last_gpu_ms = float(
            _check(cudart.cudaEventElapsedTime(slot["start"], slot["end"]), "cudaEventElapsedTime")
        )
        result: np.ndarray = out.astype(np.float32, copy=False)
        return result

    def _batch_buffer(self, n: int) -> np.ndarray:
        return self._buffer[:n]

    def _close(self) -> None:
        cudart = self._cudart
        if self._gpu_lb is not None:
            self._gpu_lb.close()
            self._gpu_lb = None
        for slot in self._slots:
            for ptr in slot["device"].values():
                cudart.cudaFree(ptr)
            cudart.cudaStreamDestroy(slot["stream"])
            cudart.cudaEventDestroy(slot["start"])
            cudart.cudaEventDestroy(slot["end"])
        self._slots = []
        cudart.cudaFreeHost(self._host_ptr)


def load(model: Path, options: EngineOptions) -> TensorRTEngine:
    """The registry's entry point: a TensorRTEngine for a ``.engine`` file."""
    return TensorRTEngine(model, options)
