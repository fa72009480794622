"""Unit tests of ``prepare_for_gpu`` (``model.tensorrt``): when an inference worker builds
and runs a cached TensorRT engine instead of the file it was given.

TensorRT cannot be installed on these machines, so the build itself is stood in for by a
fake ``export_model`` here; what is tested is the decision around it and that a failed
build never stops the worker.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from itsd.engines import models
from itsd.engines.models import ModelInfo, prepare_for_gpu
from itsd.errors import ModelError


@pytest.fixture
def trt_present(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """TensorRT 'installed'; export_model records its calls and 'builds' an engine."""
    from itsd.engines import registry

    monkeypatch.setattr(registry, "missing_packages", lambda backend: [])
    calls: list[dict[str, Any]] = []

    def fake_export(
        spec: str,
        fmt: str,
        precision: str = "fp32",
        imgsz: int = 640,
        batch: int = 0,
        cache: Path | None = None,
        **_: Any,
    ) -> ModelInfo:
        calls.append(
            {"spec": spec, "fmt": fmt, "precision": precision, "imgsz": imgsz, "batch": batch}
        )
        return ModelInfo("k.engine", "engine", None, None, None, None, "0" * 64, "built")

    monkeypatch.setattr(models, "export_model", fake_export)
    return calls


def test_left_alone_without_gpu_or_when_off(model_path: Path, tmp_path: Path) -> None:
    for kwargs in (
        {"gpu": None},
        {"gpu": 0, "enabled": False},
        {"gpu": 0, "backend": "onnxruntime"},
    ):
        args: dict[str, Any] = {"backend": "auto", "enabled": True, **kwargs}
        out = prepare_for_gpu(
            model_path, args["backend"], "fp16", args["gpu"], 32, args["enabled"], tmp_path
        )
        assert out == (model_path, args["backend"])
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    assert prepare_for_gpu(engine, "auto", "fp16", 0, 32, True, tmp_path) == (engine, "auto")


def test_without_tensorrt_the_model_runs_as_it_is(
    model_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from itsd.engines.registry import missing_packages

    if not missing_packages("tensorrt"):
        pytest.skip("TensorRT is installed here")
    with caplog.at_level(logging.INFO, logger="itsd.engines.models"):
        assert prepare_for_gpu(model_path, "auto", "fp16", 0, 32, True, tmp_path) == (
            model_path,
            "auto",
        )
    assert "TensorRT is not installed here" in caplog.text


def test_onnx_becomes_a_cached_engine(
    model_path: Path, tmp_path: Path, trt_present: list[dict[str, Any]]
) -> None:
    out = prepare_for_gpu(model_path, "auto", "int8", 0, 32, True, tmp_path)
    assert out == (tmp_path / "k.engine", "tensorrt")
    # The real model is 320x320 with a static batch of 1; int8 needs calibration: fp16.
    assert trt_present == [
        {"spec": str(model_path), "fmt": "engine", "precision": "fp16", "imgsz": 320, "batch": 1}
    ]


def test_a_failed_build_keeps_the_worker_on_its_file(
    model_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    trt_present: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*_: Any, **__: Any) -> ModelInfo:
        raise ModelError("TensorRT failed to build an engine from m.onnx")

    monkeypatch.setattr(models, "export_model", broken)
    with caplog.at_level(logging.ERROR, logger="itsd.engines.models"):
        out = prepare_for_gpu(model_path, "tensorrt", "fp16", 0, 32, True, tmp_path)
    assert out == (model_path, "tensorrt")
    assert "no engine for" in caplog.text and "failed to build" in caplog.text
