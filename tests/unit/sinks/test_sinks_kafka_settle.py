"""Unit tests of the Kafka sink without a broker: settings, and what happens to a batch
the broker never answers for (a real producer pointed at a closed port).

The broker-side behaviour (volume, order, outages, replay) is tested against a real
broker in tests/integration/sinks.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from itsd.config import KafkaConfig
from itsd.events import detection_event, detection_item
from itsd.records import EventRecord
from itsd.sinks.kafka import Counters, KafkaSink, producer_config
from itsd.sinks.spool import Spool


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def events(n: int) -> list[EventRecord]:
    det = detection_item("car", 0.9, (1.0, 2.0, 30.0, 40.0), 1, True)
    return [
        detection_event(f"cam-{i % 3}", i, time.time_ns(), [det], 640, 360, 5.0, 9.0, 1)
        for i in range(n)
    ]


def test_producer_settings_ours_first_then_the_configured_ones() -> None:
    conf = producer_config(KafkaConfig(enabled=True, bootstrap_servers="h:1"))
    assert conf["acks"] == "all" and conf["enable.idempotence"] is True
    assert conf["delivery.report.only.error"] is True
    cfg = KafkaConfig(
        enabled=True,
        bootstrap_servers="h:1",
        producer={"delivery.report.only.error": False, "batch.num.messages": 500},
    )
    conf = producer_config(cfg)
    assert conf["delivery.report.only.error"] is False
    assert conf["batch.num.messages"] == 500


def test_unanswered_batch_settles_into_the_spool_in_order(tmp_path: Path) -> None:
    cfg = KafkaConfig(
        enabled=True,
        bootstrap_servers=f"127.0.0.1:{closed_port()}",
        delivery_timeout_s=0.5,
        retry_s=30.0,
    )
    counts: dict[str, int] = {}
    c = Counters()
    for name in ("produced", "delivered", "failed", "spooled", "dropped"):
        setattr(c, name, lambda n, name=name: counts.__setitem__(name, counts.get(name, 0) + n))
    sink = KafkaSink(cfg, Spool(tmp_path / "spool", 1 << 20), c)
    assert sink.connected and sink.settle(0.0)  # nothing in flight
    batch = events(20)
    sink.submit(batch)
    t0 = time.monotonic()
    while not sink.settle(0.1):
        assert time.monotonic() - t0 < 20, "the batch never settled"
    assert not sink.connected
    assert counts == {"produced": 20, "failed": 20, "spooled": 20}
    # Spooling mode: the next batch goes behind the first without a broker round trip.
    more = events(5)
    sink.submit(more)
    assert sink.settle(0.0)
    assert [EventRecord.unpack(b) for _, b in sink.spool.read(100)] == batch + more
    sink.close()
