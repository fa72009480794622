"""The C loop of ``EventRecord.unpack_all`` (``itsd/_records.c``) against the Python one."""

from __future__ import annotations

import gc
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from itsd.records import EventRecord, EventType, Topic

events = st.builds(
    EventRecord,
    st.sampled_from(list(Topic)),
    st.text(max_size=40),
    st.binary(max_size=2000),
    st.sampled_from(list(EventType)),
)


@given(st.lists(events, max_size=30))
def test_c_and_python_decode_alike(evs: list[EventRecord]) -> None:
    packed = [e.pack() for e in evs]
    got = EventRecord.unpack_all(packed)
    assert got == EventRecord._unpack_all_py(packed) == evs
    for g in got:
        assert type(g) is EventRecord
        assert type(g.topic) is Topic and type(g.kind) is EventType
        assert type(g.key) is str and type(g.payload) is bytes


def test_other_buffers_decode_too() -> None:
    ev = EventRecord(Topic.ALERT, "cam-1", b"{}", EventType.ALERT)
    data = ev.pack()
    assert EventRecord.unpack_all([bytearray(data), memoryview(data)]) == [ev, ev]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (b"", "malformed event record: 0 bytes"),
        (b"\x00\x01\x00", "malformed event record: 3 bytes"),
        (b"\x04\x01\x00\x00", "topic 4, type 1"),
        (b"\x00\x06\x00\x00", "topic 0, type 6"),
        (b"CMD1{}", "topic 67"),
        (b"\x00\x01\x09\x00ab", "key runs past its end"),
        (b"\x00\x01\x02\x00\xff\xfe", "malformed event record: .*utf-8"),
    ],
)
def test_non_events_are_refused_where_python_refuses_them(bad: bytes, match: str) -> None:
    good = EventRecord(Topic.DETECTION, "cam-1", b"{}", EventType.DETECTION).pack()
    with pytest.raises(ValueError, match=match):
        EventRecord.unpack_all([good, bad, good])
    with pytest.raises(ValueError):
        EventRecord._unpack_all_py([good, bad, good])


def test_non_bytes_item_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="int is not bytes"):
        EventRecord.unpack_all([1])  # type: ignore[list-item]


def test_no_reference_leaks() -> None:
    packed = [EventRecord(Topic.DETECTION, "cam-7", b"x" * 700, EventType.DETECTION).pack()] * 50
    bad = [*packed, b"\x09"]
    for _ in range(200):  # warm caches and free lists
        EventRecord.unpack_all(packed)
    gc.collect()
    before = sys.gettotalrefcount() if hasattr(sys, "gettotalrefcount") else None
    blocks = sys.getallocatedblocks()
    for _ in range(2000):
        EventRecord.unpack_all(packed)
        with pytest.raises(ValueError):
            EventRecord.unpack_all(bad)
    gc.collect()
    assert sys.getallocatedblocks() - blocks < 500
    if before is not None:
        assert sys.gettotalrefcount() - before < 500
