"""Unit tests of itsd.shm.record_ring: FIFO order, wrap-around, sizes, back-pressure, errors."""

from __future__ import annotations

import array
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from itsd.shm import ControlBlock, RecordRing, segment_name
from itsd.shm.record_ring import HEADER_SIZE


@pytest.fixture
def ring(run_id: str) -> Iterator[RecordRing]:
    r = RecordRing.create(segment_name(run_id, "rec", "small"), 64)
    yield r
    r.close()
    r.unlink()


def payload(i: int, n: int) -> bytes:
    return bytes((i * 31 + k) % 256 for k in range(n))


def test_required_size_and_capacity_rounding(run_id: str) -> None:
    assert RecordRing.required_size(64) == HEADER_SIZE + 64
    assert RecordRing.required_size(65) == HEADER_SIZE + 72
    with pytest.raises(ValueError, match="at least 16 bytes"):
        RecordRing.required_size(8)
    r = RecordRing.create(segment_name(run_id, "rec", "odd"), 100)
    try:
        assert r.capacity_bytes == 104
        assert r.max_record_size == 96
    finally:
        r.close()
        r.unlink()


def test_put_get_roundtrip(ring: RecordRing) -> None:
    assert ring.is_empty()
    assert ring.get() is None
    assert ring.try_put(b"abc")
    assert ring.try_put(bytearray(b""))
    assert ring.try_put(memoryview(b"xyz123"))
    assert not ring.is_empty()
    assert ring.used_bytes() == 16 + 8 + 16
    assert ring.get() == b"abc"
    assert ring.get() == b""
    assert ring.get() == b"xyz123"
    assert ring.get() is None
    stats = ring.stats()
    assert (stats.put, stats.got, stats.waits, stats.used_bytes) == (3, 3, 0, 0)


def test_non_byte_and_strided_buffers(ring: RecordRing) -> None:
    ints = array.array("i", [1, 2, 3])
    assert ring.try_put(ints)  # type: ignore[arg-type]
    assert ring.get() == ints.tobytes()
    strided = memoryview(b"a0b1c2")[::2]
    assert ring.try_put(strided)
    assert ring.get() == b"abc"


def test_every_size_from_zero_to_max_at_every_offset(ring: RecordRing) -> None:
    """Each record size 0..max, started at each 8-byte position of the data area."""
    assert ring.max_record_size == 56
    i = 0
    for start in range(0, ring.capacity_bytes, 8):
        for size in range(ring.max_record_size + 1):
            # move the head to `start` with a filler record, then test `size`
            while ring.stats().used_bytes == 0 and (i * 8) % ring.capacity_bytes != start:
                assert ring.try_put(b"")
                assert ring.get() == b""
                i += 1
            data = payload(i, size)
            assert ring.try_put(data)
            assert ring.get() == data
            i += 1 + (size + 7) // 8
    assert ring.stats().put == ring.stats().got


def test_too_large_record_is_refused(ring: RecordRing) -> None:
    with pytest.raises(ValueError) as info:
        ring.try_put(b"x" * 57)
    msg = str(info.value)
    assert ring.name in msg
    assert "57 bytes" in msg
    assert "56 bytes" in msg
    with pytest.raises(ValueError, match="exceeds the maximum"):
        ring.put(b"x" * 57, timeout=0)
    assert ring.is_empty()


def test_full_ring_refuses_then_accepts(ring: RecordRing) -> None:
    assert ring.try_put(b"a" * 24)  # 32 bytes
    assert ring.try_put(b"b" * 16)  # 24 bytes: 56 used
    assert not ring.try_put(b"c")  # needs 16, 8 free
    assert ring.try_put(b"")  # needs 8
    assert not ring.try_put(b"")
    assert ring.get() == b"a" * 24
    assert ring.try_put(b"c" * 20)  # wraps around the end
    assert ring.get_many(10) == [b"b" * 16, b"", b"c" * 20]


def test_put_times_out_when_full(ring: RecordRing) -> None:
    assert ring.try_put(b"x" * 56)
    assert ring.put(b"y", timeout=0.01) is False
    assert ring.put(b"y", timeout=0) is False
    assert ring.stats().waits == 2
    assert ring.get() == b"x" * 56
    assert ring.get() is None  # the timed-out records were not written


