"""Drawing for the dashboard's snapshots: boxes, track ids and counting lines on a frame.

Takes a frame copied out of a frame ring (``itsd.shm.frame_ring.PeekedFrame``) and the
boxes analytics published for a frame of that camera, and returns a BGR image ready for
``cv2.imencode``. Drawing lives here, in the monitor, and nowhere in analytics.

This module must never import a stage, an engine or the supervisor, and never touch
shared memory (it works on a private copy of the pixels). It is imported lazily by the
monitoring port's snapshot worker: importing it loads numpy and OpenCV.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from itsd.shm.frame_pixels import to_bgr

PIXEL_FORMAT_RGB24 = 0
PIXEL_FORMAT_GRAY8 = 2
PIXEL_FORMAT_I420 = 3
LINE_COLOUR = (0, 215, 255)  # BGR amber


def _colour(track_id: int) -> tuple[int, int, int]:
    """A stable, bright colour per track id (BGR)."""
    if track_id <= 0:
        return (200, 200, 200)
    hue = (track_id * 47) % 180
    hsv = np.array([[[hue, 220, 255]]], dtype=np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def _label(img: npt.NDArray[np.uint8], text: str, x: int, y: int, colour: Any) -> None:
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1
    (w, h), base = cv2.getTextSize(text, font, scale, thick)
    y = max(h + base, y)
    cv2.rectangle(img, (x, y - h - base), (x + w + 2, y), colour, -1)
    cv2.putText(img, text, (x + 1, y - base + 1), font, scale, (0, 0, 0), thick, cv2.LINE_AA)


def prepare(frame: Any, max_side: int) -> npt.NDArray[np.uint8]:
    """A frame copied from a ring as a BGR image no wider or taller than ``max_side``."""
    px = frame.pixels
    if frame.pixel_format == PIXEL_FORMAT_I420:  # (H * 3 / 2, W) planes from the decoder
        img = to_bgr(px, PIXEL_FORMAT_I420)
    elif frame.pixel_format == PIXEL_FORMAT_RGB24:
        img = cv2.cvtColor(px, cv2.COLOR_RGB2BGR)
    elif px.shape[2] == 1:
        img = cv2.cvtColor(px, cv2.COLOR_GRAY2BGR)
    else:
        img = np.ascontiguousarray(px)
    h, w = img.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        img = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return np.asarray(img, dtype=np.uint8)


def draw_snapshot(
    image: npt.NDArray[np.uint8],
    frame_id: int,
    det: list[Any] | None,
    lines: list[dict[str, Any]],
) -> npt.NDArray[np.uint8]:
    """``image`` (from ``prepare``, drawn on in place) with boxes, track ids and lines.

    ``det``: [frame id, width, height, [[x1, y1, x2, y2, track id, class], ...]] in the
    frame's own pixel coordinates (the detections board's entry); ``lines``: [{"id",
    "start": [x, y], "end": [x, y]}] in normalised coordinates (0..1).
    """
    img = image
    out_h, out_w = img.shape[:2]
    for ln in lines:
        try:
            (x1, y1), (x2, y2) = ln["start"], ln["end"]
        except (KeyError, TypeError, ValueError):
            continue
        p1 = (round(x1 * out_w), round(y1 * out_h))
        p2 = (round(x2 * out_w), round(y2 * out_h))
        cv2.line(img, p1, p2, LINE_COLOUR, 2, cv2.LINE_AA)
        _label(img, f"line {ln.get('id', '')}", p1[0] + 2, p1[1] + 16, LINE_COLOUR)
        # The "in" direction: from the left of start -> end to its right, as displayed
        # (itsd.analytics.lines), i.e. the direction vector turned by +90 degrees on
        # screen (y down).
        dx, dy = p2[0] - p1[0], p2[1] - p1[1]
        length = max(1.0, (dx * dx + dy * dy) ** 0.5)
        mid = ((p1[0] + p2[0]) // 2, (p1[1] + p2[1]) // 2)
        tip = (round(mid[0] - dy / length * 22), round(mid[1] + dx / length * 22))
        cv2.arrowedLine(img, mid, tip, LINE_COLOUR, 2, cv2.LINE_AA, tipLength=0.35)
        _label(img, "in", tip[0] + 3, tip[1] + 6, LINE_COLOUR)
    det_frame = None
    if det is not None and len(det) == 4 and det[1] and det[2]:
        det_frame = int(det[0])
        sx, sy = out_w / float(det[1]), out_h / float(det[2])
        for box in det[3]:
            try:
                bx1, by1, bx2, by2, tid, cls = box
            except (TypeError, ValueError):
                continue
            colour = _colour(int(tid))
            a = (round(bx1 * sx), round(by1 * sy))
            b = (round(bx2 * sx), round(by2 * sy))
            cv2.rectangle(img, a, b, colour, 2)
            text = f"#{int(tid)} {cls}" if int(tid) > 0 else str(cls)
            _label(img, text, a[0], a[1] - 1, colour)
    note = f"frame {frame_id}"
    if det_frame is None:
        note += " (no boxes)"
    elif det_frame != frame_id:
        note += f" (boxes of frame {det_frame})"
    _label(img, note, 4, out_h - 4, (255, 255, 255))
    return img
