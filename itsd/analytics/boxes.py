"""Vectorised box geometry for the tracker: IoU matrices and box format conversions.

Boxes are ``(N, 4)`` arrays of ``x_min, y_min, x_max, y_max`` in frame pixels. Every
function here works on whole arrays at once; none may loop over box pairs in Python,
because the tracker calls them for every frame of every camera. This module must never
import anything else from itsd.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def iou_matrix(a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
    """Intersection over union of every box of ``a`` (N, 4) with every box of ``b`` (M, 4).

    Returns an (N, M) float64 array in [0, 1]. Degenerate boxes (zero or negative width or
    height) have IoU 0 with everything, including themselves.
    """
    aa = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    bb = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if aa.shape[0] == 0 or bb.shape[0] == 0:
        return np.zeros((aa.shape[0], bb.shape[0]), dtype=np.float64)
    area_a = np.clip(aa[:, 2] - aa[:, 0], 0.0, None) * np.clip(aa[:, 3] - aa[:, 1], 0.0, None)
    area_b = np.clip(bb[:, 2] - bb[:, 0], 0.0, None) * np.clip(bb[:, 3] - bb[:, 1], 0.0, None)
    iw = np.minimum(aa[:, None, 2], bb[None, :, 2]) - np.maximum(aa[:, None, 0], bb[None, :, 0])
    ih = np.minimum(aa[:, None, 3], bb[None, :, 3]) - np.maximum(aa[:, None, 1], bb[None, :, 1])
    inter = np.clip(iw, 0.0, None) * np.clip(ih, 0.0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    out: FloatArray = np.zeros(inter.shape, dtype=np.float64)
    np.divide(inter, union, out=out, where=union > 0.0)
    return out


def xyxy_to_cxcywh(boxes: npt.ArrayLike) -> FloatArray:
    """``x_min, y_min, x_max, y_max`` -> ``centre x, centre y, width, height`` (float64)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.empty_like(b)
    out[:, 0] = (b[:, 0] + b[:, 2]) * 0.5
    out[:, 1] = (b[:, 1] + b[:, 3]) * 0.5
    out[:, 2] = b[:, 2] - b[:, 0]
    out[:, 3] = b[:, 3] - b[:, 1]
    return out


def cxcywh_to_xyxy(boxes: npt.ArrayLike) -> FloatArray:
    """``centre x, centre y, width, height`` -> ``x_min, y_min, x_max, y_max`` (float64)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    half_w = b[:, 2] * 0.5
    half_h = b[:, 3] * 0.5
    return np.stack(
        (b[:, 0] - half_w, b[:, 1] - half_h, b[:, 0] + half_w, b[:, 1] + half_h), axis=1
    )
