"""Frame pixels as readers want them: every reader of a frame ring turns a slot's pixels
into RGB or BGR here, whatever pixel format the writer chose.

A ring slot holds RGB24, BGR24, GRAY8 or I420 (see ``itsd.shm.frame_ring``). I420 is what
an H.264 decoder gives: carrying it saves the decode worker the colour conversion (about
0.15 ms a frame at 640x360, 1 ms at 1080p) and half the bytes. The conversion happens
here instead, on the reader's side, and can be made on a smaller picture: ``to_rgb(...,
size=(w, h))`` scales the three planes first (Y to ``w`` x ``h``, U and V to half that)
and converts the small picture, which costs a fraction of converting the whole frame.

Colour: I420 is BT.601 limited range (what libswscale assumes for H.264 without colour
tags, and OpenCV's ``COLOR_YUV2RGB_I420``); the result is within 3 grey levels of
libswscale's RGB conversion of the same frame.

This module must never write to a ring or import anything from ``itsd`` outside
``itsd.shm``.
"""

from __future__ import annotations

import cv2
import numpy as np

from itsd.shm.frame_ring import (
    PIXEL_FORMAT_BGR24,
    PIXEL_FORMAT_GRAY8,
    PIXEL_FORMAT_I420,
    PIXEL_FORMAT_RGB24,
)

_NAMES = {
    PIXEL_FORMAT_RGB24: "RGB24",
    PIXEL_FORMAT_BGR24: "BGR24",
    PIXEL_FORMAT_GRAY8: "GRAY8",
    PIXEL_FORMAT_I420: "I420",
}


def format_name(pixel_format: int) -> str:
    """``RGB24``, ``BGR24``, ``GRAY8``, ``I420`` (or ``format N`` for an unknown one)."""
    return _NAMES.get(pixel_format, f"format {pixel_format}")


def picture_size(pixels: np.ndarray, pixel_format: int) -> tuple[int, int]:
    """(width, height) of the picture ``pixels`` hold."""
    if pixel_format == PIXEL_FORMAT_I420:
        return int(pixels.shape[1]), int(pixels.shape[0]) * 2 // 3
    return int(pixels.shape[1]), int(pixels.shape[0])


def i420_planes(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y (H x W), U and V (H/2 x W/2) planes of an (H * 3 / 2, W) I420 array."""
    rows, width = pixels.shape[0], pixels.shape[1]
    height = rows * 2 // 3
    if pixels.ndim != 2 or rows % 3 or width % 2 or height % 2:
        raise ValueError(
            f"an I420 frame is an (H * 3 / 2, W) uint8 array with even H and W, got {pixels.shape}"
        )
    flat = pixels.reshape(-1)
    n_y, n_c = width * height, (width // 2) * (height // 2)
    y = flat[:n_y].reshape(height, width)
    u = flat[n_y : n_y + n_c].reshape(height // 2, width // 2)
    v = flat[n_y + n_c : n_y + 2 * n_c].reshape(height // 2, width // 2)
    return y, u, v


def _i420_scaled(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The I420 frame with its planes scaled to ``size`` (even width and height)."""
    w, h = size
    y, u, v = i420_planes(pixels)
    out = np.empty((h * 3 // 2, w), np.uint8)
    oy, ou, ov = i420_planes(out)
    cv2.resize(y, (w, h), dst=oy, interpolation=cv2.INTER_LINEAR)
    cv2.resize(u, (w // 2, h // 2), dst=ou, interpolation=cv2.INTER_LINEAR)
    cv2.resize(v, (w // 2, h // 2), dst=ov, interpolation=cv2.INTER_LINEAR)
    return out


def _convert(
    pixels: np.ndarray, pixel_format: int, bgr: bool, size: tuple[int, int] | None
) -> np.ndarray:
    if pixel_format == PIXEL_FORMAT_I420:
        src = pixels
        if size is not None and size != picture_size(pixels, pixel_format):
            # Even size for the chroma planes; at most one pixel off, then exact below.
            even = (max(2, size[0] + size[0] % 2), max(2, size[1] + size[1] % 2))
            src = _i420_scaled(pixels, even)
            code = cv2.COLOR_YUV2BGR_I420 if bgr else cv2.COLOR_YUV2RGB_I420
            out = cv2.cvtColor(src, code)
            if (out.shape[1], out.shape[0]) != size:
                out = cv2.resize(out, size, interpolation=cv2.INTER_LINEAR)
            return out
        i420_planes(pixels)  # checks the shape
        return cv2.cvtColor(src, cv2.COLOR_YUV2BGR_I420 if bgr else cv2.COLOR_YUV2RGB_I420)
    if pixel_format in (PIXEL_FORMAT_RGB24, PIXEL_FORMAT_BGR24):
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(
                f"an {format_name(pixel_format)} frame is (H, W, 3), got {pixels.shape}"
            )
        swap = (pixel_format == PIXEL_FORMAT_RGB24) == bgr
        out = pixels[:, :, ::-1] if swap else pixels
    elif pixel_format == PIXEL_FORMAT_GRAY8:
        gray = pixels.reshape(pixels.shape[0], pixels.shape[1])
        out = cv2.cvtColor(np.ascontiguousarray(gray), cv2.COLOR_GRAY2RGB)
    else:
        raise ValueError(f"unknown pixel format {pixel_format}")
    if size is not None and size != (out.shape[1], out.shape[0]):
        return cv2.resize(np.ascontiguousarray(out), size, interpolation=cv2.INTER_LINEAR)
    return out


def to_rgb(
    pixels: np.ndarray, pixel_format: int, size: tuple[int, int] | None = None
) -> np.ndarray:
    """The picture as an (H, W, 3) uint8 RGB array, scaled to ``size`` (width, height)
    when given (bilinear). An RGB24 frame at its own size comes back as it is (no copy:
    a view on the ring slot stays valid only until the slot is released); every other
    case is a new array."""
    return _convert(pixels, pixel_format, False, size)


def to_bgr(
    pixels: np.ndarray, pixel_format: int, size: tuple[int, int] | None = None
) -> np.ndarray:
    """As :func:`to_rgb`, in BGR order (OpenCV's, for JPEG encoding and drawing); a BGR24
    frame at its own size comes back as it is, an RGB24 one as a reversed view."""
    return _convert(pixels, pixel_format, True, size)
