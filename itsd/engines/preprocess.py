"""The one preprocess every backend shares: letterbox RGB frames into a model input batch.

A frame is scaled to fit the model input keeping its aspect ratio (up or down), centred,
and the border is padded with grey 114, exactly as Ultralytics' `LetterBox` does for a
fixed-size (non-"auto") model input. Pixels become CHW float32 RGB in 0..1, written
straight into a slot of a preallocated batch buffer. The same `Letterbox` maps boxes back
to frame coordinates, so all backends agree box for box.

This is the hot path of inference: it must never allocate a full-size float image per
frame, never convert colour (frames are RGB already), and never import a backend library
or anything from itsd beyond this package's own modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

#: Grey of the letterbox border, as a model input value (Ultralytics pads with 114).
PAD_VALUE: float = 114.0 / 255.0
_TO_UNIT = np.float32(1.0 / 255.0)


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How one frame size maps into one model input size.

    scale: model pixels per frame pixel (the same along both axes).
    pad_x, pad_y: left and top border, in model pixels.
    new_w, new_h: size of the scaled frame inside the model input.
    src_h, src_w: the frame size this was computed for.
    dst_h, dst_w: the model input size.
    """

    scale: float
    pad_x: int
    pad_y: int
    new_w: int
    new_h: int
    src_h: int
    src_w: int
    dst_h: int
    dst_w: int


def letterbox_params(src_h: int, src_w: int, dst_h: int, dst_w: int) -> Letterbox:
    """Scale and padding that fit a src_h x src_w frame into dst_h x dst_w, centred.

    Rounding follows Ultralytics (`LetterBox` with center=True and `scale_boxes`), so a
    model exported by Ultralytics sees the same pixels here as in its own predictor.
    """
    if min(src_h, src_w, dst_h, dst_w) < 1:
        raise ValueError(
            f"letterbox sizes must be positive, got frame {src_h}x{src_w} "
            f"and model input {dst_h}x{dst_w} (height x width)"
        )
    scale = min(dst_h / src_h, dst_w / src_w)
    new_w = min(dst_w, max(1, round(src_w * scale)))
    new_h = min(dst_h, max(1, round(src_h * scale)))
    pad_x = round((dst_w - new_w) / 2 - 0.1)
    pad_y = round((dst_h - new_h) / 2 - 0.1)
    return Letterbox(
        scale=scale,
        pad_x=max(0, pad_x),
        pad_y=max(0, pad_y),
        new_w=new_w,
        new_h=new_h,
        src_h=src_h,
        src_w=src_w,
        dst_h=dst_h,
        dst_w=dst_w,
    )


def check_frame(frame: np.ndarray, where: str = "frame") -> None:
    """Raise ValueError unless `frame` is an (H, W, 3) uint8 image; `where` names it."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"{where}: expected a numpy array, got {type(frame).__name__}")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"{where}: expected shape (H, W, 3) RGB, got {frame.shape}")
    if frame.dtype != np.uint8:
        raise ValueError(f"{where}: expected dtype uint8, got {frame.dtype}")


def letterbox_into(frame: np.ndarray, out: np.ndarray, lb: Letterbox) -> None:
    """Write `frame` ((H, W, 3) uint8 RGB) letterboxed into `out` as CHW float32 0..1 RGB.

    `out` is a (3, dst_h, dst_w) float32 array, usually one slot of a batch buffer; only
    it is written. The frame is resized with cv2.resize (INTER_LINEAR), then each channel
    is scaled to 0..1 directly into its place in `out`; the border is set to 114/255.
    """
    check_frame(frame)
    if frame.shape[0] != lb.src_h or frame.shape[1] != lb.src_w:
        raise ValueError(
            f"frame is {frame.shape[0]}x{frame.shape[1]} but the letterbox was computed "
            f"for {lb.src_h}x{lb.src_w} (height x width)"
        )
    if out.shape != (3, lb.dst_h, lb.dst_w) or out.dtype != np.float32:
        raise ValueError(
            f"letterbox output must be a (3, {lb.dst_h}, {lb.dst_w}) float32 array, "
            f"got {out.shape} {out.dtype}"
        )
    if lb.new_w == lb.src_w and lb.new_h == lb.src_h:
        resized = frame
    else:
        resized = cv2.resize(frame, (lb.new_w, lb.new_h), interpolation=cv2.INTER_LINEAR)
    top, left = lb.pad_y, lb.pad_x
    bottom, right = top + lb.new_h, left + lb.new_w
    # Border only: the image area is overwritten below, so it is never filled twice.
    if top:
        out[:, :top] = PAD_VALUE
    if bottom < lb.dst_h:
        out[:, bottom:] = PAD_VALUE
    if left:
        out[:, top:bottom, :left] = PAD_VALUE
    if right < lb.dst_w:
        out[:, top:bottom, right:] = PAD_VALUE
    # cv2.split gives contiguous planes; multiplying each straight into its strided
    # destination avoids a float HWC temporary and a transpose copy.
    for channel, plane in enumerate(cv2.split(resized)):
        np.multiply(plane, _TO_UNIT, out=out[channel, top:bottom, left:right])


def letterbox_batch(frames: Sequence[np.ndarray], out: np.ndarray) -> list[Letterbox]:
    """Letterbox each frame into `out[i]` ((N, 3, H, W) float32); return their Letterboxes.

    Frames may have different sizes. Raises ValueError naming the index of a bad frame.
    """
    if out.ndim != 4 or out.shape[1] != 3 or out.dtype != np.float32:
        raise ValueError(f"batch buffer must be (N, 3, H, W) float32, got {out.shape} {out.dtype}")
    if len(frames) > out.shape[0]:
        raise ValueError(f"{len(frames)} frames do not fit a batch buffer of {out.shape[0]}")
    dst_h, dst_w = int(out.shape[2]), int(out.shape[3])
    boxes: list[Letterbox] = []
    for i, frame in enumerate(frames):
        check_frame(frame, f"frame {i}")
        lb = letterbox_params(int(frame.shape[0]), int(frame.shape[1]), dst_h, dst_w)
        letterbox_into(frame, out[i], lb)
        boxes.append(lb)
    return boxes


def boxes_to_letterbox(boxes: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Map (N, 4) xyxy boxes from frame pixels into model-input pixels (a new array)."""
    mapped = np.asarray(boxes, dtype=np.float32) * np.float32(lb.scale)
    mapped[:, 0::2] += np.float32(lb.pad_x)
    mapped[:, 1::2] += np.float32(lb.pad_y)
    return mapped


def boxes_to_frame(boxes: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Map (N, 4) xyxy boxes from model-input pixels back to frame pixels, clipped to it.

    Returns a new float32 array; x is clipped to [0, src_w] and y to [0, src_h].
    """
    mapped = np.array(boxes, dtype=np.float32, copy=True)
    mapped[:, 0::2] -= np.float32(lb.pad_x)
    mapped[:, 1::2] -= np.float32(lb.pad_y)
    mapped /= np.float32(lb.scale)
    np.clip(mapped[:, 0::2], 0.0, float(lb.src_w), out=mapped[:, 0::2])
    np.clip(mapped[:, 1::2], 0.0, float(lb.src_h), out=mapped[:, 1::2])
    return mapped
