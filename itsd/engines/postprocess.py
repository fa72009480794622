"""The one postprocess every backend shares: raw YOLO output to per-frame detections.

Input is one image's raw head output in the YOLOv8/YOLO11 layout, (4 + nc, A): rows 0-3
are cx, cy, w, h in model-input pixels, the other rows are class scores (no objectness).
Steps, as Ultralytics' `non_max_suppression` with multi_label=False: best class per
anchor -> confidence filter (score > confidence) -> class filter -> class-aware greedy NMS
-> at most max_detections -> boxes back to frame pixels, clipped.

`decode_yolo` takes the full head output (ONNX Runtime, TensorRT). `decode_candidates`
takes an output a backend has already reduced on its device to the few rows that can
pass (best class score and class per anchor, best scores first: the PyTorch backend),
so that only kilobytes cross to the host; both run the same steps after the
confidence filter (`_select`) and give the same detections.

Vectorised numpy only. This module must never import torch/torchvision or a backend
library, and never draw or track: it turns tensors into `Detections` and nothing else.
"""

from __future__ import annotations

import numpy as np

from itsd.engines.base import Detections, EngineOptions
from itsd.engines.preprocess import Letterbox, boxes_to_frame

#: Most candidates that enter NMS (best scores first), as Ultralytics' max_nms.
MAX_NMS_CANDIDATES = 30000
#: Offset per class id that keeps boxes of different classes apart in class-aware NMS
#: (larger than any model input side), as Ultralytics' max_wh.
_CLASS_OFFSET = 7680.0


#: Up to this many boxes NMS computes the whole IoU matrix at once (4 MB at the limit)
#: and its greedy pass only ORs rows: about 15x faster than the loop below at 150
#: boxes (measured on a 2-core x86-64 with numpy), slower beyond a few thousand.
NMS_MATRIX_LIMIT = 1024


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns the indices kept, by descending score.

    boxes: (N, 4) xyxy; scores: (N,). A box is dropped when its IoU with a kept,
    higher-scoring box is above `iou` (as torchvision.ops.nms). Ties in score keep the
    lower index first. Class-agnostic: see `batched_nms` for the class-aware form.
    Both ways below compute each IoU with the same float32 operations: same result.
    """
    n = int(scores.shape[0])
    if n == 0:
        return np.zeros((0,), dtype=np.intp)
    order = np.argsort(-np.asarray(scores, dtype=np.float32), kind="stable")
    b = np.asarray(boxes, dtype=np.float32)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)
    if n <= NMS_MATRIX_LIMIT:
        x1, y1, x2, y2, areas = x1[order], y1[order], x2[order], y2[order], areas[order]
        # In place: the (n, n) temporaries are what this costs at a few hundred boxes.
        inter = np.minimum(x2[:, None], x2[None, :])
        inter -= np.maximum(x1[:, None], x1[None, :])
        np.maximum(inter, 0.0, out=inter)
        h = np.minimum(y2[:, None], y2[None, :])
        h -= np.maximum(y1[:, None], y1[None, :])
        np.maximum(h, 0.0, out=h)
        inter *= h
        union = np.add(areas[:, None], areas[None, :])
        union -= inter
        np.maximum(union, np.float32(1e-9), out=union)
        inter /= union
        over = inter > iou  # (n, n), rows and columns by descending score
        suppressed = np.zeros(n, dtype=bool)
        kept: list[int] = []
        for i in range(n):
            if not suppressed[i]:
                kept.append(i)
                suppressed |= over[i]
        return order[np.asarray(kept, dtype=np.intp)]
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        if not rest.size:
            break
        w = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        h = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = np.maximum(w, 0.0) * np.maximum(h, 0.0)
        union = areas[i] + areas[rest] - inter
        overlap = inter / np.maximum(union, np.float32(1e-9))
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.intp)


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou: float
) -> np.ndarray:
    """Class-aware NMS: boxes of different classes never suppress each other.

    Same contract as `nms`. Shifts each class's boxes into its own region of the plane,
    so one NMS pass does all classes.
    """
    if scores.shape[0] == 0:
        return np.zeros((0,), dtype=np.intp)
    offsets = class_ids.astype(np.float32)[:, None] * np.float32(_CLASS_OFFSET)
    return nms(np.asarray(boxes, dtype=np.float32) + offsets, scores, iou)


def _check_letterbox(lb: Letterbox, frame_h: int, frame_w: int) -> None:
    if (frame_h, frame_w) != (lb.src_h, lb.src_w):
        raise ValueError(
            f"frame size {frame_h}x{frame_w} does not match the letterbox "
            f"({lb.src_h}x{lb.src_w}, height x width)"
        )


def _select(
    cxcywh: np.ndarray,
    candidates: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    lb: Letterbox,
    opts: EngineOptions,
) -> Detections:
    """The steps after the confidence filter, shared by `decode_yolo` and
    `decode_candidates`: class filter -> the best MAX_NMS_CANDIDATES -> class-aware NMS
    -> at most max_detections -> frame pixels. cxcywh is (4, N) (cx, cy, w, h rows);
    candidates index its columns; scores and class_ids are the candidates'."""
    if opts.classes is not None:
        wanted = np.isin(class_ids, np.asarray(opts.classes, dtype=np.int32))
        candidates, class_ids, scores = candidates[wanted], class_ids[wanted], scores[wanted]
        if candidates.size == 0:
            return Detections.empty()
    if candidates.size > MAX_NMS_CANDIDATES:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS_CANDIDATES]
        candidates, class_ids, scores = candidates[top], class_ids[top], scores[top]
    xywh = cxcywh[:4, candidates].T.astype(np.float32)
    half = xywh[:, 2:] / 2
    boxes = np.concatenate((xywh[:, :2] - half, xywh[:, :2] + half), axis=1)
    keep = batched_nms(boxes, scores, class_ids, opts.iou)[: opts.max_detections]
    return Detections(
        boxes=np.ascontiguousarray(boxes_to_frame(boxes[keep], lb)),
        scores=np.ascontiguousarray(scores[keep]),
        class_ids=np.ascontiguousarray(class_ids[keep]),
    )