def test_put_stops_when_asked(ring: RecordRing) -> None:
    assert ring.try_put(b"x" * 56)
    calls = []

    def abort() -> bool:
        calls.append(1)
        return len(calls) >= 3

    assert ring.put(b"y", should_abort=abort) is False
    assert len(calls) == 3


def test_put_waits_for_the_reader(ring: RecordRing) -> None:
    """A full ring makes the writer wait until the reader makes room (lossless)."""
    other = RecordRing.attach(ring.name)
    received: list[bytes] = []
    sent = [payload(i, i % 50) for i in range(200)]

    def reader() -> None:
        while len(received) < len(sent):
            data = other.get_wait(timeout=10)
            assert data is not None
            received.append(data)

    t = threading.Thread(target=reader)
    t.start()
    for data in sent:
        assert ring.put(data, timeout=10)
    t.join(timeout=30)
    other.close()
    assert received == sent
    assert ring.stats().got == 200


def test_get_wait_times_out_and_aborts(ring: RecordRing) -> None:
    assert ring.get_wait(timeout=0.01) is None
    assert ring.get_wait(should_abort=lambda: True) is None
    ring.try_put(b"q")
    assert ring.get_wait(timeout=0) == b"q"


def test_get_many_limits_and_order(ring: RecordRing) -> None:
    for i in range(4):  # 16 bytes each: fills the 64-byte ring
        assert ring.try_put(bytes([i]))
    assert ring.get_many(0) == []
    assert ring.get_many(2) == [b"\x00", b"\x01"]
    assert ring.get_many(10) == [b"\x02", b"\x03"]
    assert ring.get_many(10) == []
    assert ring.stats().got == 4


def test_peek_and_advance_give_at_least_once(ring: RecordRing) -> None:
    assert ring.peek() is None
    assert ring.advance() == 0
    ring.try_put(b"one")
    ring.try_put(b"two")
    assert ring.peek() == b"one"
    assert ring.peek() == b"one"  # a crashed reader would see it again
    assert ring.advance() == 1
    assert ring.get() == b"two"


def test_peek_many_then_advance_part(ring: RecordRing) -> None:
    for i in range(3):
        assert ring.try_put(bytes([i]) * 3)
    assert ring.peek_many(0) == []
    assert ring.peek_many(10) == [b"\0\0\0", b"\1\1\1", b"\2\2\2"]
    assert ring.peek_many(2) == [b"\0\0\0", b"\1\1\1"]  # nothing taken yet
    assert ring.advance(2) == 2
    assert ring.stats().got == 2
    assert ring.peek_many(10) == [b"\2\2\2"]
    assert ring.advance(5) == 1
    assert ring.is_empty()


def test_writer_crash_mid_record_publishes_nothing(ring: RecordRing) -> None:
    """Bytes written without advancing the head are invisible and later overwritten."""
    ring.segment.buf[HEADER_SIZE : HEADER_SIZE + 16] = b"\x05\0\0\0garbage-garb"
    assert ring.is_empty()
    assert ring.get() is None
    assert ring.try_put(b"ok")
    assert ring.get() == b"ok"


def test_corrupt_prefix_is_detected(ring: RecordRing) -> None:
    ring.try_put(b"hello")
    ring.segment.buf[HEADER_SIZE] = 0xFF  # scribble on the length
    with pytest.raises(RuntimeError, match="corrupt record prefix"):
        ring.get()


def test_two_mappings_share_the_ring(ring: RecordRing) -> None:
    reader = RecordRing.attach(ring.name)
    try:
        assert reader.capacity_bytes == ring.capacity_bytes
        ring.try_put(b"from-writer")
        assert reader.get() == b"from-writer"
        assert ring.is_empty()
    finally:
        reader.close()


def test_attach_to_other_kinds_is_refused(run_id: str) -> None:
    ctl = ControlBlock.create(segment_name(run_id, "ctl", "x"), 2)
    try:
        with pytest.raises(ValueError, match="is not a record ring"):
            RecordRing.attach(ctl.name)
    finally:
        ctl.close()
        ctl.unlink()
    with pytest.raises(FileNotFoundError, match="not found"):
        RecordRing.attach("itsd-1x1-rec-missing")


