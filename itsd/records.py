"""Records that travel between stages, and their byte layouts in the record rings.

Two records cross process boundaries:

* ``DetectionRecord`` (inference -> analytics): one per processed frame, even with no
  detections, so analytics sees every frame and can age tracks.
  Layout (little endian): a fixed header ``HEADER`` followed by ``n`` boxes (float32 x4),
  ``n`` scores (float32) and ``n`` class ids (int32)::

      u32 magic 'DET1' | u32 camera_key | u64 frame_id | i64 pts
      u64 capture_wall_ns | u64 acquire_mono_ns | u64 infer_start_mono_ns
      u64 infer_end_mono_ns | u32 width | u32 height | u32 n | u32 batch_size

  then an optional trailer ``f32 luma | u32 picture_crc``: the frame's mean luma
  (0..255) and a CRC-32 of a sparse grid of its pixels, taken by inference while it
  holds the frame (analytics never reads frame rings: one reader per ring). A record
  without it reads as luma -1 (unknown).

* ``CommandRecord`` (supervisor -> inference -> analytics -> publisher): a change of the
  camera table, carried in flow order with the data (``u32 magic 'CMD1'`` then JSON).

* ``EventRecord`` (analytics -> publisher): an already-serialised JSON event with the
  topic it belongs to, its event type (so sinks need not parse the JSON for a Kafka
  header) and its Kafka key (the camera id)::

      u8 topic | u8 event type | u16 key_len | key (utf-8) | payload (JSON, utf-8)

  The same bytes are what the publisher's disk spool stores per record. The publisher
  decodes its batches with ``EventRecord.unpack_all``, whose loop is in C
  (``itsd/_records.c``, built with the package like the ring's atomics).

This module must never import a stage, an engine, shared memory or a GPU library; it is
pure data and is imported by every stage.
"""

from __future__ import annotations

import enum
import json
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import numpy as np

from itsd._records import unpack_events as _unpack_events

DET_MAGIC = 0x31544544  # b"DET1" little endian
_DET_HEADER = struct.Struct("<IIQqQQQQIIII")
_DET_TRAILER = struct.Struct("<fI")


class Topic(enum.IntEnum):
    """The event streams; names match the default Kafka topics."""

    DETECTION = 0
    ANALYTICS = 1
    METRICS = 2
    ALERT = 3

    @property
    def default_name(self) -> str:
        """The default Kafka topic name of this stream."""
        return f"{self.name.lower()}_events"


class EventType(enum.IntEnum):
    """The kinds of event; ``name.lower()`` is the JSON ``event_type``. 0 means unknown
    (a record written before the type was carried)."""

    UNKNOWN = 0
    DETECTION = 1
    LINE_CROSSING = 2
    ANALYTICS_SUMMARY = 3
    METRICS_SNAPSHOT = 4
    ALERT = 5

    @property
    def wire_name(self) -> str:
        """The ``event_type`` value of the JSON (and of the Kafka header)."""
        return self.name.lower()


@dataclass(slots=True)
class DetectionRecord:
    """Detections of one frame of one camera, in that frame's pixel coordinates."""

    camera_key: int
    frame_id: int
    pts: int
    capture_wall_ns: int
    acquire_mono_ns: int  # when inference took the frame from its ring
    infer_start_mono_ns: int
    infer_end_mono_ns: int
    width: int
    height: int
    batch_size: int
    boxes: np.ndarray  # (n, 4) float32 x_min, y_min, x_max, y_max
    scores: np.ndarray  # (n,) float32
    class_ids: np.ndarray  # (n,) int32
    luma: float = -1.0  # mean luma 0..255 of the frame; -1 unknown
    picture_crc: int = 0  # CRC-32 of a sparse pixel grid (frozen-picture check)

    def pack(self) -> bytes:
        """Serialise for a record ring."""
        n = len(self.scores)
        if self.boxes.shape != (n, 4) or len(self.class_ids) != n:
            raise ValueError(
                f"inconsistent detection arrays: boxes {self.boxes.shape}, "
                f"scores {self.scores.shape}, class_ids {self.class_ids.shape}"
            )
        header = _DET_HEADER.pack(
            DET_MAGIC,
            self.camera_key,
            self.frame_id,
            self.pts,
            self.capture_wall_ns,
            self.acquire_mono_ns,
            self.infer_start_mono_ns,
            self.infer_end_mono_ns,
            self.width,
            self.height,
            n,
            self.batch_size,
        )
        return b"".join(
            (
                header,
                np.ascontiguousarray(self.boxes, dtype="<f4").tobytes(),
                np.ascontiguousarray(self.scores, dtype="<f4").tobytes(),
                np.ascontiguousarray(self.class_ids, dtype="<i4").tobytes(),
                _DET_TRAILER.pack(self.luma, self.picture_crc & 0xFFFFFFFF),
            )
        )

    @classmethod
    def unpack(cls, data: bytes) -> DetectionRecord:
        """Parse bytes made by :meth:`pack`; ValueError on anything else."""
        if len(data) < _DET_HEADER.size:
            raise ValueError(f"detection record too short: {len(data)} bytes")
        (magic, cam, fid, pts, wall, mono, t0, t1, w, h, n, bs) = _DET_HEADER.unpack_from(data)
        if magic != DET_MAGIC:
            raise ValueError(f"not a detection record (magic {magic:#x})")
        expected = _DET_HEADER.size + n * 24
        if len(data) not in (expected, expected + _DET_TRAILER.size):
            raise ValueError(f"detection record of {len(data)} bytes, expected {expected}")
        luma, crc = _DET_TRAILER.unpack_from(data, expected) if len(data) > expected else (-1.0, 0)
        off = _DET_HEADER.size
        boxes = np.frombuffer(data, dtype="<f4", count=n * 4, offset=off).reshape(n, 4)
        off += n * 16
        scores = np.frombuffer(data, dtype="<f4", count=n, offset=off)
        off += n * 4
        class_ids = np.frombuffer(data, dtype="<i4", count=n, offset=off)
        return cls(cam, fid, pts, wall, mono, t0, t1, w, h, bs, boxes, scores, class_ids, luma, crc)


