"""The disk spool: order, CRC per record, torn last record, cursor, size bound."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import pytest

from itsd.sinks.spool import Spool, SpoolFullError, encode_record


def bodies(n: int, start: int = 0) -> list[bytes]:
    return [f"event-{i:06d}".encode() * 3 for i in range(start, start + n)]


def drain(sp: Spool, chunk: int = 7) -> list[bytes]:
    out: list[bytes] = []
    while True:
        recs = sp.read(chunk)
        if not recs:
            return out
        out.extend(b for _, b in recs)
        sp.commit(recs[-1][0], len(recs))


def segments(d: Path) -> list[Path]:
    return sorted(d.glob("seg-*.spool"))


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
def test_replay_in_order_across_segments_and_reopen(tmp_path: Path, fsync: str) -> None:
    sp = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096, fsync=fsync)
    assert sp.append(bodies(300)) == 300
    assert len(segments(tmp_path)) > 3
    first = sp.read(100)
    sp.commit(first[-1][0], len(first))
    sp.close()
    sp = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096, fsync=fsync)
    assert sp.pending == 200
    sp.append(bodies(5, 300))
    assert [b for _, b in first] + drain(sp) == bodies(305)
    assert sp.is_empty() and segments(tmp_path) == [] and not (tmp_path / "cursor").exists()
    sp.append(bodies(2, 900))  # usable again after it emptied
    assert drain(sp) == bodies(2, 900)


def test_torn_last_record_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sp = Spool(tmp_path, max_bytes=1 << 20)
    sp.append(bodies(10))
    sp.close()
    seg = segments(tmp_path)[-1]
    data = seg.read_bytes()
    seg.write_bytes(data + encode_record(b"half written")[:9])  # the process died mid-append
    with caplog.at_level(logging.WARNING):
        sp = Spool(tmp_path, max_bytes=1 << 20)
    assert "torn last record" in caplog.text
    assert seg.read_bytes() == data  # cut off, appends continue after the good records
    sp.append(bodies(1, 10))
    assert drain(sp) == bodies(11)


def test_bad_crc_of_the_last_record_is_torn_in_the_middle_is_skipped(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=1 << 20)
    sp.append(bodies(3))
    sp.close()
    seg = segments(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF  # last record's body damaged
    rec = len(encode_record(bodies(1)[0]))
    data[16 + rec + 8] ^= 0xFF  # second record's body damaged
    seg.write_bytes(bytes(data))
    sp = Spool(tmp_path, max_bytes=1 << 20)
    assert sp.torn == 1 and sp.corrupt == 1
    assert drain(sp) == bodies(1)


def test_size_bound(tmp_path: Path) -> None:
    one = len(encode_record(bodies(1)[0]))
    sp = Spool(tmp_path, max_bytes=16 + 10 * one)
    assert sp.append(bodies(15)) == 10
    with pytest.raises(SpoolFullError):
        sp.append(bodies(1, 15))
    got = sp.read(4)
    sp.commit(got[-1][0], 4)
    assert sp.bytes_used == 16 + 10 * one  # space comes back segment by segment
    assert drain(sp) == bodies(10)[4:]
    assert sp.append(bodies(3, 20)) == 3


def test_a_record_is_length_crc_body(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=1 << 20)
    sp.append([b"abc"])
    sp.close()
    raw = segments(tmp_path)[0].read_bytes()
    assert raw[:8] == b"ITSDSPL1"
    length, _crc = struct.unpack_from("<II", raw, 16)
    assert length == 3 and raw[24:] == b"abc"
