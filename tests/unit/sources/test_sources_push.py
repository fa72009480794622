"""Frames pushed by clients: JPEG/PNG and raw pixels to RGB, and every way they can be wrong."""

from __future__ import annotations

import random
import struct

import cv2
import numpy as np
import pytest

from itsd.sources import push


def _img(w: int = 64, h: int = 48) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_png_round_trip_is_exact_rgb() -> None:
    rgb = _img()
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    out = push.decode_encoded(data.tobytes(), "png")
    assert out.shape == (48, 64, 3) and np.array_equal(out, rgb)


def test_jpeg_size_from_its_header() -> None:
    ok, data = cv2.imencode(".jpg", _img(123, 77))
    assert ok
    assert push.jpeg_size(data.tobytes()) == (123, 77)
    assert push.decode_encoded(data.tobytes(), "jpeg").shape == (77, 123, 3)


@pytest.mark.parametrize(
    "fmt", ["rgb24", "bgr24", "gray8", "nv12"], ids=["rgb", "bgr", "gray", "nv12"]
)
def test_raw_formats_with_and_without_stride(fmt: str) -> None:
    w, h = 16, 8
    rgb = _img(w, h)
    if fmt == "rgb24":
        planes = rgb
    elif fmt == "bgr24":
        planes = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif fmt == "gray8":
        planes = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    else:
        planes = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)  # same size as NV12
        y = planes[:h]
        u = planes[h : h + h // 4].reshape(-1)
        v = planes[h + h // 4 :].reshape(-1)
        uv = np.stack([u, v], axis=1).reshape(h // 2, w)
        planes = np.concatenate([y, uv])
    rows = planes.reshape(planes.shape[0], -1)
    packed = push.decode_raw(rows.tobytes(), w, h, fmt, 0)
    padded = np.zeros((rows.shape[0], rows.shape[1] + 5), np.uint8)
    padded[:, : rows.shape[1]] = rows
    strided = push.decode_raw(padded.tobytes()[:-5], w, h, fmt, rows.shape[1] + 5)
    assert packed.shape == (h, w, 3) and np.array_equal(packed, strided)
    if fmt in ("rgb24", "bgr24"):
        assert np.array_equal(packed, rgb)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((b"x" * 299, 10, 10, "rgb24", 0), "needs 300 bytes"),
        ((b"x" * 301, 10, 10, "rgb24", 0), "more than"),
        ((b"x" * 300, 10, 10, "rgb24", 20), "stride 20 is less"),
        ((b"x" * 300, 0, 10, "rgb24", 0), "must be > 0"),
        ((b"x" * 300, 9000, 1, "gray8", 0), "larger than"),
        ((b"x" * 300, 5000, 5000, "gray8", 0), "larger than"),
        ((b"x" * 149, 10, 10, "nv12", 0), "needs 150"),
        ((b"x" * 150, 9, 10, "nv12", 0), "even"),
        ((b"x" * 300, 10, 10, "yuv", 0), "pixel_format"),
    ],
)
def test_raw_shape_not_matching_the_bytes(args: tuple, words: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(push.FrameDataError, match=words):
        push.decode_raw(*args)


def test_encoded_errors() -> None:
    _, jpg = cv2.imencode(".jpg", _img())
    data = jpg.tobytes()
    with pytest.raises(push.FrameDataError, match="not a PNG"):
        push.decode_encoded(data, "png")
    with pytest.raises(push.FrameDataError, match="empty"):
        push.decode_encoded(b"", "jpeg")
    with pytest.raises(push.FrameDataError):
        push.decode_encoded(data[: len(data) // 3], "jpeg")
    # A PNG header that claims 60000 x 60000 is refused before anything is decoded.
    bomb = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 60000, 60000)
    with pytest.raises(push.FrameDataError, match="larger than"):
        push.decode_encoded(bomb + b"\0" * 64, "png")


def test_random_bytes_never_escape_as_another_error() -> None:
    rng = random.Random(1234)
    _, jpg = cv2.imencode(".jpg", _img())
    good = bytearray(jpg.tobytes())
    for i in range(300):
        if i % 2:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
        else:  # a real JPEG with a few bytes flipped or cut
            data = bytearray(good)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.getrandbits(8)
            data = bytes(data[: rng.randint(2, len(data))])
        for fmt in ("jpeg", "png"):
            try:
                out = push.decode_encoded(data, fmt)
            except push.FrameDataError:
                continue
            assert out.ndim == 3 and out.shape[2] == 3


def test_fit_keeps_the_aspect() -> None:
    out = push.fit(_img(1000, 500), 320, 240)
    assert out.shape == (160, 320, 3)
    small = _img(100, 50)
    assert push.fit(small, 320, 240) is small