def test_close_is_idempotent(ring: RecordRing) -> None:
    ring.close()
    ring.close()
    assert ring.closed


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    capacity=st.integers(min_value=16, max_value=300),
    ops=st.lists(st.one_of(st.integers(min_value=0, max_value=300), st.none()), max_size=120),
)
def test_random_puts_and_gets_are_fifo(run_id: str, capacity: int, ops: list[int | None]) -> None:
    """Random record sizes (an int = put that size, None = get): FIFO, nothing lost."""
    r = RecordRing.create(segment_name(run_id, "rec", f"h{capacity}"), capacity)
    try:
        expected: list[bytes] = []
        for i, op in enumerate(ops):
            if op is None:
                got = r.get()
                assert got == (expected.pop(0) if expected else None)
                continue
            data = payload(i, op)
            if op > r.max_record_size:
                with pytest.raises(ValueError):
                    r.try_put(data)
                continue
            fits = r.free_bytes() >= 8 + (op + 7) // 8 * 8
            assert r.try_put(data) == fits
            if fits:
                expected.append(data)
        assert r.get_many(len(expected) + 1) == expected
        assert r.is_empty()
    finally:
        r.close()
        r.unlink()


def test_peek_from_reads_ahead_of_what_is_not_advanced(ring: RecordRing) -> None:
    for i in range(4):
        assert ring.try_put(bytes([i]) * 3)
    first, pos1 = ring.peek_from(None, 2)
    assert first == [b"\0\0\0", b"\1\1\1"]
    second, pos2 = ring.peek_from(pos1, 10)  # the next batch, the first still held
    assert second == [b"\2\2\2", b"\3\3\3"]
    assert ring.peek_from(pos2, 10) == ([], pos2)
    assert ring.peek_many(10) == first + second  # nothing taken yet
    ring.advance_to(pos1, 2)
    assert ring.stats().got == 2
    assert ring.peek_many(10) == second
    with pytest.raises(ValueError, match="outside the unread bytes"):
        ring.peek_from(0, 1)  # before the tail: already advanced past
    with pytest.raises(ValueError, match="outside the unread bytes"):
        ring.advance_to(pos2 + 8, 1)
    ring.advance_to(pos2, 2)
    assert ring.is_empty()
    ring.advance_to(pos2, 0)  # nothing left: a no-op
    assert ring.stats().got == 4


def test_peek_from_wraps_and_detects_corruption(ring: RecordRing) -> None:
    """A 64-byte ring: two records read in two steps at every start offset, so records
    and prefixes cross the end of the data area."""
    for step in range(ring.capacity_bytes // 8):
        data = [payload(step, 13), payload(step + 1, 5)]  # 24 + 16 bytes with prefixes
        for d in data:
            assert ring.try_put(d)
        got, pos = ring.peek_from(None, 1)
        more, end = ring.peek_from(pos, 5)
        assert got + more == data
        ring.advance_to(end, 2)
        assert ring.is_empty()
        assert ring.try_put(b"") and ring.get() == b""  # start 8 bytes further next time
    tail = ring.peek_from(None, 0)[1]
    assert ring.try_put(b"hello")
    ring.segment.buf[HEADER_SIZE + tail % ring.capacity_bytes] ^= 0xFF  # scribble on the length
    with pytest.raises(RuntimeError, match="corrupt record prefix"):
        ring.peek_from(None, 1)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    capacity=st.integers(min_value=16, max_value=300),
    ops=st.lists(st.integers(min_value=-3, max_value=120), max_size=120),
)
def test_random_pipelined_reads_are_fifo(run_id: str, capacity: int, ops: list[int]) -> None:
    """Puts (op >= 0: a record of that size), read-ahead batches (-1, -2) and advances
    of the oldest batch (-3): every record read once per batch, in order, none lost."""
    r = RecordRing.create(segment_name(run_id, "rec", f"p{capacity}"), capacity)
    try:
        written: list[bytes] = []  # not advanced past yet
        held: list[tuple[int, int]] = []  # (records, end position) of batches read ahead
        cursor: int | None = None
        for i, op in enumerate(ops):
            if op >= 0:
                data = payload(i, op)
                if op <= r.max_record_size and r.try_put(data):
                    written.append(data)
            elif op in (-1, -2):
                got, cursor = r.peek_from(cursor, -op)
                before = sum(n for n, _ in held)
                assert got == written[before : before + len(got)]
                if got:
                    held.append((len(got), cursor))
            elif held:
                n, end = held.pop(0)
                r.advance_to(end, n)
                del written[:n]
                if not held:
                    cursor = None
        assert r.peek_many(len(written) + 1) == written
    finally:
        r.close()
        r.unlink()
