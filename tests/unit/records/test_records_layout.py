"""Byte layouts of the records that cross process boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from itsd.records import (
    DET_MAGIC,
    MODEL_MAGIC,
    DetectionRecord,
    EventRecord,
    EventType,
    ModelInfoRecord,
    Topic,
    record_magic,
    rfc3339_from_ns,
)


def make(n: int) -> DetectionRecord:
    rng = np.random.default_rng(n)
    return DetectionRecord(
        camera_key=3,
        frame_id=2**40 + 5,
        pts=-7,
        capture_wall_ns=1_700_000_000_000_000_000,
        acquire_mono_ns=11,
        infer_start_mono_ns=12,
        infer_end_mono_ns=13,
        width=1920,
        height=1080,
        batch_size=4,
        boxes=rng.random((n, 4), dtype=np.float32) * 100,
        scores=rng.random(n, dtype=np.float32),
        class_ids=rng.integers(0, 80, n).astype(np.int32),
    )


@pytest.mark.parametrize("n", [0, 1, 17])
def test_detection_round_trip(n: int) -> None:
    rec = make(n)
    data = rec.pack()
    assert record_magic(data) == DET_MAGIC
    back = DetectionRecord.unpack(data)
    assert back.frame_id == rec.frame_id and back.pts == -7 and back.camera_key == 3
    assert np.array_equal(back.boxes, rec.boxes)
    assert np.array_equal(back.scores, rec.scores)
    assert np.array_equal(back.class_ids, rec.class_ids)


def test_detection_rejects_bad_bytes() -> None:
    data = make(2).pack()
    with pytest.raises(ValueError, match="expected"):
        DetectionRecord.unpack(data[:-1])
    with pytest.raises(ValueError, match="magic"):
        DetectionRecord.unpack(b"\0" * len(data))
    with pytest.raises(ValueError, match="too short"):
        DetectionRecord.unpack(b"x")


def test_detection_rejects_inconsistent_arrays() -> None:
    rec = make(3)
    rec.scores = rec.scores[:2]
    with pytest.raises(ValueError, match="inconsistent"):
        rec.pack()


def test_event_round_trip() -> None:
    ev = EventRecord(Topic.ANALYTICS, "cam-1", b'{"a":1}')
    assert EventRecord.unpack(ev.pack()) == ev
    assert Topic.ALERT.default_name == "alert_events"


def test_model_info_round_trip() -> None:
    info = ModelInfoRecord(("person", "car"), "onnxruntime", "/m.onnx")
    data = info.pack()
    assert record_magic(data) == MODEL_MAGIC
    assert ModelInfoRecord.unpack(data) == info


def test_rfc3339() -> None:
    assert rfc3339_from_ns(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123Z"


def test_events_unpacked_all_at_once_or_refused_at_the_first_non_event() -> None:
    evs = [
        EventRecord(Topic.DETECTION, f"cam-{i}", b'{"i":%d}' % i, EventType.DETECTION)
        for i in range(5)
    ]
    assert EventRecord.unpack_all([e.pack() for e in evs]) == evs
    assert EventRecord.unpack_all([]) == []
    for bad in (b"\x09\x01\x00\x00", b"\x00\x01\x09\x00ab", b"\x00", b"\x00\x01\x02\x00\xff\xfe"):
        with pytest.raises(ValueError, match="event record"):
            EventRecord.unpack_all([evs[0].pack(), bad])
        with pytest.raises(ValueError, match="event record"):
            EventRecord.unpack(bad)
