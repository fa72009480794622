"""The camera registry topic: validation, placement, the writer and a reader of it all.

Record format (topic ``fleet.registry_topic``, ``cleanup.policy=compact``):

* key: the camera id, UTF-8;
* value: the camera's ``cameras:`` entry as compact JSON (what ``CameraConfig`` dumps),
  or no value (a tombstone) when the camera is removed;
* partition: ``crc32(camera id) mod partitions``, chosen here and not by the client
  library's partitioner, so every writer (Python, Java, a script) puts a camera's records
  in the same partition: compaction keeps the last one, and one partition has one owner,
  so one camera has one owner. Writers in other languages must use the same rule.

Validation is the one a camera registered on a single daemon gets (the ``CameraConfig``
model, the keys this version refuses, a source that can never work), and every entry
of a batch is checked before anything is written.

This module must never import a stage, an engine, analytics, ``control`` or ``monitor``.
"""

from __future__ import annotations

import json
import time
import uuid
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from itsd.config import (
    CameraConfig,
    Config,
    FleetConfig,
    format_validation_error,
    unavailable_camera_keys,
)


class RegistryError(Exception):
    """The registry topic cannot be read or written (broker away, topic missing, ...)."""


def partition_of(camera_id: str, partitions: int) -> int:
    """The registry partition of a camera: CRC-32 of its UTF-8 id, mod the partition count."""
    return zlib.crc32(camera_id.encode()) % partitions


def encode(cfg: CameraConfig) -> bytes:
    """A camera's registry value: its configuration entry as compact JSON."""
    return json.dumps(cfg.model_dump(mode="json"), separators=(",", ":"), sort_keys=True).encode()


