"""Unit tests of the plane copy into ring slots (itsd.sources._planecopy, C)."""

from __future__ import annotations

import numpy as np
import pytest

from itsd.sources import _planecopy


def test_rows_are_copied_packed_at_the_offset_and_nothing_else_is_touched() -> None:
    src = np.arange(10 * 7, dtype=np.uint8).reshape(10, 7)  # 5 visible bytes per 7
    dst = np.zeros(64, np.uint8)
    end = _planecopy.copy_rows(dst.data, 3, src.tobytes(), 5, 10, 7)
    assert end == 53
    assert np.array_equal(dst[3:53].reshape(10, 5), src[:, :5])
    assert not dst[:3].any() and not dst[53:].any()


@pytest.mark.parametrize(("width", "stride"), [(640, 640), (640, 704), (333, 336), (64, 64)])
def test_large_planes_with_and_without_padding(width: int, stride: int) -> None:
    plane = np.random.default_rng(width + stride).integers(0, 256, (37, stride), dtype=np.uint8)
    out = np.zeros(37 * width + 5, np.uint8)  # an odd offset: unaligned destination
    assert _planecopy.copy_rows(out.data, 5, plane.tobytes(), width, 37, stride) == out.size
    assert np.array_equal(out[5:].reshape(37, width), plane[:, :width])


def test_bad_sizes_are_refused_before_anything_is_written() -> None:
    src = bytes(70)
    dst = np.full(64, 9, np.uint8)
    with pytest.raises(ValueError, match="destination of 64 bytes cannot take 50"):
        _planecopy.copy_rows(dst.data, 60, src, 5, 10, 7)
    with pytest.raises(ValueError, match="source of 2 bytes is too short"):
        _planecopy.copy_rows(dst.data, 0, b"12", 5, 10, 7)
    with pytest.raises(ValueError, match="stride >= width"):
        _planecopy.copy_rows(dst.data, 0, src, 8, 2, 7)
    with pytest.raises(TypeError):
        _planecopy.copy_rows(b"read only", 0, src, 1, 1, 1)
    assert (dst == 9).all()
