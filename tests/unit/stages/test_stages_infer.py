"""The inference stage's batching round on real frame rings (shared memory, no model).

`_take` is what the worker loop runs each round: the high lane first and beyond the
adaptive limit, the normal lane round-robin up to the limit, live frames past their
deadline released unread and counted, lossless frames never dropped.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from itsd.engines.batcher import Batcher, BatchPolicy
from itsd.records import CameraBinding
from itsd.runtime import metrics as m
from itsd.runtime.metrics import MetricWriter
from itsd.shm import FrameRing, new_run_id
from itsd.shm.cells import CellTable
from itsd.stages.infer import _Cameras, _take

CAMERAS: dict[str, dict[str, Any]] = {
    "ems": {"id": "ems", "source": "rtsp://127.0.0.1/ems", "priority": 9},
    "a": {"id": "a", "source": "rtsp://127.0.0.1/a"},
    "b": {"id": "b", "source": "rtsp://127.0.0.1/b"},
    "file": {"id": "file", "source": "/data/clip.mp4", "realtime": False},
}


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[dict[str, FrameRing], _Cameras]]:
    path = Path(tempfile.mkdtemp(prefix="pytest-itsd-shm-", dir="/dev/shm"))
    monkeypatch.setenv("ITSD_SHM_DIR", str(path))
    run = new_run_id()
    table = CellTable.create(f"itsd-{run}-cells", 256)
    batcher: Batcher[int] = Batcher(
        BatchPolicy(max_batch=3, initial_batch=1, deadline_s=0.5, lane_priority=8)
    )
    cams = _Cameras(MetricWriter(table), batcher)
    rings = {}
    for key, (cid, cfg) in enumerate(CAMERAS.items(), start=1):
        name = f"itsd-{run}-ring{key}"
        rings[cid] = FrameRing.create(name, camera_key=key, slot_count=3, max_width=8, max_height=8)
        cams.attach(CameraBinding(key, cid, name, cfg))
    yield rings, cams
    cams.close()
    for ring in rings.values():
        ring.close()
        ring.unlink()
    table.close()
    table.unlink()
    shutil.rmtree(path, ignore_errors=True)


def put(ring: FrameRing, frame_id: int, age_s: float = 0.0) -> None:
    pixels = np.full((8, 8, 3), frame_id % 255, np.uint8)
    ts = time.time_ns() - int(age_s * 1e9)
    assert ring.write(pixels, frame_id=frame_id, capture_ts_ns=ts, pts=frame_id)


def ids(taken: list[Any]) -> list[str]:
    out = [cam.binding.camera_id for cam, _ in taken]
    for _, s in taken:
        s.release()
    return out


def test_high_lane_first_and_beyond_the_limit(rig: tuple[dict[str, FrameRing], _Cameras]) -> None:
    rings, cams = rig
    seen: list[list[str]] = []
    for frame_id in range(4):
        for ring in rings.values():
            put(ring, frame_id)
        taken, backlog = _take(cams, cams.batcher)
        seen.append(ids(taken))
        assert backlog
    # The emergency camera is in every batch; the limit of 1 rotates over the others.
    assert all(batch[0] == "ems" and len(batch) == 2 for batch in seen), seen
    assert [b[1] for b in seen] == ["a", "b", "file", "a"]


def test_stale_live_frames_are_dropped_and_counted_lossless_ones_never(
    rig: tuple[dict[str, FrameRing], _Cameras],
) -> None:
    rings, cams = rig
    cams.batcher.size.limit = 3
    put(rings["a"], 1, age_s=2.0)  # past the 0.5 s deadline
    put(rings["b"], 1, age_s=0.1)
    put(rings["file"], 1, age_s=60.0)  # a file's clock: no deadline
    taken, _ = _take(cams, cams.batcher)
    assert sorted(ids(taken)) == ["b", "file"]
    expired = {c.binding.camera_id: c.expired.get_int() for c in cams.by_key.values()}
    assert expired == {"ems": 0, "a": 1, "b": 0, "file": 0}
    assert cams.batcher.expired == {2: 1}
    # The dropped frame's slot went back to the ring: the next frame is taken.
    put(rings["a"], 2)
    taken, _ = _take(cams, cams.batcher)
    assert ids(taken) == ["a"]
    assert cams.metrics.cell(m.INFER_CAMERAS).get() == 4.0
