"""Unit tests of the metric registry: definitions, keys, writers and readers by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from itsd.runtime import metrics as m
from itsd.shm import new_run_id, segment_name
from itsd.shm.cells import CellTable


@pytest.fixture
def table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CellTable:
    monkeypatch.setenv("ITSD_SHM_DIR", str(tmp_path))
    t = CellTable.create(segment_name(new_run_id(), "cells", "t"), 64)
    yield t  # type: ignore[misc]
    t.close()
    t.unlink()


def test_every_definition_is_well_formed() -> None:
    assert m.REGISTRY
    for name, d in m.REGISTRY.items():
        assert d.name == name
        assert d.help.endswith("."), name
        if d.kind is m.Kind.COUNTER:
            assert name.endswith("_total")
        assert name.startswith("itsd_") or name in m.DESIGN_METRICS, name


def test_define_refuses_bad_and_duplicate_names() -> None:
    with pytest.raises(ValueError, match="twice"):
        m.define("itsd_up", m.Kind.GAUGE, "Again.")
    with pytest.raises(ValueError, match="_total"):
        m.define("itsd_things", m.Kind.COUNTER, "No suffix.")
    with pytest.raises(ValueError, match="Prometheus"):
        m.define("itsd-bad", m.Kind.GAUGE, "Dash.")


def test_keys_round_trip() -> None:
    labels = {"camera": 'we"ird\\id'}
    key = m.series_key(m.DECODE_FRAMES, labels)
    assert key.startswith("itsd_decode_frames_total{camera=")
    assert m.parse_key(key) == ("itsd_decode_frames_total", labels)
    assert m.parse_key("itsd_up") == ("itsd_up", {})
    with pytest.raises(ValueError, match="labels"):
        m.series_key(m.DECODE_FRAMES, {})


def test_writer_and_reader_agree(table: CellTable) -> None:
    w = m.MetricWriter(table)
    w.cell(m.DECODE_FRAMES, camera="a").inc(3)
    w.cell(m.DECODE_LAST_FRAME, camera="a").set(1234.5)
    w.cell(m.INFER_SECONDS).inc(2_500_000)  # stored in microseconds
    w.cell(m.DECODE_NEXT_FRAME_ID, camera="a").set(77)
    got = {(s.defn.name, tuple(s.labels.items())): s.value for s in m.read_table(table)}
    assert got[("itsd_decode_frames_total", (("camera", "a"),))] == 3
    assert got[("itsd_decode_last_frame_timestamp_seconds", (("camera", "a"),))] == 1234.5
    assert got[("itsd_infer_seconds_total", ())] == pytest.approx(2.5)
    assert got[("itsd_decode_next_frame_id", (("camera", "a"),))] == 77
    assert not m.DECODE_NEXT_FRAME_ID.exported


def test_retire_label_removes_one_camera(table: CellTable) -> None:
    w = m.MetricWriter(table)
    w.cell(m.INFER_FRAMES, camera="a").inc()
    w.cell(m.INFER_FRAMES, camera="b").inc()
    w.cell(m.INFER_BATCHES).inc()
    assert w.retire_label("camera", "a") == 1
    names = {(s.defn.name, s.labels.get("camera")) for s in m.read_table(table)}
    assert names == {("itsd_infer_frames_total", "b"), ("itsd_infer_batches_total", None)}
