"""The registry: choice by file type, the CPU fallback, the test-only fault injection."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from itsd.engines.base import EngineOptions
from itsd.engines.faults import FaultyEngine
from itsd.engines.onnx_backend import OnnxEngine
from itsd.engines.registry import (
    available_backends,
    backend_for_suffix,
    choose_backend,
    create_cpu_fallback,
    create_engine,
)
from itsd.errors import ConfigError, ModelError


def test_backend_for_suffix_and_availability() -> None:
    assert [backend_for_suffix(s) for s in (".onnx", ".pt", ".engine", ".tflite")] == [
        "onnxruntime",
        "torch",
        "tensorrt",
        None,
    ]
    assert available_backends()["onnxruntime"] == "available"


def test_choose_backend(model_path: Path) -> None:
    assert choose_backend(model_path, "auto") == "onnxruntime"
    assert choose_backend(model_path, "onnxruntime") == "onnxruntime"
    with pytest.raises(ModelError, match=r"backend torch loads \.pt files"):
        choose_backend(model_path, "torch")


def test_cpu_fallback_of_an_engine_file_is_its_onnx_twin(model_path: Path, tmp_path: Path) -> None:
    engine_file = tmp_path / "m.engine"
    engine_file.write_bytes(b"serialized")
    with pytest.raises(ModelError, match=r"no CPU fallback .*m\.onnx"):
        create_cpu_fallback(engine_file, EngineOptions(gpu=0))
    shutil.copy(model_path, tmp_path / "m.onnx")
    fallback = create_cpu_fallback(engine_file, EngineOptions(gpu=0, precision="fp16"))
    assert isinstance(fallback, OnnxEngine) and fallback.provider == "CPUExecutionProvider"
    fallback.close()


def test_fault_injection_wraps_the_real_engine(
    model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ITSD_TEST_ENGINE_FAULTS", "oom:1:1")
    engine = create_engine(model_path, "auto", EngineOptions())
    assert isinstance(engine, FaultyEngine) and engine.name == "onnxruntime"
    frame = np.zeros((64, 64, 3), np.uint8)
    assert len(engine.infer([frame])) == 1
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        engine.infer([frame])
    assert len(engine.infer([frame])) == 1
    # The CPU fallback is never wrapped.
    assert isinstance(create_cpu_fallback(model_path, EngineOptions()), OnnxEngine)
    monkeypatch.setenv("ITSD_TEST_ENGINE_FAULTS", "gpu")
    with pytest.raises(ConfigError, match="ITSD_TEST_ENGINE_FAULTS"):
        create_engine(model_path, "auto", EngineOptions())
