"""Unit tests of itsd.shm.atomics: values, alignment and range checks, helpers."""

from __future__ import annotations

import mmap

import pytest

from itsd.shm import atomics


def test_u64_load_store_fetch_add_on_mmap() -> None:
    buf = mmap.mmap(-1, 4096)
    try:
        assert atomics.load_u64(buf, 8) == 0
        atomics.store_u64(buf, 8, 2**64 - 2)
        assert atomics.load_u64(buf, 8) == 2**64 - 2
        assert atomics.fetch_add_u64(buf, 8, 1) == 2**64 - 2
        assert atomics.fetch_add_u64(buf, 8, 1) == 2**64 - 1
        assert atomics.load_u64(buf, 8) == 0  # wraps modulo 2**64
    finally:
        buf.close()


def test_u32_load_store_cas_on_bytearray() -> None:
    buf = bytearray(64)
    atomics.store_u32(buf, 4, 7)
    assert atomics.load_u32(buf, 4) == 7
    assert atomics.cas_u32(buf, 4, 6, 9) is False
    assert atomics.load_u32(buf, 4) == 7
    assert atomics.cas_u32(buf, 4, 7, 9) is True
    assert atomics.load_u32(buf, 4) == 9
    assert bytes(buf[4:8]) == (9).to_bytes(4, "little")
    atomics.fence()


def test_add_u64_accepts_negative_deltas() -> None:
    buf = bytearray(16)
    atomics.store_u64(buf, 0, 10)
    assert atomics.add_u64(buf, 0, -3) == 10
    assert atomics.load_u64(buf, 0) == 7


def test_set_and_clear_bits() -> None:
    buf = bytearray(8)
    assert atomics.set_bits_u32(buf, 0, 0b101) == 0
    assert atomics.set_bits_u32(buf, 0, 0b010) == 0b101
    assert atomics.clear_bits_u32(buf, 0, 0b001) == 0b111
    assert atomics.load_u32(buf, 0) == 0b110


def test_misaligned_offsets_are_refused() -> None:
    buf = bytearray(64)
    with pytest.raises(ValueError, match="aligned"):
        atomics.load_u64(buf, 4)
    with pytest.raises(ValueError, match="aligned"):
        atomics.store_u32(buf, 2, 1)


def test_out_of_range_offsets_are_refused() -> None:
    buf = bytearray(16)
    with pytest.raises(IndexError, match="out of range"):
        atomics.load_u64(buf, 16)
    with pytest.raises(IndexError, match="out of range"):
        atomics.load_u32(buf, -4)


def test_read_only_buffers_are_refused() -> None:
    with pytest.raises(BufferError):
        atomics.load_u32(b"\0" * 8, 0)


def test_values_out_of_range_are_refused() -> None:
    buf = bytearray(8)
    with pytest.raises(OverflowError):
        atomics.store_u32(buf, 0, 2**32)
    with pytest.raises(OverflowError):
        atomics.store_u64(buf, 0, -1)


def test_check_aligned() -> None:
    atomics.check_aligned(64, 8, "slot")
    with pytest.raises(ValueError, match="slot: offset 12 is not 8-byte aligned"):
        atomics.check_aligned(12, 8, "slot")
