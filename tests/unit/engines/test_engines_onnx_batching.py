"""Unit tests of OnnxEngine's model checks and batching, with a stand-in ONNX Runtime session.

The real model is static batch 1; dynamic-batch, static-batch-N, fp16 and malformed models
are not available offline, so a fake session plays them here. Real inference is covered
by tests/integration/engines/test_engines_onnx_real.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from itsd.engines import onnx_backend
from itsd.engines.base import COCO_NAMES, Engine, EngineOptions
from itsd.engines.onnx_backend import DEFAULT_OPTIONS, OnnxEngine, parse_class_names
from itsd.errors import ConfigError, ModelError

NAMES_3 = "{0: 'car', 1: 'bus', 2: 'truck'}"


class FakeSession:
    """Plays a YOLO export: for each image, one box whose class is the image's centre value.

    Frames filled with value k come out as one detection of class k (k < classes), so the
    results show which frame went where.
    """

    spec: dict[str, Any] = {}
    runs: list[tuple[tuple[int, ...], np.dtype[Any]]] = []

    def __init__(self, path: str, options: Any, providers: list[str]) -> None:
        self.providers = providers

    def get_providers(self) -> list[str]:
        return list(self.providers)

    def get_inputs(self) -> list[SimpleNamespace]:
        s = self.spec
        return [
            SimpleNamespace(name="images", shape=s["input"], type=s.get("type", "tensor(float)"))
        ]

    def get_outputs(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name="output0", shape=self.spec.get("output_shape", ["b", 7, "a"]))]

    def get_modelmeta(self) -> SimpleNamespace:
        return SimpleNamespace(custom_metadata_map=self.spec.get("meta", {}))

    def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = feed["images"]
        FakeSession.runs.append((x.shape, x.dtype))
        if "fail" in self.spec:
            raise RuntimeError(self.spec["fail"])
        if "raw_output" in self.spec:
            return [self.spec["raw_output"](x)]
        n, _, h, w = x.shape
        nc = self.spec.get("classes", 3)
        anchors = sum((h // s) * (w // s) for s in (8, 16, 32))
        out = np.zeros((n, 4 + nc, anchors), np.float32)
        for i in range(n):
            k = round(float(x[i, 0, h // 2, w // 2]) * 255)
            out[i, :4, 0] = (w / 2, h / 2, 10, 10)
            if k < nc:
                out[i, 4 + k, 0] = 0.9
        return [out]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    FakeSession.spec = {}
    FakeSession.runs = []
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    model = tmp_path / "fake.onnx"
    model.write_bytes(b"fake")

    def make(options: EngineOptions = DEFAULT_OPTIONS, **spec: Any) -> OnnxEngine:
        FakeSession.spec = {"meta": {"names": NAMES_3}, **spec}
        return OnnxEngine(model, options)

    return make


def _frames(values: list[int], size: tuple[int, int] = (48, 64)) -> list[np.ndarray]:
    return [np.full((*size, 3), v, np.uint8) for v in values]


def test_dynamic_batch_runs_whole_chunks_in_order(fake: Any) -> None:
    engine = fake(
        input=["batch", 3, "height", "width"], meta={"names": NAMES_3, "imgsz": "[64, 96]"}
    )
    assert engine.input_size == (64, 96) and engine.max_batch == 32 and engine.static_batch is None
    values = [i % 4 for i in range(40)]  # value 3 is not a class: no detection
    results = engine.infer(_frames(values))
    assert [r.class_ids.tolist() for r in results] == [[v] if v < 3 else [] for v in values]
    assert [shape[0] for shape, _ in FakeSession.runs] == [1, 32, 8]  # probe, then 40 frames


def test_dynamic_size_without_imgsz_uses_640(fake: Any) -> None:
    engine = fake(input=["batch", 3, "height", "width"])
    assert engine.input_size == (640, 640)


def test_static_batch_n_runs_full_batches(fake: Any) -> None:
    engine = fake(input=[4, 3, 32, 32])
    assert engine.max_batch == 4 and engine.static_batch == 4
    results = engine.infer(_frames([0, 1, 2, 0, 1, 2]))
    assert [r.class_ids.tolist() for r in results] == [[0], [1], [2], [0], [1], [2]]
    assert [shape for shape, _ in FakeSession.runs] == [(4, 3, 32, 32)] * 3


def test_frames_of_different_sizes_map_back_to_their_own_frame(fake: Any) -> None:
    engine = fake(input=[1, 3, 32, 32])
    small, wide = _frames([1], (16, 16))[0], _frames([2], (20, 80))[0]
    r_small, r_wide = engine.infer([small, wide])
    # One 10x10 box (11..21) in the middle of the 32x32 input, mapped back to each frame:
    # scale 2 for the small frame; scale 0.4 and 12 rows of border for the wide one.
    np.testing.assert_allclose(r_small.boxes, [[5.5, 5.5, 10.5, 10.5]], atol=1e-4)
    np.testing.assert_allclose(r_wide.boxes, [[27.5, 0, 52.5, 20]], atol=1e-4)


def test_fp16_input_is_fed_as_float16(fake: Any) -> None:
    engine = fake(input=[1, 3, 32, 32], type="tensor(float16)")
    assert engine.precision == "fp16"
    assert engine.infer(_frames([2]))[0].class_ids.tolist() == [2]
    assert {dtype for _, dtype in FakeSession.runs} == {np.dtype(np.float16)}


def test_empty_input_and_bad_frame(fake: Any) -> None:
    engine = fake(input=[1, 3, 32, 32])
    assert engine.infer([]) == []
    with pytest.raises(ValueError, match="frame 1"):
        engine.infer([_frames([0])[0], np.zeros((10, 10), np.uint8)])


def test_close_and_context_manager(fake: Any) -> None:
    with fake(input=[1, 3, 32, 32]) as engine:
        assert isinstance(engine, Engine)
        assert engine.name == "onnxruntime"
    with pytest.raises(RuntimeError, match="closed"):
        engine.infer(_frames([0]))
    engine.close()  # closing twice is harmless


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"input": [1, 3, 32]}, "must be NCHW"),
        ({"input": [1, 1, 32, 32]}, "3 channels"),
        ({"input": [1, 3, 32, 32], "type": "tensor(uint8)"}, "expected float or float16"),
        ({"input": [1, 3, 32, 32], "output_shape": [1, 300, 6, 1]}, "expected"),
        ({"input": [1, 3, 32, 32], "output_shape": [1, 4, 21]}, "nms=True"),
        (
            {"input": [1, 3, 32, 32], "raw_output": lambda x: np.zeros((1, 21, 7), np.float32)},
            "Transposed outputs",
        ),
        (
            {"input": [1, 3, 32, 32], "raw_output": lambda x: np.zeros((1, 300, 6), np.float32)},
            "NMS inside the graph",
        ),
        ({"input": [1, 3, 32, 32], "fail": "kernel exploded"}, "fails to run.*kernel exploded"),
        ({"input": [1, 3, 32, 32], "classes": 4}, "lists 3 class names but the output has 4"),
    ],
)
def test_unusable_models_are_model_errors(fake: Any, spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelError, match=message) as info:
        fake(**spec)
    assert "fake.onnx" in str(info.value)


def test_class_filter_outside_the_model_is_a_config_error(fake: Any) -> None:
    with pytest.raises(ConfigError, match="outside the model's 3 classes"):
        fake(EngineOptions(classes=(2, 5)), input=[1, 3, 32, 32])


def test_unavailable_provider_is_refused(fake: Any, tmp_path: Path) -> None:
    FakeSession.spec = {"input": [1, 3, 32, 32]}
    with pytest.raises(ModelError, match=r"NoSuchExecutionProvider.*not available"):
        OnnxEngine(tmp_path / "fake.onnx", providers=["NoSuchExecutionProvider"])


def test_cpu_is_used_without_a_gpu(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_backend, "gpu_present", lambda: False)
    assert onnx_backend.default_providers() == ["CPUExecutionProvider"]
    monkeypatch.setattr(
        ort,
        "get_available_providers",
        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    assert onnx_backend.default_providers() == ["CPUExecutionProvider"]
    monkeypatch.setattr(onnx_backend, "gpu_present", lambda: True)
    assert onnx_backend.default_providers()[0] == "CUDAExecutionProvider"


def test_reduced_precision_request_is_logged_not_pretended(
    fake: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="itsd.engines.onnx_backend"):
        engine = fake(EngineOptions(precision="fp16"), input=[1, 3, 32, 32])
    assert engine.precision == "fp32"
    assert "precision=fp16 asked for" in caplog.text


def test_parse_class_names() -> None:
    assert parse_class_names("['a', 'b']", 2, "m") == ["a", "b"]
    assert parse_class_names("{1: 'b', 0: 'a'}", 2, "m") == ["a", "b"]
    assert parse_class_names(None, 80, "m") == list(COCO_NAMES)
    assert parse_class_names(None, 2, "m") == ["class_0", "class_1"]
    with pytest.raises(ModelError, match="not a Python literal"):
        parse_class_names("{0: person", 1, "m")
    with pytest.raises(ModelError, match=r"keys must be 0\.\.n-1"):
        parse_class_names("{0: 'a', 2: 'b'}", 2, "m")


def test_providers_follow_the_gpu_option(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert onnx_backend.providers_for(None, "m") == ["CPUExecutionProvider"]
    monkeypatch.setattr(onnx_backend, "gpu_present", lambda: True)
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert onnx_backend.providers_for(None, "m") == ["CPUExecutionProvider"]  # CPU asked
    assert onnx_backend.providers_for(1, "m")[0] == ("CUDAExecutionProvider", {"device_id": 1})
    monkeypatch.setattr(onnx_backend, "gpu_present", lambda: False)
    with caplog.at_level("WARNING"):
        assert onnx_backend.providers_for(0, "m") == ["CPUExecutionProvider"]
    assert "GPU 0 was asked for" in caplog.text
