"""Unit tests of the publisher's pump (itsd.stages.publish.Pump) on a real record ring.

The sinks here are small fakes of the sink interface (what is under test is the pump
around them); the Kafka sink itself is tested against a real broker in
tests/integration/sinks and through the daemon in tests/integration/supervisor.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import pytest

from itsd.records import CMD_MAGIC, CommandOp, CommandRecord, EventRecord, EventType, Topic
from itsd.shm import RecordRing, new_run_id, segment_name
from itsd.sinks.base import Sink, SinkError
from itsd.stages import publish
from itsd.stages.publish import Output, Pump


class Meter:
    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, n: int = 1) -> None:
        self.value += n

    def set(self, value: float) -> None:
        self.value = value


class SyncSink(Sink):
    """Accepts in ``write``; refuses the first ``fail`` writes."""

    name = "sync"

    def __init__(self, fail: int = 0) -> None:
        self.batches: list[list[str]] = []
        self.fail = fail

    def write(self, batch: Sequence[EventRecord]) -> None:
        if self.fail:
            self.fail -= 1
            raise SinkError("not now")
        self.batches.append([ev.key for ev in batch])

    def close(self) -> None:
        pass


class SlowSink(SyncSink):
    """Accepts a submitted batch after ``polls`` calls of ``settle``; records what the
    ring held at each of them."""

    name = "slow"

    def __init__(self, ring: RecordRing, polls: int = 3) -> None:
        super().__init__()
        self.ring = ring
        self.polls = polls
        self.pending: list[str] | None = None
        self.left = 0
        self.ring_during_settle: list[int] = []

    def submit(self, batch: Sequence[EventRecord]) -> None:
        assert self.pending is None, "submitted before the last batch settled"
        self.pending = [ev.key for ev in batch]
        self.left = self.polls

    def settle(self, timeout: float) -> bool:
        if self.pending is None:
            return True
        self.ring_during_settle.append(len(self.ring.peek_many(10_000)))
        self.left -= 1
        if self.left > 0:
            return False
        self.batches.append(self.pending)
        self.pending = None
        return True


@pytest.fixture
def ring() -> Iterator[RecordRing]:
    r = RecordRing.create(segment_name(new_run_id(), "records", "pump"), 1 << 16)
    yield r
    r.close()
    r.unlink()


def event(i: int) -> bytes:
    return EventRecord(Topic.DETECTION, f"k{i}", b'{"i":%d}' % i, EventType.DETECTION).pack()


def command(seq: int) -> bytes:
    rec = CommandRecord(seq, CommandOp.ATTACH)
    data = rec.pack()
    assert int.from_bytes(data[:4], "little") == CMD_MAGIC
    return data


def pump_for(ring: RecordRing, sinks: Sequence[Sink], batch: int, **kw: object) -> Pump:
    outs = [Output(s, Meter(), Meter(), Meter(), Meter()) for s in sinks]
    acks: list[int] = []
    p = Pump(
        ring,
        outs,
        batch,
        beat=lambda: None,
        describe=lambda **fields: None,
        ack=acks.append,
        give_up=kw.get("give_up", lambda: False),  # type: ignore[arg-type]
    )
    p.acks = acks  # type: ignore[attr-defined]
    return p


def test_batches_leave_the_ring_in_order_once_every_sink_accepted(ring: RecordRing) -> None:
    for i in range(10):
        assert ring.try_put(event(i))
    slow, sync = SlowSink(ring), SyncSink()
    pump = pump_for(ring, [sync, slow], 4)
    assert pump.step() == 4
    # While the slow sink settled the first batch, all 10 records were still on the ring.
    assert slow.ring_during_settle == [10, 10, 10]
    assert pump.step() == 4
    assert pump.step() == 2
    assert pump.step() == 0 and not pump.gave_up
    want = [["k0", "k1", "k2", "k3"], ["k4", "k5", "k6", "k7"], ["k8", "k9"]]
    assert slow.batches == want and sync.batches == want
    assert ring.is_empty()
    assert [o.written.value for o in pump.outs] == [10, 10]  # type: ignore[attr-defined]


def test_commands_are_acknowledged_after_their_batch_and_bad_records_skipped(
    ring: RecordRing,
) -> None:
    for data in (event(0), command(7), b"\x09garbage", event(1)):
        assert ring.try_put(data)
    sink = SyncSink()
    pump = pump_for(ring, [sink], 100)
    assert pump.step() == 4
    assert sink.batches == [["k0", "k1"]]
    assert pump.acks == [7]  # type: ignore[attr-defined]
    assert ring.is_empty()


def test_a_refusing_sink_gets_the_batch_again_the_others_only_once(
    ring: RecordRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publish, "RETRY_S", 0.01)
    for i in range(3):
        assert ring.try_put(event(i))
    good, flaky = SlowSink(ring, polls=1), SyncSink(fail=2)
    pump = pump_for(ring, [good, flaky], 2)
    assert pump.step() == 2
    assert good.batches == [["k0", "k1"]]  # once, though flaky refused it twice
    assert flaky.batches == [["k0", "k1"]]
    assert pump.outs[1].errors.value == 2  # type: ignore[attr-defined]
    assert not pump.outs[1].failing
    assert pump.step() == 1
    assert ring.is_empty()


def test_give_up_keeps_the_batch_on_the_ring(ring: RecordRing) -> None:
    for i in range(3):
        assert ring.try_put(event(i))
    pump = pump_for(ring, [SyncSink(fail=100)], 10, give_up=lambda: True)
    assert pump.step() == 0
    assert pump.gave_up
    assert len(ring.peek_many(10)) == 3


def test_events_survive_json_payloads_unchanged(ring: RecordRing) -> None:
    payload = json.dumps({"camera_id": "cam-ä", "n": 1}).encode()
    assert ring.try_put(EventRecord(Topic.ALERT, "cam-ä", payload, EventType.ALERT).pack())
    got: list[EventRecord] = []

    class Keep(SyncSink):
        def write(self, batch: Sequence[EventRecord]) -> None:
            got.extend(batch)

    assert pump_for(ring, [Keep()], 10).step() == 1
    assert got == [EventRecord(Topic.ALERT, "cam-ä", payload, EventType.ALERT)]


def test_a_command_counts_as_published_once_every_event_ring_brought_it() -> None:
    from itsd.stages.publish import _Acks

    acked: list[int] = []
    acks = _Acks(5, 2, acked.append)
    ring0, ring1 = acks.ack_from(0), acks.ack_from(1)
    ring0(6)
    assert acked == [5]  # ring 1 has not brought command 6 yet
    ring1(6)
    assert acked[-1] == 6
    ring1(7)
    ring1(8)  # shard 1 ran ahead: nothing past what ring 0 brought
    assert acked[-1] == 6
    ring0(8)
    assert acked[-1] == 8
    ring0(3)  # an old command (before this process started) changes nothing
    assert acked[-1] == 8
