"""A restarted analytics process takes back a camera's open interval and raised alerts.

The interval saved mid-way closes exactly as the one that never stopped; a raised alert
comes back only to be cleared once (same alert, same raise time), and the scene file
survives garbage and version changes with a logged error, never an exception.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from itsd.analytics.alerts import CLEARED, RAISED, WRONG_WAY, Alert, AlertBook
from itsd.analytics.scene import Scene, SceneSpec
from itsd.analytics.summary import IntervalAccumulator
from itsd.analytics.totals import SceneStore
from itsd.analytics.zones import ZoneSpec

ZONE = ZoneSpec("lane", ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)))


def _fill(acc: IntervalAccumulator, t0: float, n: int) -> None:
    for k in range(n):
        t = t0 + k * 0.5
        acc.advance(t)
        acc.add_frame()
        acc.add_crossing("l1", "in", "car" if k % 3 else "truck")
        acc.add_speed(k % 4, 40.0 + k)
        acc.add_zone("lane", k % 3, 12.5 if k % 2 else None)
        acc.add_dwell("lane", 1.0 + k)


def test_an_interval_restored_mid_way_closes_as_if_never_stopped() -> None:
    whole = IntervalAccumulator(60.0, ["lane"], {"lane"})
    _fill(whole, 1000.0, 20)
    _fill(whole, 1010.0, 20)
    first = IntervalAccumulator(60.0, ["lane"], {"lane"})
    _fill(first, 1000.0, 20)
    saved = json.loads(json.dumps(first.to_state()))  # through JSON, as on disk
    again = IntervalAccumulator(60.0, ["lane"], {"lane"})
    assert again.restore_state(saved)
    _fill(again, 1010.0, 20)
    a, b = whole.advance(1100.0), again.advance(1100.0)
    assert a is not None and b is not None
    assert (a.start, a.end, a.frames, a.data) == (b.start, b.end, b.frames, b.data)


def test_an_interval_of_another_length_or_garbage_is_not_restored() -> None:
    acc = IntervalAccumulator(60.0, ["lane"], set())
    _fill(acc, 1000.0, 4)
    state = acc.to_state()
    other = IntervalAccumulator(30.0, ["lane"], set())
    assert not other.restore_state(state)
    assert other.start is None
    assert not IntervalAccumulator(60.0, [], set()).restore_state({"interval_s": 60.0})
    fewer = IntervalAccumulator(60.0, [], set())  # the zone was removed meanwhile
    assert fewer.restore_state(state)
    assert fewer.zones == {} and fewer.frames == 4


def _raised(t: float) -> Alert:
    return Alert(
        key="wrong_way:lane:7",
        alert_type=WRONG_WAY,
        severity="ALERT_SEVERITY_CRITICAL",
        state=RAISED,
        message="wrong way",
        t=t,
        zone_id="lane",
        track_ids=(7,),
        speed_kmh=31.0,
        evidence={"distance_m": 12.0},
    )


def test_a_raised_alert_comes_back_once_and_is_cleared_once() -> None:
    scene = Scene(SceneSpec("c", zones=(ZONE,), blind_camera=False, summary_interval_s=60.0))
    scene.book.raise_alert(_raised(1000.0))
    scene.summary.advance(1001.0)
    scene.summary.add_frame()
    scene.last_t = 1001.0
    state = json.loads(json.dumps(scene.to_state()))

    after = Scene(SceneSpec("c", zones=(ZONE,), blind_camera=False, summary_interval_s=60.0))
    cleared = after.restore_state(state, "analytics restarted")
    assert len(cleared) == 1
    c = cleared[0]
    assert c.state == CLEARED and c.key == "wrong_way:lane:7" and c.track_ids == (7,)
    assert c.evidence["raised_at_s"] == 1000.0  # the same alert id as its raise
    assert "analytics restarted" in c.message
    assert after.book.active == {}
    assert after.summary.frames == 1 and after.summary.start == 960.0
    # Nothing raised: nothing to clear.
    assert Scene(SceneSpec("c")).restore_state({"alerts": []}, "x") == []
    book = AlertBook()
    assert book.restore_state([{"key": "k"}, "junk"]) == 0  # type: ignore[list-item]


def test_the_scene_file_round_trips_and_survives_garbage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SceneStore(tmp_path, "cam/1")
    assert store.load() is None
    store.save({"last_t": 5.0})
    assert store.path.parent.name == "scene" and store.path.name == "cam_1.json"
    assert SceneStore(tmp_path, "cam/1").load() == {"last_t": 5.0}
    store.path.write_text("{not json")
    assert SceneStore(tmp_path, "cam/1").load() is None
    assert "unreadable" in caplog.text
    store.path.write_text(json.dumps({"version": 99, "scene": {}}))
    assert SceneStore(tmp_path, "cam/1").load() is None
    store.delete()
    assert not store.path.exists()


def test_a_scene_that_cannot_be_written_is_logged_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SceneStore(tmp_path, "c")
    store.save({"x": float("nan")})  # not JSON
    store.save({"x": object()})  # not serialisable
    assert not store.path.exists()
    assert caplog.text.count("cannot save its scene") == 1  # said once
    store.save({"x": 1.0})
    assert SceneStore(tmp_path, "c").load() == {"x": 1.0}