def decode(key: bytes | None, value: bytes | None) -> tuple[str, CameraConfig | None]:
    """(camera id, config) of a registry record; config None for a tombstone.

    ValueError names the camera when the record does not hold a valid camera (a record
    written by something else than itsd); a node skips such a record with a log line."""
    if not key:
        raise ValueError("a registry record without a key (camera id)")
    camera_id = key.decode("utf-8", errors="replace")
    if value is None:
        return camera_id, None
    try:
        data = json.loads(value)
    except ValueError as err:
        raise ValueError(f"camera {camera_id}: value is not JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"camera {camera_id}: value is not a JSON object")
    if data.get("id", camera_id) != camera_id:
        raise ValueError(f"camera {camera_id}: value names camera {data.get('id')!r}")
    data["id"] = camera_id
    try:
        return camera_id, CameraConfig.model_validate(data)
    except ValidationError as err:
        raise ValueError(format_validation_error(err, f"camera {camera_id}")) from None


def validate_camera(entry: Any, where: str = "config") -> CameraConfig:
    """A camera entry validated like one registered on a daemon; ValueError names the key.

    ``where`` starts every message (``cameras.yaml: cameras[2]``)."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: a camera entry must be a mapping, got {type(entry).__name__}")
    try:
        cfg = CameraConfig.model_validate(dict(entry))
    except ValidationError as err:
        raise ValueError(format_validation_error(err, where)) from None
    problems = unavailable_camera_keys(cfg, where)
    if problems:
        raise ValueError("\n".join(problems))
    from itsd.supervisor.backend import _check_source  # the daemon's own source check

    try:
        _check_source(cfg)
    except ValueError as err:
        text = str(err).replace("config.source_url: ", "source: ")
        raise ValueError(f"{where}: {text}") from None
    return cfg


def validate_cameras(entries: Iterable[Any], where: str) -> list[CameraConfig]:
    """Every entry validated (all problems reported at once, one per line); ids unique."""
    out: list[CameraConfig] = []
    problems: list[str] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        try:
            cfg = validate_camera(entry, f"{where}: cameras[{i}]")
        except ValueError as err:
            problems.append(str(err))
            continue
        if cfg.id in seen:
            problems.append(f"{where}: cameras[{i}]: id: duplicate camera id {cfg.id!r}")
        seen.add(cfg.id)
        out.append(cfg)
    if problems:
        raise ValueError("\n".join(problems))
    return out


def client_config(config: Config) -> dict[str, Any]:
    """librdkafka settings shared by the fleet's clients: bootstrap, then fleet.consumer."""
    conf: dict[str, Any] = {"bootstrap.servers": config.fleet_bootstrap()}
    conf.update(config.fleet.consumer)
    return conf


@dataclass
class Registry:
    """The registry as read: camera id -> (partition, config), plus records that did not
    parse (``problems``) and the partition count."""

    partitions: int
    cameras: dict[str, tuple[int, CameraConfig]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def ensure_topics(config: Config, timeout: float = 10.0) -> int:
    """Create the registry (fleet.partitions) and status topics when missing, compacted;
    the registry's partition count."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    fc = config.fleet
    admin = AdminClient(client_config(config))
    wanted = {fc.registry_topic: fc.partitions, fc.status_topic: 1}
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as err:
        raise RegistryError(f"cannot reach Kafka at {config.fleet_bootstrap()}: {err}") from None
    compact = {"cleanup.policy": "compact"}
    missing = [
        NewTopic(name, num_partitions=n, replication_factor=-1, config=compact)
        for name, n in wanted.items()
        if name not in md.topics
    ]
    if missing:
        for name, fut in admin.create_topics(missing, operation_timeout=timeout).items():
            try:
                fut.result(timeout)
            except KafkaException as err:
                if "TOPIC_ALREADY_EXISTS" not in str(err):
                    raise RegistryError(f"cannot create topic {name}: {err}") from None
    return topic_partitions(config, fc.registry_topic, timeout)


def topic_partitions(config: Config, topic: str, timeout: float = 10.0) -> int:
    """Partition count of ``topic``; RegistryError when it does not exist."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config(config))
    deadline = time.monotonic() + timeout
    while True:
        try:
            md = admin.list_topics(topic, timeout=timeout)
        except KafkaException as err:
            raise RegistryError(
                f"cannot reach Kafka at {config.fleet_bootstrap()}: {err}"
            ) from None
        t = md.topics.get(topic)
        if t is not None and t.error is None and t.partitions:
            return len(t.partitions)
        if time.monotonic() > deadline:
            raise RegistryError(f"topic {topic} does not exist at {config.fleet_bootstrap()}")
        time.sleep(0.2)


def read_all(
    config: Config, topic: str, timeout: float = 20.0, idle_s: float = 2.0
) -> tuple[int, list[tuple[bytes | None, bytes | None, int]]]:
    """Every record of ``topic`` (key, value, partition), in offset order per partition,
    without joining a group; stops once every partition has reported its end or given a
    record written after the read began (records written meanwhile may or may not be
    in), or after ``idle_s`` without a record, since some brokers' end offsets are not
    exact (Tansu's keep a busy topic from ever reporting its end)."""
    from confluent_kafka import (
        OFFSET_BEGINNING,
        TIMESTAMP_NOT_AVAILABLE,
        Consumer,
        KafkaError,
        TopicPartition,
    )

    n = topic_partitions(config, topic, timeout)
    conf = client_config(config)
    conf.update(
        {
            "group.id": f"itsd-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    c = Consumer(conf)
    out: list[tuple[bytes | None, bytes | None, int]] = []
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(n)])
        ended: set[int] = set()
        began_ms = int(time.time() * 1000)
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while len(ended) < n and time.monotonic() < deadline:
            msgs = c.consume(5000, 0.2)
            for msg in msgs:
                err = msg.error()
                part = msg.partition() or 0
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        ended.add(part)
                        continue
                    raise RegistryError(f"reading {topic}: {err}")
                out.append((msg.key(), msg.value(), part))
                kind, ts = msg.timestamp()
                if kind != TIMESTAMP_NOT_AVAILABLE and ts >= began_ms:
                    ended.add(part)  # caught up with the writers
            if msgs:
                last = time.monotonic()
            elif time.monotonic() - last > idle_s:
                break
        else:
            if len(ended) < n:
                raise RegistryError(f"reading {topic}: not at the end within {timeout:.0f} s")
    finally:
        c.close()
    return n, out


def read_registry(config: Config, timeout: float = 20.0) -> Registry:
    """The registry as it is now: the last record of each camera, tombstones applied."""
    n, records = read_all(config, config.fleet.registry_topic, timeout)
    reg = Registry(n)
    for key, value, part in records:
        try:
            cid, cfg = decode(key, value)
        except ValueError as err:
            reg.problems.append(str(err))
            continue
        if cfg is None:
            reg.cameras.pop(cid, None)
        else:
            reg.cameras[cid] = (part, cfg)
    return reg


class RegistryWriter:
    """Puts and removes cameras in the registry topic (acks=all, idempotent)."""

    def __init__(self, config: Config, create: bool = True, timeout: float = 10.0) -> None:
        from confluent_kafka import Producer

        self.config = config
        self.fleet: FleetConfig = config.fleet
        self.timeout = timeout
        if create:
            self.partitions = ensure_topics(config, timeout)
        else:
            self.partitions = topic_partitions(config, self.fleet.registry_topic, timeout)
        conf = client_config(config)
        conf.update({"acks": "all", "enable.idempotence": True, "linger.ms": 5})
        self._producer = Producer(conf)
        self._errors: list[str] = []

    def _report(self, err: Any, msg: Any) -> None:
        if err is not None:
            key = msg.key().decode(errors="replace") if msg.key() else "?"
            self._errors.append(f"camera {key}: {err}")

    def put(self, cfg: CameraConfig) -> None:
        """Queue a camera's configuration (call ``flush``)."""
        self._producer.produce(
            self.fleet.registry_topic,
            key=cfg.id.encode(),
            value=encode(cfg),
            partition=partition_of(cfg.id, self.partitions),
            on_delivery=self._report,
        )

    def delete(self, camera_id: str) -> None:
        """Queue a camera's tombstone (call ``flush``)."""
        self._producer.produce(
            self.fleet.registry_topic,
            key=camera_id.encode(),
            value=None,
            partition=partition_of(camera_id, self.partitions),
            on_delivery=self._report,
        )

    def flush(self) -> None:
        """Wait for every queued record's acknowledgement; RegistryError lists failures."""
        left = self._producer.flush(self.timeout)
        if left:
            self._errors.append(f"{left} record(s) not acknowledged within {self.timeout:.0f} s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise RegistryError("; ".join(errors))


@dataclass
class Plan:
    """What ``apply`` changes: camera ids put (new or changed), removed, left as they are."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def plan(current: Registry, wanted: list[CameraConfig], prune: bool) -> Plan:
    """The difference between the registry and the wanted cameras."""
    p = Plan()
    ids = set()
    for cfg in wanted:
        ids.add(cfg.id)
        old = current.cameras.get(cfg.id)
        if old is None:
            p.added.append(cfg.id)
        elif encode(old[1]) != encode(cfg):
            p.changed.append(cfg.id)
        else:
            p.unchanged.append(cfg.id)
    if prune:
        p.removed = sorted(cid for cid in current.cameras if cid not in ids)
    return p
