"""The frame statistics inference puts into detection records for the blind-camera checks."""

from __future__ import annotations

import numpy as np

from itsd.records import DetectionRecord, picture_stats


def _record(**extra: object) -> DetectionRecord:
    z = np.zeros((0, 4), np.float32)
    return DetectionRecord(
        1, 2, 3, 4, 5, 6, 7, 640, 360, 1, z, z[:, 0], z[:, 0].astype(np.int32), **extra
    )  # type: ignore[arg-type]


def test_luma_and_crc() -> None:
    dark = np.full((360, 640, 3), 5, np.uint8)
    bright = np.full((360, 640, 3), 200, np.uint8)
    assert picture_stats(dark)["luma"] == 5.0
    assert picture_stats(bright)["luma"] == 200.0
    noisy = np.random.default_rng(1).integers(0, 255, (360, 640, 3), dtype=np.uint8)
    again = noisy.copy()
    assert picture_stats(noisy)["picture_crc"] == picture_stats(again)["picture_crc"]
    again[::11, ::11] ^= 1  # sensor noise reaches the sparse grid
    assert picture_stats(noisy)["picture_crc"] != picture_stats(again)["picture_crc"]


def test_records_carry_them_and_old_records_read_as_unknown() -> None:
    rec = DetectionRecord.unpack(_record(luma=42.5, picture_crc=0xDEADBEEF).pack())
    assert rec.luma == 42.5 and rec.picture_crc == 0xDEADBEEF
    old = _record().pack()[:-8]  # a record without the trailer
    rec = DetectionRecord.unpack(old)
    assert rec.luma == -1.0 and rec.picture_crc == 0