#: Rows and columns of the sparse grid ``picture_stats`` reads (about 32 x 57 pixels).
PICTURE_GRID = 32


def picture_stats(pixels: np.ndarray) -> dict[str, Any]:
    """``luma`` (mean of all channels, 0..255) and ``picture_crc`` (CRC-32) of a sparse
    grid of a frame's pixels, for ``DetectionRecord``: about 40 us for a 1080p frame.
    ``pixels`` is H x W x C or H x W uint8."""
    h, w = pixels.shape[0], pixels.shape[1]
    step = max(1, min(h, w) // PICTURE_GRID)
    grid = np.ascontiguousarray(pixels[::step, ::step])
    if grid.size == 0:
        return {"luma": -1.0, "picture_crc": 0}
    return {"luma": float(grid.mean()), "picture_crc": zlib.crc32(grid.data)}


_EVT_HEADER = struct.Struct("<BBH")
_TOPICS = tuple(Topic)  # by value: the enum members are 0..n-1
_EVENT_TYPES = tuple(EventType)


class EventRecord(NamedTuple):
    """A serialised event on its way to Kafka or the JSONL file (immutable).

    A named tuple rather than a frozen dataclass: the publisher makes one per event on
    its hot path, and building a tuple costs a third of a frozen dataclass's
    ``__init__`` (which sets each field through ``object.__setattr__``).
    """

    topic: Topic
    key: str
    payload: bytes
    kind: EventType = EventType.UNKNOWN

    def pack(self) -> bytes:
        """Serialise for a record ring."""
        key = self.key.encode()
        if len(key) > 0xFFFF:
            raise ValueError("event key longer than 65535 bytes")
        return _EVT_HEADER.pack(int(self.topic), int(self.kind), len(key)) + key + self.payload

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> EventRecord:
        """Parse bytes made by :meth:`pack`; ValueError on anything else."""
        if type(data) is not bytes:
            data = bytes(data)
        size = len(data)
        if size < _EVT_HEADER_SIZE:
            raise ValueError(f"event record too short: {size} bytes")
        topic, kind, klen = _evt_header(data)
        end = _EVT_HEADER_SIZE + klen
        if end > size:
            raise ValueError("event record key runs past its end")
        try:
            return _new_tuple(
                cls,
                (
                    _TOPICS[topic],
                    data[_EVT_HEADER_SIZE:end].decode(),
                    data[end:],
                    _EVENT_TYPES[kind],
                ),
            )
        except IndexError:
            raise ValueError(f"malformed event record: topic {topic}, type {kind}") from None
        except UnicodeDecodeError as err:
            raise ValueError(f"malformed event record: {err}") from None

    @classmethod
    def unpack_all(cls, records: Iterable[bytes]) -> list[EventRecord]:
        """:meth:`unpack` of each record (the publisher's hot path: one C call for a
        list, ``_records.c``); ValueError at the first record that is not an event (a
        caller that mixes in other records then goes through them one by one)."""
        if type(records) is list:
            return _unpack_events(cls, records, _TOPICS, _EVENT_TYPES)
        return cls._unpack_all_py(records)

    @classmethod
    def _unpack_all_py(cls, records: Iterable[bytes]) -> list[EventRecord]:
        """:meth:`unpack_all` in Python (any iterable; the C loop's reference)."""
        out: list[EventRecord] = []
        append = out.append
        header = _evt_header
        hsize = _EVT_HEADER_SIZE
        topics = _TOPICS
        kinds = _EVENT_TYPES
        new = _new_tuple
        try:
            for data in records:
                topic, kind, klen = header(data)
                end = hsize + klen
                if end > len(data):
                    raise ValueError("event record key runs past its end")
                append(new(cls, (topics[topic], data[hsize:end].decode(), data[end:], kinds[kind])))
        except (struct.error, IndexError, UnicodeDecodeError, AttributeError) as err:
            raise ValueError(f"malformed event record: {err}") from None
        return out


_EVT_HEADER_SIZE: Final = _EVT_HEADER.size
_evt_header = _EVT_HEADER.unpack_from
_new_tuple = tuple.__new__


def rfc3339_from_ns(wall_ns: int) -> str:
    """UTC RFC 3339 timestamp with milliseconds, e.g. ``2026-11-27T10:00:00.123Z``."""
    dt = datetime.fromtimestamp(wall_ns / 1e9, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


MODEL_MAGIC = 0x314C444D  # b"MDL1" little endian
_MODEL_HEADER = struct.Struct("<I")


@dataclass(slots=True, frozen=True)
class ModelInfoRecord:
    """Sent by inference on the detection ring before its first detections.

    It tells analytics the class names of the running model, so custom models with
    their own classes are labelled correctly. Layout: ``u32 magic 'MDL1'`` then JSON.
    """

    class_names: tuple[str, ...]
    backend: str
    model: str

    def pack(self) -> bytes:
        """Serialise for a record ring."""
        body = json.dumps(
            {"class_names": list(self.class_names), "backend": self.backend, "model": self.model}
        ).encode()
        return _MODEL_HEADER.pack(MODEL_MAGIC) + body

    @classmethod
    def unpack(cls, data: bytes) -> ModelInfoRecord:
        """Parse bytes made by :meth:`pack`; ValueError on anything else."""
        if len(data) < 4 or _MODEL_HEADER.unpack_from(data)[0] != MODEL_MAGIC:
            raise ValueError("not a model info record")
        obj = json.loads(data[4:])
        return cls(tuple(obj["class_names"]), str(obj["backend"]), str(obj["model"]))


def record_magic(data: bytes) -> int:
    """The magic number a detection-ring record starts with (0 if too short)."""
    if len(data) < 4:
        return 0
    return int(struct.unpack_from("<I", data)[0])


CMD_MAGIC = 0x31444D43  # b"CMD1" little endian


@dataclass(slots=True, frozen=True)
class CameraBinding:
    """A camera as the stages know it: its stable key, id, frame ring and settings.

    ``key`` is the number frame rings and detection records carry for the camera; it is
    given once by the supervisor and never reused within a run. ``config`` is the
    camera's configuration entry as plain JSON data (the keys of a ``cameras:`` item).
    """

    key: int
    camera_id: str
    ring: str
    config: dict[str, Any]
    #: The inference worker that reads the camera's ring.
    worker: int = 0
    #: The camera's decode cell table and info board (decode workers only; else "").
    cells: str = ""
    info: str = ""
    #: The analytics shard that analyses the camera (``performance.analytics_workers``).
    shard: int = 0

    def to_json(self) -> dict[str, Any]:
        """Plain data for a command."""
        return {
            "key": self.key,
            "id": self.camera_id,
            "ring": self.ring,
            "config": self.config,
            "worker": self.worker,
            "cells": self.cells,
            "info": self.info,
            "shard": self.shard,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> CameraBinding:
        """Inverse of :meth:`to_json`; KeyError/TypeError/ValueError on bad data."""
        return cls(
            int(obj["key"]),
            str(obj["id"]),
            str(obj["ring"]),
            dict(obj["config"]),
            int(obj.get("worker", 0)),
            str(obj.get("cells", "")),
            str(obj.get("info", "")),
            int(obj.get("shard", 0)),
        )


class CommandOp(enum.StrEnum):
    """What a command asks of the stages."""

    #: The whole camera table of one inference worker (sent when it starts, so the next
    #: stages match it after any restart).
    SYNC = "sync"
    #: Start serving a camera (its ring exists; decode starts after the acknowledgement).
    ATTACH = "attach"
    #: Stop serving a camera (its decoder has already exited).
    DETACH = "detach"
    #: New settings (lines, zones, priority) for a camera already attached.
    UPDATE = "update"


@dataclass(slots=True, frozen=True)
class CommandRecord:
    """A change of the camera table, travelling in flow order with the data.

    The supervisor puts it on the inference stage's command ring; each stage applies it,
    records ``seq`` as applied, and forwards it on its output ring ahead of any record
    that depends on it. Layout: ``u32 magic 'CMD1'`` then JSON.
    """

    seq: int
    op: CommandOp
    cameras: tuple[CameraBinding, ...] = ()
    #: For ``sync``: the inference worker whose cameras ``cameras`` are (all of them).
    worker: int = 0

    def pack(self) -> bytes:
        """Serialise for a record ring."""
        body = json.dumps(
            {
                "seq": self.seq,
                "op": str(self.op),
                "cameras": [c.to_json() for c in self.cameras],
                "worker": self.worker,
            },
            separators=(",", ":"),
        ).encode()
        return struct.pack("<I", CMD_MAGIC) + body

    @classmethod
    def unpack(cls, data: bytes) -> CommandRecord:
        """Parse bytes made by :meth:`pack`; ValueError on anything else."""
        if record_magic(data) != CMD_MAGIC:
            raise ValueError("not a command record")
        try:
            obj = json.loads(bytes(data[4:]))
            return cls(
                int(obj["seq"]),
                CommandOp(obj["op"]),
                tuple(CameraBinding.from_json(c) for c in obj["cameras"]),
                int(obj.get("worker", 0)),
            )
        except (KeyError, TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"malformed command record: {err}") from None
