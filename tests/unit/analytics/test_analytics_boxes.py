"""Vectorised IoU and box conversions, checked against a plain per-pair computation."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from itsd.analytics.boxes import cxcywh_to_xyxy, iou_matrix, xyxy_to_cxcywh


def _iou_one(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


_coord = st.floats(0.0, 200.0, allow_nan=False)
_box = st.tuples(_coord, _coord, st.floats(0.0, 80.0), st.floats(0.0, 80.0)).map(
    lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_box, max_size=6), st.lists(_box, max_size=6))
def test_iou_matrix_matches_pairwise_definition(a: list[list[float]], b: list[list[float]]) -> None:
    got = iou_matrix(np.array(a).reshape(-1, 4), np.array(b).reshape(-1, 4))
    assert got.shape == (len(a), len(b))
    for i, box_a in enumerate(a):
        for j, box_b in enumerate(b):
            assert abs(got[i, j] - _iou_one(box_a, box_b)) < 1e-9
    assert ((got >= 0.0) & (got <= 1.0)).all()


def test_iou_known_values() -> None:
    a = np.array([[0, 0, 10, 10]], dtype=np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 8]])
    got = iou_matrix(a, b)
    np.testing.assert_allclose(got, [[1.0, 50 / 150, 0.0, 0.0]])
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 4)


def test_box_conversions_round_trip() -> None:
    xyxy = np.array([[10.0, 20.0, 50.0, 100.0], [0.0, 0.0, 1.0, 1.0]])
    cxcywh = xyxy_to_cxcywh(xyxy)
    np.testing.assert_allclose(cxcywh[0], [30.0, 60.0, 40.0, 80.0])
    np.testing.assert_allclose(cxcywh_to_xyxy(cxcywh), xyxy)
