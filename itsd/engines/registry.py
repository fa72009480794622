"""The one place a backend is chosen and built: model file + backend name + hardware -> Engine.

`choose_backend` resolves "auto" by file type (.onnx -> onnxruntime, .pt -> torch,
.engine -> tensorrt) and checks that the chosen backend loads that file type and is
installed here; the hardware decides the device inside each backend (ONNX Runtime takes
the CUDA provider when onnxruntime-gpu and a GPU are present and a GPU is asked for;
PyTorch runs on CUDA when torch sees the GPU, else on the CPU; TensorRT needs a GPU).
`create_engine` builds it; `create_cpu_fallback` builds the CPU engine the inference
stage falls back to while its circuit breaker is open.

Test-only fault injection: when the environment variable ``ITSD_TEST_ENGINE_FAULTS`` is
set (see `itsd.engines.faults`), `create_engine` wraps the real engine in a
`FaultyEngine` that fails as told. It exists for the tests of the circuit breaker; a
production daemon never has it set, and the CPU fallback is never wrapped.

This module must never import torch, tensorrt or ultralytics at import time (the
backends that need them are imported when chosen), and never return an engine for a
backend that is not really there.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

from itsd.engines.base import Engine, EngineOptions
from itsd.engines.faults import FAULTS_ENV, FaultyEngine, parse_faults
from itsd.engines.model_source import BACKEND_SUFFIX, BACKENDS, MODEL_SUFFIXES, package_available
from itsd.errors import ModelError

log = logging.getLogger(__name__)

#: Packages each optional backend needs (import names).
REQUIRED_PACKAGES: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("onnxruntime",),
    "torch": ("torch", "ultralytics"),
    "tensorrt": ("tensorrt", "cuda"),
}


def backend_for_suffix(suffix: str) -> str | None:
    """The backend that loads files ending in `suffix` (".onnx" ...), or None."""
    return next((name for name, s in BACKEND_SUFFIX.items() if s == suffix), None)


def missing_packages(backend: str) -> list[str]:
    """The packages `backend` needs that are not installed here."""
    return [p for p in REQUIRED_PACKAGES.get(backend, ()) if not package_available(p)]


def available_backends() -> dict[str, str]:
    """Each backend and whether it can run here: "available" or why not."""
    out: dict[str, str] = {}
    for name in BACKEND_SUFFIX:
        missing = missing_packages(name)
        out[name] = f"missing {', '.join(missing)}" if missing else "available"
    return out


def choose_backend(model: Path, backend: str) -> str:
    """The backend that runs `model`: `backend`, or the file type's one for "auto".

    Raises ModelError for an unknown backend, a missing file, a file type the backend
    does not load, or a backend whose packages are not installed (saying which).
    """
    if backend not in BACKENDS:
        raise ModelError(
            f"unknown inference backend {backend!r}; choose one of {', '.join(BACKENDS)}"
        )
    model = Path(model)
    if not model.is_file():
        raise ModelError(f"model file {model} does not exist")
    chosen = backend
    if backend == "auto":
        by_suffix = backend_for_suffix(model.suffix)
        if by_suffix is None:
            raise ModelError(
                f"cannot pick a backend for {model}: the file name must end in "
                f"{', '.join(MODEL_SUFFIXES)} (or name the backend explicitly)"
            )
        chosen = by_suffix
    expected = BACKEND_SUFFIX[chosen]
    if model.suffix != expected:
        hint = (
            f"; export it with `itsd models export {model.name} --format onnx`"
            f" (or `yolo export model={model.name} format=onnx`)"
            if chosen == "onnxruntime" and model.suffix == ".pt"
            else ""
        )
        raise ModelError(f"backend {chosen} loads {expected} files, got {model}{hint}")
    missing = missing_packages(chosen)
    if missing:
        raise ModelError(
            f"backend {chosen} is unavailable: package(s) {', '.join(missing)} not installed. "
            + (
                "Install the extra `itsd[torch]` (the CPU build of torch first on machines "
                "without a GPU), or export the model to ONNX and use backend onnxruntime"
                if chosen == "torch"
                else "Export the model to ONNX and use backend onnxruntime instead"
            )
        )
    return chosen


def _build(model: Path, chosen: str, options: EngineOptions) -> Engine:
    if chosen == "onnxruntime":
        from itsd.engines.onnx_backend import OnnxEngine

        return OnnxEngine(model, options)
    # Optional backends: imported only when chosen (they import torch/tensorrt lazily too).
    module = importlib.import_module(f"itsd.engines.{chosen}_backend")
    engine: Engine = module.load(model, options)
    return engine


def create_engine(model: Path, backend: str, options: EngineOptions) -> Engine:
    """Build the engine for a model file. backend: "auto" | "onnxruntime" | "torch" | "tensorrt".

    Raises ModelError for an unknown backend, a file the backend cannot load, or a
    backend that is not available here (saying why). With ``ITSD_TEST_ENGINE_FAULTS``
    set, the engine is wrapped in the test-only `FaultyEngine`.
    """
    model = Path(model)
    chosen = choose_backend(model, backend)
    engine = _build(model, chosen, options)
    spec = os.environ.get(FAULTS_ENV, "").strip()
    if spec:
        log.warning(
            "%s is set: engine %s fails on purpose (%s); this is for tests only",
            FAULTS_ENV,
            engine.name,
            spec,
        )
        return FaultyEngine(engine, parse_faults(spec))
    return engine


def create_cpu_fallback(model: Path, options: EngineOptions) -> Engine:
    """A CPU engine for the same model file, for when the GPU backend keeps failing.

    ONNX and PyTorch files run on the CPU with their own backend; a TensorRT engine
    cannot: its ONNX twin (same stem, ``.onnx``, in the same folder) is used when it is
    there. Raises ModelError when no CPU engine can be made. Never fault-injected.
    """
    model = Path(model)
    cpu = EngineOptions(
        confidence=options.confidence,
        iou=options.iou,
        max_detections=options.max_detections,
        precision="fp32",
        intra_op_threads=options.intra_op_threads,
        classes=options.classes,
        gpu=None,
        max_batch=options.max_batch,
    )
    if model.suffix == ".engine":
        twin = model.with_suffix(".onnx")
        if not twin.is_file():
            raise ModelError(
                f"no CPU fallback for TensorRT engine {model}: put its ONNX export at {twin}"
            )
        model = twin
    chosen = choose_backend(model, "auto")
    return _build(model, chosen, cpu)
