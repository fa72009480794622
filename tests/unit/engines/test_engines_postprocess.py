"""Unit tests of the shared postprocess: NMS on hand-made boxes, decode of synthetic outputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from itsd.engines.base import EngineOptions
from itsd.engines.postprocess import batched_nms, decode_yolo, nms
from itsd.engines.preprocess import letterbox_params


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _naive_nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep: list[int] = []
    for i in order:
        if all(_iou(boxes[i], boxes[k]) <= iou for k in keep):
            keep.append(i)
    return keep


def test_nms_drops_overlapping_lower_score_box() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.8, 0.9, 0.7], np.float32)
    assert nms(boxes, scores, 0.45).tolist() == [1, 2]


def test_nms_keeps_boxes_at_or_below_threshold() -> None:
    # IoU of these two is exactly 1/3.
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    assert nms(boxes, scores, 1 / 3 + 1e-6).tolist() == [0, 1]
    assert nms(boxes, scores, 0.3).tolist() == [0]


def test_nms_empty_and_ties() -> None:
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).size == 0
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    assert nms(boxes, np.array([0.5, 0.5], np.float32), 0.5).tolist() == [0]


def test_nms_survives_degenerate_boxes() -> None:
    boxes = np.array([[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10]], np.float32)
    keep = nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), 0.5)
    assert keep.tolist() == [0, 1, 2]


def test_batched_nms_keeps_overlapping_boxes_of_different_classes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    classes = np.array([2, 7, 2], np.int32)  # a car, a truck on it, a duplicate car
    assert batched_nms(boxes, scores, classes, 0.45).tolist() == [0, 1]


@settings(max_examples=100, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.integers(0, 90), st.integers(0, 90), st.integers(1, 40), st.integers(1, 40),
            st.floats(0.01, 1.0),
        ),
        max_size=40,
    ),
    iou=st.floats(0.1, 0.9),
)  # fmt: skip
def test_nms_matches_naive_greedy_reference(
    data: list[tuple[int, int, int, int, float]], iou: float
) -> None:
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h, _ in data], np.float32).reshape(-1, 4)
    scores = np.array([s for *_, s in data], np.float32)
    assert nms(boxes, scores, iou).tolist() == _naive_nms(boxes, scores, iou)


def _output(
    anchors: list[tuple[float, float, float, float, int, float]], nc: int = 80
) -> np.ndarray:
    """A synthetic (4 + nc, A) head output: given anchors, then zero-score padding anchors."""
    total = len(anchors) + 10
    out = np.zeros((4 + nc, total), np.float32)
    out[:4, len(anchors) :] = 5.0  # tiny boxes with no class score
    for a, (cx, cy, w, h, cls, score) in enumerate(anchors):
        out[:4, a] = (cx, cy, w, h)
        out[4 + cls, a] = score
        out[4 + (cls + 1) % nc, a] = score / 2  # a weaker second class must not win
    return out


def test_nms_matrix_and_loop_ways_keep_the_same_boxes(monkeypatch: pytest.MonkeyPatch) -> None:
    """NMS computes the IoU matrix at once up to NMS_MATRIX_LIMIT boxes and loops
    beyond: both keep the same boxes in the same order, ties in score included."""
    from itsd.engines import postprocess

    rng = np.random.default_rng(4)
    for n, tied in ((300, False), (300, True), (60, True)):
        centres = rng.uniform(0, 300, (n, 2)).astype(np.float32)
        sizes = rng.uniform(5, 80, (n, 2)).astype(np.float32)
        boxes = np.concatenate((centres - sizes / 2, centres + sizes / 2), axis=1)
        scores = (
            rng.choice(np.linspace(0.3, 1, 20), n) if tied else rng.uniform(0.3, 1, n)
        ).astype(np.float32)
        matrix = nms(boxes, scores, 0.45)
        monkeypatch.setattr(postprocess, "NMS_MATRIX_LIMIT", 0)
        loop = nms(boxes, scores, 0.45)
        monkeypatch.undo()
        assert 0 < len(matrix) < n
        np.testing.assert_array_equal(matrix, loop)


def test_decode_yolo_filters_suppresses_and_maps_to_frame() -> None:
    lb = letterbox_params(360, 640, 320, 320)  # scale 0.5, pad_y 70
    out = _output([
        (100, 100, 40, 20, 2, 0.9),   # car
        (101, 100, 40, 20, 2, 0.6),   # duplicate car -> suppressed
        (101, 100, 40, 20, 7, 0.5),   # truck at the same place -> kept (class-aware)
        (200, 200, 20, 20, 0, 0.2),   # below confidence -> dropped
    ])  # fmt: skip
    det = decode_yolo(out, lb, 360, 640, EngineOptions())
    assert len(det) == 2
    assert det.class_ids.tolist() == [2, 7]
    np.testing.assert_allclose(det.scores, [0.9, 0.5])
    # letterbox (80, 90, 120, 110) -> frame ((80-0)/0.5, (90-70)/0.5, ...)
    np.testing.assert_allclose(det.boxes[0], [160, 40, 240, 80], atol=1e-4)
    assert det.boxes.dtype == np.float32 and det.scores.dtype == np.float32
    assert det.class_ids.dtype == np.int32


def test_decode_yolo_class_filter_and_max_detections() -> None:
    lb = letterbox_params(320, 320, 320, 320)
    out = _output([(20 + 40 * i, 50, 10, 10, 2 if i % 2 else 0, 0.5 + i / 100) for i in range(6)])
    det = decode_yolo(out, lb, 320, 320, EngineOptions(classes=(2,)))
    assert det.class_ids.tolist() == [2, 2, 2]
    assert list(det.scores) == sorted(det.scores, reverse=True)
    det = decode_yolo(out, lb, 320, 320, EngineOptions(max_detections=2))
    assert len(det) == 2 and det.scores[0] == pytest.approx(0.55)


def test_decode_yolo_clips_boxes_to_the_frame() -> None:
    lb = letterbox_params(360, 640, 320, 320)
    out = _output([(5, 75, 30, 30, 2, 0.9)])  # sticks out of the image area into the border
    det = decode_yolo(out, lb, 360, 640, EngineOptions())
    # letterbox (-10, 60, 20, 90) -> frame (-20, -20, 40, 40), clipped at 0
    np.testing.assert_allclose(det.boxes[0], [0, 0, 40, 40], atol=1e-4)


def test_decode_yolo_accepts_batch_axis_of_one_and_other_class_counts() -> None:
    lb = letterbox_params(320, 320, 320, 320)
    out = _output([(100, 100, 20, 20, 1, 0.8)], nc=3)[None]
    det = decode_yolo(out, lb, 320, 320, EngineOptions())
    assert det.class_ids.tolist() == [1]


def test_decode_yolo_nothing_above_confidence_gives_empty() -> None:
    lb = letterbox_params(320, 320, 320, 320)
    det = decode_yolo(_output([(100, 100, 20, 20, 1, 0.2)]), lb, 320, 320, EngineOptions())
    assert len(det) == 0 and det.boxes.shape == (0, 4)


def test_decode_yolo_rejects_malformed_output_and_size_mismatch() -> None:
    lb = letterbox_params(320, 320, 320, 320)
    with pytest.raises(ValueError, match=r"\(4 \+ classes, anchors\)"):
        decode_yolo(np.zeros((4, 100), np.float32), lb, 320, 320, EngineOptions())
    with pytest.raises(ValueError, match="does not match the letterbox"):
        decode_yolo(_output([]), lb, 100, 320, EngineOptions())
