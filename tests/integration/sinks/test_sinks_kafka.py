"""The Kafka sink against a real broker (Tansu): volume, order, schemas, outages.

Events are synthetic detection events from the real builders; each camera's frame ids
count up from 0, so "in order per camera, once each" is "frame ids 0..n-1 in offset
order" for every key.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from tansu_broker import TansuBroker, read_topic

from itsd.config import KafkaConfig
from itsd.events import SCHEMA_VERSION, detection_event, detection_item, load_schema
from itsd.records import EventRecord
from itsd.sinks.kafka import KafkaSink
from itsd.sinks.spool import Spool

CAMERAS = 20


class Source:
    """Events of CAMERAS cameras, interleaved, frame ids counting up per camera."""

    def __init__(self) -> None:
        self.next_id = [0] * CAMERAS
        self.i = 0

    def batch(self, n: int) -> list[EventRecord]:
        out = []
        for _ in range(n):
            cam = self.i % CAMERAS
            self.i += 1
            fid = self.next_id[cam]
            self.next_id[cam] += 1
            det = detection_item("car", 0.9, (1.0, 2.0, 30.0, 40.0), fid, True)
            out.append(
                detection_event(f"cam-{cam:02d}", fid, time.time_ns(), [det], 640, 360, 5.0, 9.0, 4)
            )
        return out


def sink_for(broker: TansuBroker, spool_dir: Path, **kw: Any) -> KafkaSink:
    cfg = KafkaConfig(
        enabled=True,
        bootstrap_servers=broker.bootstrap,
        delivery_timeout_s=kw.pop("delivery_timeout_s", 3.0),
        retry_s=0.5,
        **kw,
    )
    return KafkaSink(cfg, Spool(spool_dir, 1 << 30))


def frames_by_camera(msgs: list[Any]) -> dict[str, list[int]]:
    """Frame ids per key, in offset order (one key lives in one partition)."""
    per: dict[str, list[int]] = defaultdict(list)
    for key, value, _p, _o, _h in sorted(msgs, key=lambda m: (m[2], m[3])):
        per[key.decode()].append(json.loads(value)["frame_id"])
    return per


def test_100k_events_from_20_cameras_once_each_in_order_and_valid(
    tansu: TansuBroker, tmp_path: Path
) -> None:
    sink = sink_for(tansu, tmp_path / "spool", topic_prefix="t1.")
    src = Source()
    for _ in range(100_000 // 4096 + 1):
        sink.write(src.batch(min(4096, 100_000 - src.i)))
        if src.i >= 100_000:
            break
    assert sink.connected and sink.spool.is_empty()
    sink.close()
    msgs = read_topic(tansu.bootstrap, "t1.detection_events", expected=100_000, timeout=120)
    assert len(msgs) == 100_000
    per = frames_by_camera(msgs)
    assert len(per) == CAMERAS
    for cam, ids in per.items():
        assert ids == list(range(100_000 // CAMERAS)), cam
    validator = jsonschema.Draft202012Validator(load_schema("detection"))
    for _k, value, _p, _o, _headers in msgs:
        validator.validate(json.loads(value))
    assert dict(msgs[0][4]) == {
        "event_type": b"detection",
        "schema_version": SCHEMA_VERSION.encode(),
    }


def test_broker_killed_mid_run_every_outage_event_arrives_once_in_order(
    tansu: TansuBroker, tmp_path: Path
) -> None:
    sink = sink_for(tansu, tmp_path / "spool", delivery_timeout_s=2.0)
    src = Source()
    for _ in range(5):
        sink.write(src.batch(1000))
    before = read_topic(tansu.bootstrap, "detection_events", expected=5000)
    assert len(before) == 5000  # the broker keeps nothing across its restart: read it now
    mark = list(src.next_id)
    tansu.kill()
    t_end = time.monotonic() + 4.0
    while time.monotonic() < t_end:  # the outage: events keep coming
        sink.write(src.batch(500))
        sink.poll()
        time.sleep(0.05)
    assert not sink.connected and sink.spool.pending > 0
    spooled = sink.spool.pending
    tansu.start()
    t_end = time.monotonic() + 60
    while not sink.connected and time.monotonic() < t_end:
        sink.write(src.batch(200))  # behind the spool, never ahead of it
        sink.poll()
        time.sleep(0.05)
    assert sink.connected, "the spool was not replayed"
    sink.write(src.batch(1000))
    sink.close()
    total_after = src.i - 5000
    after = read_topic(tansu.bootstrap, "detection_events", expected=total_after, timeout=120)
    per = frames_by_camera(after)
    for cam in range(CAMERAS):
        key = f"cam-{cam:02d}"
        assert per[key] == list(range(mark[cam], src.next_id[cam])), key
    assert len(after) == total_after
    assert spooled >= 500


@pytest.mark.parametrize("fsync", ["always", "never"])
def test_spool_survives_the_sink_and_is_replayed_first_by_the_next(
    tansu: TansuBroker, tmp_path: Path, fsync: str
) -> None:
    port = tansu.port
    tansu.kill()  # the broker is away from the start
    cfg = KafkaConfig(
        enabled=True, bootstrap_servers=f"127.0.0.1:{port}", delivery_timeout_s=1.0, retry_s=0.2
    )
    src = Source()
    sink = KafkaSink(cfg, Spool(tmp_path / "spool", 1 << 30, fsync=fsync))
    for _ in range(4):
        sink.write(src.batch(250))
    sink.close()  # a stop: everything spooled and synced
    assert Spool(tmp_path / "spool", 1 << 30).pending == 1000
    tansu.start()
    sink = KafkaSink(cfg, Spool(tmp_path / "spool", 1 << 30, fsync=fsync))
    assert not sink.connected  # a spool to replay: new events go behind it
    sink.write(src.batch(100))
    deadline = time.monotonic() + 60
    while not sink.connected and time.monotonic() < deadline:
        sink.poll()
        time.sleep(0.05)
    sink.close()
    per = frames_by_camera(read_topic(tansu.bootstrap, "detection_events", expected=1100))
    assert all(per[f"cam-{c:02d}"] == list(range(55)) for c in range(CAMERAS))
