"""The tools/shm_inspect.py script lists segments, owners and ring counters, and sweeps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from itsd.shm import ControlBlock, FrameRing, RecordRing, Segment, segment_name

TOOL = Path(__file__).resolve().parents[3] / "tools" / "shm_inspect.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), *args], capture_output=True, text=True, check=True, timeout=60
    )


def test_inspect_lists_segments_and_counters(run_id: str, shm_dir: Path) -> None:
    ring = FrameRing.create(
        segment_name(run_id, "frame", "cam0"),
        camera_key=2,
        slot_count=3,
        max_width=8,
        max_height=8,
    )
    rec = RecordRing.create(segment_name(run_id, "rec", "det"), 1024)
    ctl = ControlBlock.create(segment_name(run_id, "ctl", "main"), 2)
    dead = Segment.create(segment_name("999999999x1", "frame", "old"), 4096)
    dead.close()
    try:
        ring.write(np.zeros((8, 8, 3), np.uint8), frame_id=1, capture_ts_ns=0, pts=0)
        rec.put(b"abc")
        ctl.slot(1).set_name("infer")
        ctl.slot(1).beat()

        table = _run().stdout
        assert "written=1 dropped=0 skipped=0 read=0 rejected=0" in table
        assert "slots: READY FREE FREE" in table
        assert "put=1 got=0" in table
        assert "infer" in table
        assert "DEAD" in table

        rows = {r["name"]: r for r in json.loads(_run("--json").stdout)}
        assert rows[ring.name]["type"] == "frame_ring"
        assert rows[ring.name]["camera_key"] == 2
        assert rows[ring.name]["counters"]["written"] == 1
        assert rows[rec.name]["counters"]["put"] == 1
        assert rows[ctl.name]["stages"][0]["name"] == "infer"
        assert rows[dead.name]["owner_alive"] is False

        swept = _run("--sweep")
        assert f"removed stale segment {dead.name}" in swept.stderr
        assert not (shm_dir / dead.name).exists()
        assert (shm_dir / ring.name).exists()
    finally:
        for seg in (ring, rec, ctl):
            seg.close()
            seg.unlink()


def test_inspect_prints_metrics_by_name(run_id: str, shm_dir: Path) -> None:
    from itsd.runtime import metrics as m
    from itsd.shm.cells import CellTable

    table = CellTable.create(segment_name(run_id, "cells", "decode"), 16)
    try:
        w = m.MetricWriter(table)
        w.cell(m.DECODE_FRAMES, camera="cam1").inc(12)
        w.cell(m.DECODE_NEXT_FRAME_ID, camera="cam1").set(13)
        out = _run().stdout
        assert 'itsd_decode_frames_total{camera="cam1"} = 12' in out
        assert m.DECODE_FRAMES.help in out
        assert 'itsd_decode_next_frame_id{camera="cam1"} = 13' in out
        rows = {r["name"]: r for r in json.loads(_run("--json").stdout)}
        metrics = rows[table.name]["metrics"]
        assert {x["name"] for x in metrics} == {
            "itsd_decode_frames_total",
            "itsd_decode_next_frame_id",
        }
    finally:
        table.close()
        table.unlink()
