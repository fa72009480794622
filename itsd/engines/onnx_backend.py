"""ONNX Runtime backend: the embedded default engine (CPU, or CUDA with onnxruntime-gpu).

Takes any Ultralytics YOLOv8/YOLO11 detection export: static or dynamic batch, fixed or
dynamic image size, fp32/fp16 input, int8-quantized graphs. A static-batch model is run
in chunks of its batch size through one reused input buffer; a dynamic-batch model gets
one run per call of up to `EngineOptions.max_batch` frames (default 32). On the CUDA
provider the letterbox runs on the GPU (`itsd.engines.gpu_letterbox`: uint8 frames up,
one kernel for the batch) into a device buffer the session reads through an IOBinding;
where that kernel cannot start (no cuda-python; logged) it runs on the CPU. The frame path
(letterbox, output checks, decode and NMS) is the shared one of `yolo.YoloEngine`; this
module adds only the session and its forward pass, so results match the other backends.

The model is checked when the engine is made (inputs, outputs, class names, and one run
on a blank input), so a bad model fails at start with ModelError, not in the frame loop.

This module must never import torch, tensorrt or anything from itsd outside
`itsd.engines` and `itsd.errors`; it must never pick a GPU provider that is not there,
nor silently run on a provider other than the one that was asked for.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from itsd.engines.base import COCO_NAMES, EngineOptions
from itsd.engines.gpu_letterbox import DeviceInput, try_gpu_letterbox
from itsd.engines.preprocess import Letterbox
from itsd.engines.yolo import DeviceBatch, YoloEngine, check_yolo_output
from itsd.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

#: Most frames one run of a dynamic-batch model takes.
DYNAMIC_MAX_BATCH = 32
#: Input size used for a model with dynamic height/width and no `imgsz` metadata.
DEFAULT_IMGSZ = 640
#: Options used when none are given (a module constant: one frozen instance).
DEFAULT_OPTIONS = EngineOptions()

_INPUT_TYPES: dict[str, type[np.floating[Any]]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
}


def gpu_present() -> bool:
    """Whether an NVIDIA GPU is visible to this process (driver loaded, device node)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    try:
        if gpus.is_dir() and any(gpus.iterdir()):
            return True
    except OSError:
        pass
    return Path("/dev/nvidia0").exists()


def default_providers() -> list[str]:
    """CUDA first when onnxruntime-gpu is installed and a GPU is present, else CPU only."""
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available and gpu_present():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def providers_for(gpu: int | None, where: str) -> list[Any]:
    """Providers for ``EngineOptions.gpu``: the CPU for None; CUDA on that device when
    onnxruntime-gpu and a GPU are here, else the CPU with a warning."""
    if gpu is None:
        return ["CPUExecutionProvider"]
    if default_providers()[0] == "CUDAExecutionProvider":
        return [("CUDAExecutionProvider", {"device_id": gpu}), "CPUExecutionProvider"]
    log.warning(
        "%s: GPU %d was asked for, but this onnxruntime has no usable CUDA provider "
        "(install onnxruntime-gpu and the CUDA libraries); running on the CPU",
        where,
        gpu,
    )
    return ["CPUExecutionProvider"]


def session_options(intra_op_threads: int) -> ort.SessionOptions:
    """Session options of every engine: `intra_op_threads` threads, no inter-op pool,
    sequential execution, all graph optimisations."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only; the engine logs what matters itself
    return so


def parse_class_names(raw: str | None, num_classes: int, where: str) -> list[str]:
    """Class names from the `names` metadata value, else COCO (80 classes) or class_<i>.

    `raw` is the Python-literal string Ultralytics writes ("{0: 'person', ...}"); a list
    literal is accepted too. A value that is present but does not give exactly
    `num_classes` names is an error: it would label every box wrongly.
    """
    if raw is None:
        if num_classes == len(COCO_NAMES):
            log.warning("%s: no class names in the model metadata; assuming COCO", where)
            return list(COCO_NAMES)
        log.warning("%s: no class names in the model metadata; using class_<id>", where)
        return [f"class_{i}" for i in range(num_classes)]
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError) as exc:
        raise ModelError(f"{where}: metadata 'names' is not a Python literal: {exc}") from exc
    if isinstance(value, dict):
        if sorted(value) != list(range(len(value))):
            raise ModelError(f"{where}: metadata 'names' keys must be 0..n-1, got {sorted(value)}")
        names = [str(value[i]) for i in range(len(value))]
    elif isinstance(value, list | tuple):
        names = [str(v) for v in value]
    else:
        raise ModelError(f"{where}: metadata 'names' must be a dict or list, got {raw[:80]!r}")
    if len(names) != num_classes:
        raise ModelError(
            f"{where}: metadata lists {len(names)} class names but the output has "
            f"{num_classes} class rows"
        )
    return names


def _parse_imgsz(raw: str | None) -> tuple[int, int] | None:
    if raw is None:
        return None
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return None
    if isinstance(value, int):
        return (value, value)
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) for v in value)
    ):
        return (int(value[0]), int(value[1]))
    return None


def _static(dim: Any) -> int | None:
    """A dimension's size if it is fixed, else None (symbolic name or unknown)."""
    return dim if isinstance(dim, int) and dim > 0 else None


