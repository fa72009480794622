"""Frames pushed by clients (``push://`` cameras): client bytes to RGB pictures.

A ``push://`` camera has no decoder process: clients send its frames over gRPC
(``ProcessFrame``, ``ProcessFrameBatch``, ``ProcessCameraStream``) and the control API
writes them into the camera's frame ring. This module turns what a client sent into the
ring's format (RGB24, ``(H, W, 3)`` uint8, at most the ring's slot size):

* encoded images, JPEG or PNG, decoded with OpenCV; the size in the file's header is
  checked before anything is decoded, so a small file that claims a huge picture (a
  decompression bomb) is refused without allocating it;
* raw pixels (RGB24, BGR24, GRAY8, NV12) with a width, a height and an optional row
  stride, checked against the number of bytes sent.

Every problem raises ``FrameDataError`` (a ``ValueError``: INVALID_ARGUMENT for the
client) with one line that says what is wrong and never echoes the client's bytes.

This module must never write to shared memory, run inference or import a stage, the
control API or the generated gRPC code.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

#: Largest side of a pushed picture (pixels) and largest picture (4K UHD): checked before
#: anything is decoded, so a decoded frame costs at most ~25 MB per concurrent call.
MAX_SIDE = 8192
MAX_PIXELS = 3840 * 2160
#: Raw pixel formats: name -> bytes per pixel of the first plane.
RAW_FORMATS = {"rgb24": 3, "bgr24": 3, "gray8": 1, "nv12": 1}
ENCODINGS = ("jpeg", "png")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# JPEG start-of-frame markers (baseline, extended, progressive, lossless, ...): C0..CF
# except C4 (DHT), C8 (JPG) and CC (DAC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class FrameDataError(ValueError):
    """The pixels a client sent cannot be used (the message says why, in one line)."""


def _check_side(width: int, height: int, what: str) -> None:
    if width <= 0 or height <= 0:
        raise FrameDataError(f"{what}: width and height must be > 0, got {width}x{height}")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise FrameDataError(
            f"{what}: {width}x{height} is larger than allowed (at most {MAX_SIDE} pixels a "
            f"side and {MAX_PIXELS} pixels, 3840x2160)"
        )


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; FrameDataError when it is not a PNG."""
    if len(data) < 24 or not data.startswith(_PNG_MAGIC) or data[12:16] != b"IHDR":
        raise FrameDataError("encoded image: not a PNG file (no PNG signature and IHDR)")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame marker; FrameDataError when not found."""
    if not data.startswith(_JPEG_MAGIC):
        raise FrameDataError("encoded image: not a JPEG file (no FFD8FF signature)")
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise FrameDataError(f"encoded image: corrupt JPEG (no marker at byte {i})")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2:
            raise FrameDataError(f"encoded image: corrupt JPEG (segment length {length})")
        if marker in _SOF:
            if i + 9 > n:
                break
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(width), int(height)
        if marker == 0xDA:  # start of scan before any frame header
            break
        i += 2 + length
    raise FrameDataError("encoded image: truncated or corrupt JPEG (no frame header)")


def decode_encoded(data: bytes, encoding: str) -> np.ndarray:
    """Decode a JPEG or PNG file's bytes to RGB24 ``(H, W, 3)`` uint8."""
    if encoding not in ENCODINGS:
        raise FrameDataError(f"encoded image: format must be JPEG or PNG, got {encoding!r}")
    if not data:
        raise FrameDataError("encoded image: data is empty")
    width, height = jpeg_size(data) if encoding == "jpeg" else png_size(data)
    _check_side(width, height, f"encoded {encoding.upper()} image")
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise FrameDataError(f"encoded image: the {encoding.upper()} data cannot be decoded")
    if (bgr.shape[1], bgr.shape[0]) != (width, height):
        raise FrameDataError(
            f"encoded image: decoded {bgr.shape[1]}x{bgr.shape[0]}, header says {width}x{height}"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_raw(data: bytes, width: int, height: int, pixel_format: str, stride: int) -> np.ndarray:
    """Raw pixels to RGB24 ``(H, W, 3)`` uint8 (a copy; ``data`` is not kept)."""
    if pixel_format not in RAW_FORMATS:
        raise FrameDataError(
            "raw image: pixel_format must be one of RGB24, BGR24, GRAY8, NV12, "
            f"got {pixel_format!r}"
        )
    _check_side(width, height, "raw image")
    bpp = RAW_FORMATS[pixel_format]
    row = width * bpp
    if stride == 0:
        stride = row
    if stride < row:
        raise FrameDataError(f"raw image: stride {stride} is less than width x {bpp} = {row} bytes")
    if pixel_format == "nv12" and (width % 2 or height % 2):
        raise FrameDataError(
            f"raw image: NV12 needs an even width and height, got {width}x{height}"
        )
    rows = height + height // 2 if pixel_format == "nv12" else height
    # The last row need not be padded to the stride.
    need = stride * (rows - 1) + row
    if len(data) < need:
        raise FrameDataError(
            f"raw image: {width}x{height} {pixel_format.upper()} with stride {stride} needs "
            f"{need} bytes, got {len(data)}"
        )
    if len(data) > stride * rows:
        raise FrameDataError(
            f"raw image: {len(data)} bytes is more than {width}x{height} "
            f"{pixel_format.upper()} with stride {stride} holds ({stride * rows})"
        )
    buf = np.frombuffer(data, dtype=np.uint8)
    if len(buf) < stride * rows:
        buf = np.concatenate([buf, np.zeros(stride * rows - len(buf), dtype=np.uint8)])
    planes = buf[: stride * rows].reshape(rows, stride)[:, :row]
    if pixel_format == "rgb24":
        return np.ascontiguousarray(planes.reshape(height, width, 3))
    if pixel_format == "bgr24":
        return cv2.cvtColor(
            np.ascontiguousarray(planes.reshape(height, width, 3)), cv2.COLOR_BGR2RGB
        )
    if pixel_format == "gray8":
        return cv2.cvtColor(np.ascontiguousarray(planes), cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(np.ascontiguousarray(planes), cv2.COLOR_YUV2RGB_NV12)


def fit(pixels: np.ndarray, max_width: int, max_height: int) -> np.ndarray:
    """``pixels`` scaled down (aspect kept, INTER_AREA) to fit ``max_width`` x ``max_height``."""
    height, width = pixels.shape[:2]
    if width <= max_width and height <= max_height:
        return pixels
    scale = min(max_width / width, max_height / height)
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
