"""Integration tests of the ONNX Runtime engine: the real YOLO11n model on real footage."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from itsd.engines.base import COCO_NAMES, Detections, Engine, EngineOptions
from itsd.engines.manifest import load_manifest
from itsd.engines.model_source import file_sha256, resolve_model
from itsd.engines.onnx_backend import OnnxEngine
from itsd.engines.registry import create_engine
from itsd.errors import EXIT_CONFIG, ModelError

CAR, TRUCK, PERSON, BICYCLE = 2, 7, 0, 1


def read_frame(path: Path, index: int) -> np.ndarray:
    """Frame `index` of a clip, decoded with PyAV as (H, W, 3) uint8 RGB."""
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                return np.asarray(frame.to_ndarray(format="rgb24"))
    raise AssertionError(f"{path} has fewer than {index + 1} frames")


@pytest.fixture(scope="module")
def engine(model_path: Path) -> OnnxEngine:
    return OnnxEngine(model_path)


@pytest.fixture(scope="module")
def street(media_dir: Path) -> np.ndarray:
    # Frame 200: seven cars in the four lanes, in plain view from above.
    return read_frame(media_dir / "street_overhead_dusk.mp4", 200)


@pytest.fixture(scope="module")
def bikes(media_dir: Path) -> np.ndarray:
    # Frame 120: cyclists on the street, a truck behind them.
    return read_frame(media_dir / "bikes.mp4", 120)


def assert_boxes_sane(det: Detections, frame: np.ndarray) -> None:
    h, w = frame.shape[:2]
    assert det.boxes.dtype == np.float32 and det.boxes.shape == (len(det), 4)
    assert det.scores.dtype == np.float32 and det.class_ids.dtype == np.int32
    x1, y1, x2, y2 = det.boxes.T
    assert np.all((x1 >= 0) & (y1 >= 0) & (x2 <= w) & (y2 <= h)), det.boxes
    assert np.all((x2 - x1 >= 2) & (y2 - y1 >= 2)), det.boxes
    assert np.all((det.scores > 0.25) & (det.scores <= 1.0))
    assert list(det.scores) == sorted(det.scores, reverse=True)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def test_engine_reads_the_model(engine: OnnxEngine) -> None:
    assert isinstance(engine, Engine)
    assert engine.name == "onnxruntime"
    assert engine.input_size == (320, 320)
    assert engine.max_batch == 1 and engine.static_batch == 1
    assert engine.class_names == list(COCO_NAMES)  # read from the model's metadata
    assert engine.class_names[CAR] == "car"
    assert engine.provider == "CPUExecutionProvider"
    assert engine.precision == "int8"


def test_street_from_above_has_several_cars(engine: OnnxEngine, street: np.ndarray) -> None:
    assert street.shape == (360, 640, 3)
    (det,) = engine.infer([street])
    assert_boxes_sane(det, street)
    cars = det.boxes[det.class_ids == CAR]
    assert len(cars) >= 5, det
    widths, heights = cars[:, 2] - cars[:, 0], cars[:, 3] - cars[:, 1]
    # Cars seen from above at this scale: longer than wide, 80..200 px long.
    assert np.all((widths > 80) & (widths < 200)), cars
    assert np.all((heights > 25) & (heights < 100)), cars
    assert np.all(widths > heights)


def test_cars_are_found_at_the_top_and_bottom_of_the_street(
    engine: OnnxEngine, street: np.ndarray
) -> None:
    (det,) = engine.infer([street])
    cars = det.boxes[det.class_ids == CAR]
    centres_y = (cars[:, 1] + cars[:, 3]) / 2
    assert np.sum(centres_y < 100) >= 2, centres_y  # the far lane at the top
    assert np.sum(centres_y > 200) >= 2, centres_y  # the near lane at the bottom


def test_batch_of_mixed_sizes_gives_per_frame_results(
    engine: OnnxEngine, street: np.ndarray, bikes: np.ndarray
) -> None:
    upscaled = cv2.resize(street, (1280, 720), interpolation=cv2.INTER_LINEAR)
    crop = street[100:300, 50:450]  # a non-contiguous view
    frames = [street, bikes, upscaled, crop]
    batch = engine.infer(frames)
    assert len(batch) == len(frames)
    for frame, det in zip(frames, batch, strict=True):
        assert_boxes_sane(det, frame)
        # Same answer as the frame on its own: results follow their frame.
        (alone,) = engine.infer([frame])
        np.testing.assert_array_equal(det.boxes, alone.boxes)
        np.testing.assert_array_equal(det.class_ids, alone.class_ids)
    assert {PERSON, BICYCLE} <= set(batch[1].class_ids.tolist())
    # The same scene at twice the size: the same cars, boxes twice as large.
    small, large = batch[0], batch[2]
    assert np.sum(large.class_ids == CAR) == np.sum(small.class_ids == CAR)
    for box in small.boxes[small.class_ids == CAR]:
        best = max(iou(box, other / 2) for other in large.boxes[large.class_ids == CAR])
        assert best > 0.9


def test_class_filter_keeps_only_asked_classes(model_path: Path, bikes: np.ndarray) -> None:
    with OnnxEngine(model_path, EngineOptions(classes=(BICYCLE,))) as only_bikes:
        (det,) = only_bikes.infer([bikes])
    assert len(det) >= 1 and set(det.class_ids.tolist()) == {BICYCLE}


def test_two_threads_give_the_same_detections(
    engine: OnnxEngine, model_path: Path, street: np.ndarray
) -> None:
    with OnnxEngine(model_path, EngineOptions(intra_op_threads=2)) as two:
        (det2,) = two.infer([street])
    (det1,) = engine.infer([street])
    np.testing.assert_array_equal(det1.class_ids, det2.class_ids)
    np.testing.assert_allclose(det1.boxes, det2.boxes, atol=0.5)


def test_create_engine_auto_builds_onnxruntime(model_path: Path, street: np.ndarray) -> None:
    engine = create_engine(model_path, "auto", EngineOptions(confidence=0.5))
    try:
        assert isinstance(engine, OnnxEngine)
        (det,) = engine.infer([street])
        assert len(det) >= 1 and np.all(det.scores > 0.5)
    finally:
        engine.close()


def test_resolve_model_finds_the_test_model_by_name_and_checks_its_hash(model_path: Path) -> None:
    entry = load_manifest().files.get(model_path.name)
    if entry is None:
        pytest.skip(f"{model_path.name} is not a file listed in the manifest")
    assert file_sha256(model_path) == entry.sha256
    assert resolve_model(model_path.name, cache_dir=model_path.parent) == model_path
    assert resolve_model(str(model_path)) == model_path


@pytest.mark.parametrize("kind", ["random", "truncated", "empty"])
def test_corrupt_model_is_a_model_error(model_path: Path, tmp_path: Path, kind: str) -> None:
    bad = tmp_path / f"{kind}.onnx"
    data = model_path.read_bytes()
    content = {
        "random": np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes(),
        "truncated": data[: len(data) // 2],
        "empty": b"",
    }[kind]
    bad.write_bytes(content)
    with pytest.raises(ModelError, match="cannot load ONNX model") as info:
        OnnxEngine(bad)
    assert str(bad) in str(info.value)
    assert info.value.exit_code == EXIT_CONFIG
