"""``itsd events tail``: follow the events of a daemon, from Kafka or from its JSONL file.

With ``kafka.enabled`` the topic is read from the broker (every partition, from the end,
or from the beginning with ``from_beginning``; no consumer group is joined, so nothing is
committed and no other consumer is disturbed). Otherwise the JSONL file of
``outputs.jsonl_path`` is read: its last lines, then new ones as they are appended,
across a rotation. ``camera`` keeps one camera's events (the Kafka key, or the
``camera_id`` field).

This module must never write anything but to the output it is given.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from itsd.config import Config

#: Which stream each event type belongs to (the keys of ``kafka.topics``).
STREAM_OF_TYPE = {
    "detection": "detection_events",
    "line_crossing": "analytics_events",
    "analytics_summary": "analytics_events",
    "metrics_snapshot": "metrics_events",
    "alert": "alert_events",
}
STREAMS = ("detection_events", "analytics_events", "metrics_events", "alert_events")


def resolve_stream(config: Config, topic: str) -> tuple[str, str]:
    """(stream kind, Kafka topic name) for a kind (``alert_events``) or a topic name."""
    names = {k: config.kafka.topic_prefix + getattr(config.kafka.topics, k) for k in STREAMS}
    if topic in names:
        return topic, names[topic]
    for kind, name in names.items():
        if topic == name:
            return kind, name
    raise ValueError(
        f"--topic {topic!r}: not one of {', '.join(STREAMS)} (or their configured names "
        f"{', '.join(names.values())})"
    )


def _matches(obj: Any, kind: str, camera: str | None) -> bool:
    if not isinstance(obj, dict):
        return False
    if STREAM_OF_TYPE.get(str(obj.get("event_type")), "") != kind:
        return False
    return camera is None or obj.get("camera_id") == camera


def tail_jsonl(
    path: Path,
    kind: str,
    camera: str | None,
    lines: int,
    follow: bool,
    emit: Callable[[str], None],
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """The last ``lines`` matching events of the file, then (with ``follow``) new ones."""
    last: deque[str] = deque(maxlen=max(lines, 0) or None)
    fh = None
    inode = None
    pos = 0
    try:
        if path.exists():
            fh = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
            inode = os.fstat(fh.fileno()).st_ino
            for line in fh:
                if _line_ok(line, kind, camera):
                    last.append(line.rstrip("\n"))
            pos = fh.tell()
        if lines:
            for line in last:
                emit(line)
        while follow and not stop():
            try:
                st = path.stat()
            except FileNotFoundError:
                time.sleep(0.2)
                continue
            if fh is None or st.st_ino != inode or st.st_size < pos:
                # Rotated (a new file under the name) or truncated: read the new one whole.
                if fh is not None:
                    for line in fh:  # what the old file got before the rotation
                        if _line_ok(line, kind, camera):
                            emit(line.rstrip("\n"))
                    fh.close()
                fh = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
                inode = os.fstat(fh.fileno()).st_ino
                pos = 0
            line = fh.readline()
            if not line or not line.endswith("\n"):
                if line:
                    fh.seek(pos)  # a half-written line: read it again when whole
                time.sleep(0.2)
                continue
            pos = fh.tell()
            if _line_ok(line, kind, camera):
                emit(line.rstrip("\n"))
    finally:
        if fh is not None:
            fh.close()


def _line_ok(line: str, kind: str, camera: str | None) -> bool:
    try:
        return _matches(json.loads(line), kind, camera)
    except ValueError:
        return False


def kafka_messages(
    config: Config, topic: str, from_beginning: bool, stop: Callable[[], bool]
) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) of every message of ``topic`` from its end (or beginning) on."""
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

    settings: dict[str, Any] = {
        "bootstrap.servers": config.kafka.bootstrap_servers,
        "group.id": f"itsd-tail-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest" if from_beginning else "latest",
    }
    for key in ("security.protocol", "sasl.mechanism", "sasl.username", "sasl.password"):
        if key in config.kafka.producer:
            settings[key] = config.kafka.producer[key]
    consumer = Consumer(settings)
    try:
        md = consumer.list_topics(topic, timeout=10)
        t = md.topics.get(topic)
        if t is None or t.error is not None or not t.partitions:
            raise ValueError(f"topic {topic!r} not found on {config.kafka.bootstrap_servers}")
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in sorted(t.partitions)])
        while not stop():
            for msg in consumer.consume(500, 0.5):
                value = msg.value()
                if msg.error() is None and value is not None:
                    yield msg.key(), value
    finally:
        consumer.close()


def tail_kafka(
    config: Config,
    topic: str,
    camera: str | None,
    from_beginning: bool,
    emit: Callable[[str], None],
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Print the topic's messages (one camera's with ``camera``) as JSON lines."""
    key = camera.encode() if camera is not None else None
    for k, value in kafka_messages(config, topic, from_beginning, stop):
        if key is None or k == key:
            emit(value.decode("utf-8", errors="replace"))
