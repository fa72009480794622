"""Zones, queues, violations, anomalies and interval summaries on synthetic traffic.

Vehicles drive known ground trajectories; a known homography (the same synthetic
camera as the calibration tests) draws their boxes in the picture; the real tracker and
the real ``Scene`` analyse them. The answers are known: queue lengths, which alerts must
be raised (once) and cleared (once), the speeds in each interval.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from itsd.analytics.alerts import CLEARED, RAISED, Alert, Thresholds
from itsd.analytics.calibration import Calibration
from itsd.analytics.scene import Scene, SceneSpec
from itsd.analytics.summary import IntervalAccumulator, percentile
from itsd.analytics.tracker import Tracker, TrackerConfig
from itsd.analytics.zones import ZoneSpec, points_in_polygon, queue_length

W, H = 1280, 720
FPS = 10.0
T0 = 1_800_000_000.0  # a multiple of 60 s: intervals start at T0
GROUND_TO_IMAGE = np.array([[0.030, 0.0175, 0.5], [0.0, -0.004, 0.95], [0.0, 0.035, 1.0]])
WORLD = np.array([[-5.0, 5.0], [5.0, 5.0], [5.0, 40.0], [-5.0, 40.0], [0.0, 20.0]])


def project(ground: np.ndarray) -> np.ndarray:
    g = np.column_stack((ground, np.ones(len(ground))))
    p = (GROUND_TO_IMAGE @ g.T).T
    return p[:, :2] / p[:, 2:3]


CAL = Calibration.fit(project(WORLD).tolist(), WORLD.tolist(), 0.0)  # +y is north


def lane_zone(**rules: object) -> ZoneSpec:
    """The northbound lane, x 0..3.5 m, y 5..45 m, as a picture polygon."""
    corners = np.array([[0.0, 5.0], [3.5, 5.0], [3.5, 45.0], [0.0, 45.0]])
    poly = tuple((float(x), float(y)) for x, y in project(corners))
    return ZoneSpec("lane", poly, **rules)  # type: ignore[arg-type]


#: A trajectory: time since start (s) -> ground position (x, y), or None when gone.
Path = Callable[[float], tuple[float, float] | None]


def run(
    scene: Scene, paths: list[Path], seconds: float, class_id: int = 2
) -> tuple[list[Alert], list[dict[str, object]]]:
    """Drive ``paths`` through the tracker and the scene; the alerts and summaries."""
    tracker = Tracker(TrackerConfig())
    alerts: list[Alert] = []
    summaries: list[dict[str, object]] = []
    for k in range(int(seconds * FPS)):
        t = T0 + k / FPS
        boxes = []
        for path in paths:
            p = path(k / FPS)
            if p is None:
                continue
            g = np.array([p])
            bx, by = project(g)[0]
            size = project(g + np.array([1.8, 0.0]))[0, 0] - bx
            w, h = size * W, size * W * 0.8
            boxes.append([bx * W - w / 2, by * H - h, bx * W + w / 2, by * H])
        b = np.array(boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.full(len(b), 0.9, np.float32)
        classes = np.full(len(b), class_id, np.int32)
        tracks = tracker.update(b, scores, classes, t)
        frame = scene.update(
            tracks,
            tracker.pop_removed(),
            W,
            H,
            t,
            lambda c: ("car", True),
            len(b),
            100.0,
            k,
        )
        alerts.extend(frame.alerts)
        summaries.extend(s.data for s in frame.summaries)
    last = scene.flush()
    if last is not None:
        summaries.append(last.data)
    return alerts, summaries


def straight(x: float, y0: float, v_kmh: float, t_start: float = 0.0) -> Path:
    def path(t: float) -> tuple[float, float] | None:
        if t < t_start:
            return None
        y = y0 + v_kmh / 3.6 * (t - t_start)
        return (x, y) if 2.0 <= y <= 60.0 else None

    return path


def of_type(alerts: list[Alert], alert_type: str, state: str) -> list[Alert]:
    return [a for a in alerts if a.alert_type == alert_type and a.state == state]


def test_points_in_polygon() -> None:
    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    pts = np.array([[0.5, 0.5], [1.5, 0.5], [0.01, 0.99], [-0.1, 0.5]])
    assert points_in_polygon(pts, square).tolist() == [True, False, True, False]


def test_queue_length_chains() -> None:
    pts = [(0.0, y) for y in (0.0, 7.0, 14.0, 40.0)]
    assert queue_length(pts, (0.0, 1.0)) == pytest.approx(14.0 + 5.0)


def test_wrong_way_raised_once_and_cleared_once() -> None:
    zone = lane_zone(allowed_heading_deg=0.0)
    scene = Scene(SceneSpec("c", CAL, (zone,), blind_camera=False))
    wrong = straight(1.75, 44.0, -40.0)  # southbound in the northbound lane
    right = straight(1.75, 6.0, 40.0, t_start=1.0)  # a car going the right way
    alerts, _ = run(scene, [wrong, right], seconds=8.0)
    raised = of_type(alerts, "ALERT_TYPE_WRONG_WAY", RAISED)
    cleared = of_type(alerts, "ALERT_TYPE_WRONG_WAY", CLEARED)
    assert len(raised) == 1 and len(cleared) == 1
    assert raised[0].track_ids == cleared[0].track_ids
    ev = raised[0].evidence
    assert ev["distance_m"] >= 10.0 and ev["min_distance_m"] == 10.0
    assert 150.0 < ev["heading_deg"] < 210.0
    assert cleared[0].t > raised[0].t


def test_stopped_vehicle_raised_once_and_cleared_once() -> None:
    zone = lane_zone(no_stopping_s=10.0)
    scene = Scene(SceneSpec("c", CAL, (zone,), blind_camera=False))

    def stops(t: float) -> tuple[float, float] | None:
        v = 30 / 3.6
        if t < 1.5:
            return (1.75, 8.0 + v * t)
        if t < 16.5:
            return (1.75, 8.0 + v * 1.5)  # stands for 15 s
        y = 8.0 + v * 1.5 + v * (t - 16.5)
        return (1.75, y) if y < 60 else None

    alerts, _ = run(scene, [stops], seconds=24.0)
    raised = of_type(alerts, "ALERT_TYPE_STOPPED_VEHICLE", RAISED)
    cleared = of_type(alerts, "ALERT_TYPE_STOPPED_VEHICLE", CLEARED)
    assert len(raised) == 1 and len(cleared) == 1
    assert raised[0].evidence["stopped_for_s"] > 10.0
    assert T0 + 11.5 <= raised[0].t <= T0 + 13.0
    assert T0 + 16.5 <= cleared[0].t <= T0 + 18.5


def test_queue_length_within_one_car_length() -> None:
    zone = lane_zone(queue=True)
    scene = Scene(SceneSpec("c", CAL, (zone,), blind_camera=False))
    spots = [8.0, 15.0, 22.0, 29.0, 36.0, 43.0]  # six cars 7 m apart, standing
    paths: list[Path] = [lambda t, y=y: (1.75, y) for y in spots]
    _, summaries = run(scene, paths, seconds=5.0)
    truth = (spots[-1] - spots[0]) + 4.5  # front of the first to the back of the last
    queue = summaries[-1]["longest_queue_m"]
    assert isinstance(queue, float)
    assert abs(queue - truth) <= 4.5, (queue, truth)
    zone_stats = summaries[-1]["zones"]["lane"]  # type: ignore[index]
    assert zone_stats["occupancy_mean"] > 5.0


def test_speeding_raised_once_and_cleared_once() -> None:
    zone = lane_zone(speed_limit_kmh=50.0)
    th = Thresholds(speeding_min_s=0.5)
    scene = Scene(SceneSpec("c", CAL, (zone,), thresholds=th, blind_camera=False))
    alerts, _ = run(scene, [straight(1.75, 6.0, 70.0), straight(1.75, 6.0, 40.0, 4.0)], 8.0)
    raised = of_type(alerts, "ALERT_TYPE_SPEEDING", RAISED)
    cleared = of_type(alerts, "ALERT_TYPE_SPEEDING", CLEARED)
    assert len(raised) == 1 and len(cleared) == 1
    assert raised[0].speed_kmh == pytest.approx(70.0, rel=0.05)


def test_congestion_raised_and_cleared() -> None:
    zone = lane_zone(congestion=True)
    th = Thresholds(congestion_window_s=5.0, congestion_min_vehicles=4.0)
    scene = Scene(SceneSpec("c", CAL, (zone,), thresholds=th, blind_camera=False))

    def crawl(y0: float) -> Path:
        def path(t: float) -> tuple[float, float] | None:
            if t < 10.0:
                return (1.75, y0 + 4 / 3.6 * t)  # 4 km/h
            y = y0 + 4 / 3.6 * 10.0 + 60 / 3.6 * (t - 10.0)  # then it flows at 60 km/h
            return (1.75, y) if y < 60 else None

        return path

    alerts, _ = run(scene, [crawl(y) for y in (8.0, 16.0, 24.0, 32.0, 40.0)], 18.0)
    assert len(of_type(alerts, "ALERT_TYPE_CONGESTION", RAISED)) == 1
    assert len(of_type(alerts, "ALERT_TYPE_CONGESTION", CLEARED)) == 1


def test_blind_camera_reasons() -> None:
    th = Thresholds(blind_after_s=5.0, freeze_after_s=3.0, dark_after_s=3.0)
    scene = Scene(SceneSpec("c", None, (), thresholds=th))
    got: list[Alert] = []
    for k in range(300):  # 30 s at 10 fps
        t = T0 + k / FPS
        dets = 3 if k < 50 or k >= 200 else 0  # silent from 5 s to 20 s
        luma = 2.0 if 100 <= k < 160 else 90.0  # dark from 10 s to 16 s
        crc = 7 if 230 <= k < 280 else k  # frozen from 23 s to 28 s
        got.extend(scene.update([], [], W, H, t, lambda c: ("car", True), dets, luma, crc).alerts)
    reasons = [(a.evidence.get("reason"), a.state) for a in got]
    for reason in ("no_detections", "dark", "frozen"):
        assert reasons.count((reason, RAISED)) == 1, reasons
        assert reasons.count((reason, CLEARED)) == 1, reasons


def test_no_calibration_no_speed_in_summaries() -> None:
    scene = Scene(SceneSpec("c", None, (), blind_camera=False))
    _, summaries = run(scene, [straight(1.75, 6.0, 50.0)], 4.0)
    speed = summaries[-1]["speed"]
    assert speed == {
        "samples": 0,
        "mean_kmh": None,
        "p85_kmh": None,
        "histogram": {"bin_kmh": 5, "counts": []},
    }


def test_interval_summaries() -> None:
    scene = Scene(SceneSpec("c", CAL, (lane_zone(),), summary_interval_s=5.0, blind_camera=False))
    paths = [straight(1.75, 6.0, 45.0), straight(1.75, 6.0, 54.0, t_start=5.5)]
    _, summaries = run(scene, paths, seconds=8.0)
    assert len(summaries) == 2
    first, last = summaries
    assert first["interval"] == {"start": T0, "end": T0 + 5.0, "seconds": 5.0}
    assert last["interval"]["start"] == T0 + 5.0  # type: ignore[index]
    assert last["interval"]["seconds"] == pytest.approx(2.9)  # type: ignore[index]
    s1 = first["speed"]
    assert s1["samples"] == 1 and s1["mean_kmh"] == pytest.approx(45.0, rel=0.03)  # type: ignore[index]
    assert sum(s1["histogram"]["counts"]) == 1  # type: ignore[index]
    assert s1["histogram"]["counts"][int(s1["mean_kmh"] // 5)] == 1  # type: ignore[index]
    s2 = last["speed"]
    assert s2["samples"] == 1 and s2["p85_kmh"] == pytest.approx(54.0, rel=0.03)  # type: ignore[index]
    lane = first["zones"]["lane"]  # type: ignore[index]
    assert 0.0 < lane["occupied_fraction"] <= 1.0
    assert lane["dwell_mean_s"] == pytest.approx(3.2, abs=0.6)  # 40 m at 12.5 m/s
    assert first["longest_queue_m"] is None


def test_interval_counts_are_per_interval() -> None:
    acc = IntervalAccumulator(60.0, [], set())
    assert acc.advance(T0 + 1) is None
    acc.add_frame()
    acc.add_crossing("mid", "in", "car")
    acc.add_crossing("mid", "in", "car")
    closed = acc.advance(T0 + 61)
    assert closed is not None and closed.data["interval_counts"] == {"mid": {"in": {"car": 2}}}
    acc.add_frame()
    last = acc.flush()
    assert last is not None and last.data["interval_counts"] == {}
    assert last.data["interval"]["seconds"] == pytest.approx(1.0)


def test_percentile() -> None:
    assert percentile([10.0, 20.0, 30.0, 40.0], 85.0) == pytest.approx(35.5)
    assert percentile([42.0], 85.0) == 42.0


def test_an_interval_flushed_early_is_never_summarised_twice() -> None:
    acc = IntervalAccumulator(60.0, [], set())
    acc.advance(T0 + 10)
    acc.add_frame()
    first = acc.flush()  # the camera went quiet
    acc.advance(T0 + 30)  # and came back within the same minute
    acc.add_frame()
    rest = acc.advance(T0 + 61)
    assert first is not None and rest is not None
    assert first.data["interval"]["end"] == T0 + 10
    assert rest.data["interval"]["start"] == T0 + 10
    assert rest.data["interval"]["end"] == T0 + 60