def decode_yolo(
    output: np.ndarray, lb: Letterbox, frame_h: int, frame_w: int, opts: EngineOptions
) -> Detections:
    """Turn one image's (4 + nc, A) YOLOv8/YOLO11 output into `Detections` in frame pixels.

    A leading batch axis of 1 is accepted. `lb` is the letterbox the frame went through;
    frame_h/frame_w must be its size. Raises ValueError on a malformed output.
    """
    out = output[0] if output.ndim == 3 and output.shape[0] == 1 else output
    if out.ndim != 2 or out.shape[0] < 5:
        raise ValueError(
            f"YOLO output must be (4 + classes, anchors), e.g. (84, 8400); got {output.shape}"
        )
    _check_letterbox(lb, frame_h, frame_w)
    class_scores = out[4:]
    # Cheap pass over all anchors first; the argmax then runs on the few survivors.
    best = class_scores.max(axis=0)
    candidates = np.flatnonzero(best > opts.confidence)
    if candidates.size == 0:
        return Detections.empty()
    class_ids = class_scores[:, candidates].argmax(axis=0).astype(np.int32)
    scores = best[candidates].astype(np.float32)
    return _select(out, candidates, scores, class_ids, lb, opts)


#: Columns of one candidate row made on the device (see `decode_candidates`).
CANDIDATE_COLUMNS = ("cx", "cy", "w", "h", "score", "class")


def decode_candidates(
    candidates: np.ndarray, lb: Letterbox, frame_h: int, frame_w: int, opts: EngineOptions
) -> Detections:
    """`decode_yolo` for an output already reduced on the device: (k, 6) rows of
    [cx, cy, w, h, best class score, class id] (`CANDIDATE_COLUMNS`; model-input pixels,
    at most MAX_NMS_CANDIDATES rows, best scores first), one per anchor that may pass.

    Applies the same confidence filter, class filter, class-aware NMS and letterbox
    un-mapping as `decode_yolo`, so both give the same detections (the order of
    candidates of exactly equal score aside). Rows at or below the confidence (padding
    of a batch's shorter images) are dropped here. A leading batch axis of 1 is
    accepted. Raises ValueError on a malformed input.
    """
    cand = candidates[0] if candidates.ndim == 3 and candidates.shape[0] == 1 else candidates
    if cand.ndim != 2 or cand.shape[1] != len(CANDIDATE_COLUMNS):
        raise ValueError(
            f"candidates must be (k, 6) rows of {', '.join(CANDIDATE_COLUMNS)}; "
            f"got {candidates.shape}"
        )
    _check_letterbox(lb, frame_h, frame_w)
    scores = cand[:, 4]
    keep = np.flatnonzero(scores > opts.confidence)
    if keep.size == 0:
        return Detections.empty()
    class_ids = cand[keep, 5].astype(np.int32)
    return _select(cand.T, keep, scores[keep].astype(np.float32), class_ids, lb, opts)