class OnnxEngine(YoloEngine):
    """YOLO detection with ONNX Runtime; implements `itsd.engines.base.Engine`.

    Not thread-safe (one input buffer per engine): use one engine per thread or process.
    """

    name = "onnxruntime"

    def __init__(
        self,
        model_path: str | Path,
        options: EngineOptions = DEFAULT_OPTIONS,
        providers: list[str] | None = None,
        device_letterbox: bool = True,
    ) -> None:
        self.model_path = Path(model_path)
        self.options = options
        where = f"ONNX model {self.model_path}"
        if not self.model_path.is_file():
            raise ModelError(f"{where} does not exist (or is not a file)")

        available = ort.get_available_providers()
        wanted: list[Any]
        if providers is None:
            wanted = providers_for(options.gpu, where)
        else:
            missing = [p for p in providers if p not in available]
            if missing or not providers:
                raise ModelError(
                    f"{where}: execution provider(s) {missing or providers} not available in "
                    f"this onnxruntime build (available: {', '.join(available)})"
                )
            wanted = list(providers)

        try:
            session = ort.InferenceSession(
                str(self.model_path), session_options(options.intra_op_threads), providers=wanted
            )
        except Exception as exc:
            raise ModelError(
                f"cannot load {where}: {exc}. Is it a complete ONNX export of a YOLO "
                "detection model?"
            ) from exc
        self._session: ort.InferenceSession | None = session

        used = session.get_providers()
        self.provider: str = used[0]
        first = wanted[0] if isinstance(wanted[0], str) else wanted[0][0]
        if first not in used:
            message = (
                f"{where}: {first} was asked for but the session runs on "
                f"{', '.join(used)}; check the GPU driver and onnxruntime-gpu's CUDA libraries"
            )
            if providers is not None:
                raise ModelError(message)
            log.warning("%s (falling back)", message)

        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1:
            raise ModelError(f"{where}: expected 1 input (images), found {len(inputs)}")
        inp = inputs[0]
        if len(inp.shape) != 4:
            raise ModelError(f"{where}: input {inp.name} must be NCHW, got shape {inp.shape}")
        if inp.type not in _INPUT_TYPES:
            raise ModelError(
                f"{where}: input {inp.name} has type {inp.type}; expected float or float16"
            )
        batch_dim, chan_dim, h_dim, w_dim = inp.shape
        if _static(chan_dim) not in (None, 3):
            raise ModelError(f"{where}: input {inp.name} must have 3 channels, got {inp.shape}")
        meta = session.get_modelmeta().custom_metadata_map
        h, w = _static(h_dim), _static(w_dim)
        if h is None or w is None:
            imgsz = _parse_imgsz(meta.get("imgsz")) or (DEFAULT_IMGSZ, DEFAULT_IMGSZ)
            h, w = h or imgsz[0], w or imgsz[1]
        self.input_size: tuple[int, int] = (h, w)
        self._input_name: str = inp.name
        self._input_dtype: type[np.floating[Any]] = _INPUT_TYPES[inp.type]

        static_batch = _static(batch_dim)
        self.static_batch: int | None = static_batch
        self.max_batch: int = static_batch or options.max_batch

        if not outputs:
            raise ModelError(f"{where}: the model has no outputs")
        out = outputs[0]
        self._output_name: str = out.name
        if len(out.shape) != 3:
            raise ModelError(
                f"{where}: output {out.name} has shape {out.shape}; expected "
                "(batch, 4 + classes, anchors) as Ultralytics exports detection models"
            )
        rows = _static(out.shape[1])
        if rows is not None and rows < 5:
            raise ModelError(
                f"{where}: output {out.name} has shape {out.shape}; expected "
                "(batch, 4 + classes, anchors). Models with NMS inside the graph "
                "(exported with nms=True) are not supported"
            )

        # One run on a blank input proves the graph runs and fixes the real output layout.
        slots = static_batch or 1
        self._buffer = np.full((slots, 3, h, w), 114 / 255, dtype=np.float32)
        try:
            probe = self._forward(self._buffer)
        except Exception as exc:
            raise ModelError(f"{where} loads but fails to run on a blank input: {exc}") from exc
        num_classes = check_yolo_output(tuple(probe.shape), (h, w), f"{where}, output {out.name}")
        self.class_names: list[str] = parse_class_names(meta.get("names"), num_classes, where)
        if options.classes is not None and any(c >= num_classes for c in options.classes):
            raise ConfigError(
                f"EngineOptions.classes {options.classes} has ids outside the model's "
                f"{num_classes} classes ({where})"
            )

        self._device_input: DeviceInput | None = None
        if device_letterbox and self.provider == "CUDAExecutionProvider":
            self._device_input = self._gpu_input(where)

        self.precision: str = self._model_precision(meta)
        # fp32 is the default ("no conversion asked for"): only a request for a reduced
        # precision that the file does not have deserves a warning.
        if options.precision not in ("fp32", self.precision):
            log.warning(
                "%s: precision=%s asked for, but ONNX Runtime runs the model in the "
                "precision it was exported in (%s)",
                where,
                options.precision,
                self.precision,
            )
        log.info(
            "onnxruntime %s: %s on %s, input %dx%d, %s batch %s, %d classes, %s, "
            "%d intra-op thread(s), letterbox on the %s",
            ort.__version__,
            self.model_path.name,
            self.provider,
            h,
            w,
            "static" if static_batch else "dynamic",
            self.max_batch,
            num_classes,
            self.precision,
            options.intra_op_threads,
            "CPU" if self._device_input is None else "GPU",
        )

    def _gpu_input(self, where: str) -> DeviceInput | None:
        """The device input buffer the GPU letterbox writes, or None (CPU letterbox)."""
        gpu = self.options.gpu if self.options.gpu is not None else 0
        half = self._input_dtype == np.float16
        kernel = try_gpu_letterbox(gpu, self.input_size, half, where)
        if kernel is None:
            return None
        try:
            return DeviceInput(kernel, self.max_batch, np.dtype(self._input_dtype).itemsize)
        except Exception as exc:
            kernel.close()
            log.warning("%s: letterboxing on the CPU: no device input buffer: %s", where, exc)
            return None

    def _model_precision(self, meta: dict[str, str]) -> str:
        if self._input_dtype == np.float16:
            return "fp16"
        if meta.get("onnx.infer") == "onnxruntime.quant":
            return "int8"
        return "fp32"

    def _prepare(self, chunk: Sequence[np.ndarray]) -> tuple[Any, list[Letterbox]]:
        """On the GPU when the device input is there (the kernel has finished on return)."""
        if self._device_input is None:
            return super()._prepare(chunk)
        boxes = self._device_input.letterbox(chunk)
        return DeviceBatch(self.static_batch or len(chunk)), boxes

    def _forward(self, batch: Any) -> np.ndarray:
        if self._session is None:
            raise RuntimeError(f"OnnxEngine for {self.model_path} is closed")
        if isinstance(batch, DeviceBatch) and self._device_input is not None:
            h, w = self.input_size
            io = self._session.io_binding()
            io.bind_input(
                self._input_name,
                self._device_input.device_type,
                self._device_input.gpu,
                self._input_dtype,
                (batch.n, 3, h, w),
                self._device_input.ptr,
            )
            io.bind_output(self._output_name)
            self._session.run_with_iobinding(io)
            return np.asarray(io.copy_outputs_to_cpu()[0])
        feed = batch if self._input_dtype == np.float32 else batch.astype(self._input_dtype)
        result = self._session.run([self._output_name], {self._input_name: feed})[0]
        return np.asarray(result)

    def _close(self) -> None:
        self._session = None
        if self._device_input is not None:
            self._device_input.close()
            self._device_input = None

    def __repr__(self) -> str:
        state = "closed" if self._session is None else self.provider
        return f"OnnxEngine({str(self.model_path)!r}, input={self.input_size}, {state})"
