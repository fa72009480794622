"""Frame pixels as readers want them: every reader of a frame ring turns a slot's pixels
into RGB or BGR here, whatever pixel format the writer chose.

A ring slot holds RGB24, BGR24, GRAY8 or I420 (see ``itsd.shm.frame_ring``). I420 is what
an H.264 decoder gives: carrying it saves the decode worker the colour conversion (about
0.15 ms a frame at 640x360, 1 ms at 1080p) and half the bytes. The conversion happens
here instead, on the reader's side, and can be made on a smaller picture: ``to_rgb(...,
size=(w, h))`` scales the three planes straight to ``w`` x ``h`` (luma down, chroma from
half size) and converts the small picture with one matrix per pixel: at 640x360 to
320x180 about 0.11 ms against 0.28 ms for converting the whole frame and scaling it, and
closer to libswscale's RGB scaled the same way (mean difference 1.0 grey level against
1.25 for 4:2:0 at the small size, whose chroma blocks would be twice as coarse).

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


# BT.601 limited range, YUV -> RGB (rows R, G, B; columns Y, U, V, constant), the matrix
# OpenCV's COLOR_YUV2RGB_I420 and libswscale use for untagged H.264.
_M = np.array([[1.164, 0.0, 1.596], [1.164, -0.392, -0.813], [1.164, 2.017, 0.0]], np.float32)
_YUV2RGB = np.hstack([_M, (-_M @ np.array([16, 128, 128], np.float32))[:, None]])
_YUV2BGR = np.ascontiguousarray(_YUV2RGB[::-1])


def _i420_scaled(pixels: np.ndarray, size: tuple[int, int], bgr: bool) -> np.ndarray:
    """The I420 frame at ``size``: each plane scaled straight to ``size`` (chroma from
    half size, so no 4:2:0 blocks at the small size), then one matrix per pixel."""
    planes = [cv2.resize(p, size, interpolation=cv2.INTER_LINEAR) for p in i420_planes(pixels)]
    out: np.ndarray = cv2.transform(cv2.merge(planes), _YUV2BGR if bgr else _YUV2RGB)
    return out


def _convert(
    pixels: np.ndarray, pixel_format: int, bgr: bool, size: tuple[int, int] | None
) -> np.ndarray:
    if pixel_format == PIXEL_FORMAT_I420:
        if size is not None and size != picture_size(pixels, pixel_format):
            return _i420_scaled(pixels, size, bgr)
        i420_planes(pixels)  # checks the shape
        code = cv2.COLOR_YUV2BGR_I420 if bgr else cv2.COLOR_YUV2RGB_I420
        full: np.ndarray = cv2.cvtColor(pixels, code)
        return full
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
