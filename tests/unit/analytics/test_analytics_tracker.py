"""ByteTrack-style tracker on synthetic but realistic detection streams."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from itsd.analytics.assignment import linear_sum_assignment
from itsd.analytics.boxes import iou_matrix
from itsd.analytics.tracker import Track, Tracker, TrackerConfig

T0 = 1000.0  # capture clock in seconds; any epoch must work
CAR, TRUCK = 2, 7

#: The thresholds these tests were written for (birth 0.6, high 0.5, 3 hits, 1 s): they
#: test the mechanisms, not the defaults (see test_analytics_counting_pipeline.py).
CLASSIC = TrackerConfig(high_thresh=0.5, new_track_thresh=0.6, min_hits=3, max_age_s=1.0)


def box(cx: float, cy: float, w: float = 80.0, h: float = 50.0) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


Det = tuple[str, list[float], float, int]  # ground-truth name, box, score, class id


def feed(tracker: Tracker, dets: Sequence[Det], t: float) -> tuple[list[Track], dict[str, int]]:
    """One frame: returns the tracks and, per ground-truth object, the id that covers it."""
    if dets:
        boxes = np.array([d[1] for d in dets], dtype=np.float32)
        scores = np.array([d[2] for d in dets], dtype=np.float32)
        classes = np.array([d[3] for d in dets], dtype=np.int32)
    else:
        boxes = np.zeros((0, 4), dtype=np.float32)
        scores = np.zeros(0, dtype=np.float32)
        classes = np.zeros(0, dtype=np.int32)
    out = tracker.update(boxes, scores, classes, t)
    owner: dict[str, int] = {}
    if out and dets:
        iou = iou_matrix(np.stack([tr.box for tr in out]), boxes)
        rows, cols = linear_sum_assignment(-iou)
        # Objects whose boxes coincide with another's cannot be told apart in this frame.
        twins = iou_matrix(boxes, boxes) > 0.95
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
            if iou[i, j] > 0.5 and twins[j].sum() == 1:
                owner[dets[j][0]] = out[i].track_id
    return out, owner


def ids_per_object(
    tracker: Tracker, frames: Sequence[tuple[float, Sequence[Det]]]
) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = defaultdict(list)
    for t, dets in frames:
        _, owner = feed(tracker, dets, t)
        for name, track_id in owner.items():
            seen[name].append(track_id)
    return seen


def test_car_crossing_the_frame_keeps_one_id() -> None:
    tracker = Tracker(CLASSIC)
    returned = []
    for k in range(120):  # 4 s at 30 fps, 450 px/s across a 1920 px frame
        t = T0 + k / 30
        out, _ = feed(tracker, [("a", box(60 + 450 * (t - T0), 600), 0.9, CAR)], t)
        returned.append([tr.track_id for tr in out])
    assert returned[0] == [] and returned[1] == []  # tentative until min_hits
    assert all(ids == [1] for ids in returned[2:])
    (track,) = tracker.active_tracks()
    assert track.hits == 120 and track.age_frames == 120 and track.time_since_update == 0
    assert track.first_seen == T0 and track.last_seen == pytest.approx(T0 + 119 / 30)
    assert track.velocity[0] == pytest.approx(450.0, rel=0.05)
    assert track.class_id == CAR and track.score == pytest.approx(0.9)


@pytest.mark.parametrize("lane_offset", [0.0, 25.0, 60.0, 120.0])
def test_two_cars_crossing_paths_keep_their_ids(lane_offset: float) -> None:
    frames = []
    for k in range(120):
        t = T0 + k / 30
        s = t - T0
        frames.append(
            (
                t,
                [
                    ("east", box(100 + 300 * s, 500), 0.9, CAR),
                    ("west", box(1300 - 300 * s, 500 + lane_offset), 0.85, CAR),
                ],
            )
        )
    seen = ids_per_object(Tracker(CLASSIC), frames)
    assert len(set(seen["east"])) == 1
    assert len(set(seen["west"])) == 1
    assert seen["east"][0] != seen["west"][0]
    assert len(seen["east"]) >= 110 and len(seen["west"]) >= 110


def test_missed_detections_within_max_age_keep_the_id() -> None:
    tracker = Tracker(CLASSIC)  # max_age_s = 1.0
    ids: list[int] = []
    for k in range(90):
        t = T0 + k / 30
        visible = not 30 <= k < 50  # hidden for 0.67 s
        dets = [("a", box(100 + 200 * (t - T0), 400), 0.9, CAR)] if visible else []
        out, owner = feed(tracker, dets, t)
        if not visible:
            assert out == []
            (lost,) = tracker.active_tracks()
            assert lost.time_since_update == k - 29
        ids.extend(owner.values())
    assert set(ids) == {1}
    assert len(ids) == 88 - 20
    assert tracker.pop_removed() == []


def test_track_is_dropped_after_max_age_and_reported_removed() -> None:
    tracker = Tracker(TrackerConfig(max_age_s=0.5))
    for k in range(10):
        feed(tracker, [("a", box(300, 300), 0.9, CAR)], T0 + k / 30)
    feed(tracker, [], T0 + 0.7)
    assert len(tracker.active_tracks()) == 1  # lost, 0.4 s since last seen
    feed(tracker, [], T0 + 0.9)
    assert tracker.active_tracks() == []
    assert tracker.pop_removed() == [1]
    assert tracker.pop_removed() == []
    for k in range(3):
        out, _ = feed(tracker, [("a", box(300, 300), 0.9, CAR)], T0 + 1.0 + k / 30)
    assert [tr.track_id for tr in out] == [2]


def test_low_score_detection_continues_a_track() -> None:
    tracker = Tracker(CLASSIC)
    for k in range(40):
        t = T0 + k / 30
        score = 0.9 if k < 15 else 0.3  # partly hidden: the detector is unsure
        out, _ = feed(tracker, [("a", box(200 + 150 * (t - T0), 300), score, CAR)], t)
        if k >= 2:
            assert [tr.track_id for tr in out] == [1]
    assert out[0].score == pytest.approx(0.3)
    assert out[0].hits == 40


def test_low_score_detections_never_start_a_track() -> None:
    tracker = Tracker(CLASSIC)
    for k in range(30):
        out, _ = feed(tracker, [("a", box(200 + 3 * k, 300), 0.45, CAR)], T0 + k / 30)
        assert out == []
    assert tracker.active_tracks() == []


def test_scores_between_high_and_new_track_threshold_do_not_start_tracks() -> None:
    tracker = Tracker(TrackerConfig(high_thresh=0.5, new_track_thresh=0.6))
    for k in range(10):
        feed(tracker, [("a", box(200, 300), 0.55, CAR)], T0 + k / 30)
    assert tracker.active_tracks() == []


def test_low_score_detection_does_not_revive_a_lost_track() -> None:
    tracker = Tracker(CLASSIC)
    for k in range(10):
        feed(tracker, [("a", box(300, 300), 0.9, CAR)], T0 + k / 30)
    feed(tracker, [], T0 + 10 / 30)  # lost
    for k in range(11, 15):
        out, _ = feed(tracker, [("a", box(300, 300), 0.3, CAR)], T0 + k / 30)
        assert out == []
    out, _ = feed(tracker, [("a", box(300, 300), 0.9, CAR)], T0 + 15 / 30)
    assert [tr.track_id for tr in out] == [1]


def test_skipped_frames_still_match_thanks_to_time_aware_prediction() -> None:
    tracker = Tracker(CLASSIC)
    speed, width = 600.0, 60.0
    times = [T0 + k / 30 for k in range(30)] + [T0 + 1.0 + 0.3 * j for j in range(1, 6)]
    previous: list[float] | None = None
    for t in times:
        current = box(100 + speed * (t - T0), 500, w=width, h=40)
        out, _ = feed(tracker, [("a", current, 0.9, CAR)], t)
        if t > T0 + 1.0:
            # The car moved further than its own width: without prediction no overlap.
            assert previous is not None
            assert iou_matrix(np.array([previous]), np.array([current]))[0, 0] == 0.0
            assert [tr.track_id for tr in out] == [1]
        previous = current


def test_irregular_frame_times_keep_the_id() -> None:
    # A new track has no velocity yet, so it is first seen at a steady 30 fps; after that
    # frames arrive at random intervals (the car moves up to 80 px, more than its width).
    rng = np.random.default_rng(7)
    times = [T0 + k / 30 for k in range(10)]
    for _ in range(90):
        times.append(times[-1] + float(rng.choice([1 / 30, 2 / 30, 1 / 10, 1 / 5])))
    frames = [(t, [("a", box(100 + 400 * (t - T0), 300, w=50, h=40), 0.9, CAR)]) for t in times]
    seen = ids_per_object(Tracker(CLASSIC), frames)
    assert set(seen["a"]) == {1}
    assert len(seen["a"]) == 98


def test_ids_are_unique_and_increase_in_order_of_appearance() -> None:
    tracker = Tracker(CLASSIC)
    first_id: dict[str, int] = {}
    for k in range(100):
        t = T0 + k / 30
        dets = [
            (f"car{j}", box(100 + 150 * j + 100 * (t - T0), 200 + 60 * j), 0.9, CAR)
            for j in range(6)
            if k >= 12 * j  # one car enters every 12 frames
        ]
        _, owner = feed(tracker, dets, t)
        for name, track_id in owner.items():
            first_id.setdefault(name, track_id)
            assert first_id[name] == track_id
    ordered = [first_id[f"car{j}"] for j in range(6)]
    assert ordered == sorted(ordered)
    assert len(set(ordered)) == 6
    active = [tr.track_id for tr in tracker.active_tracks()]
    assert active == sorted(set(active))


def test_class_flicker_keeps_one_track_with_the_dominant_class() -> None:
    tracker = Tracker(CLASSIC)
    ids: set[int] = set()
    for k in range(60):
        t = T0 + k / 30
        cls, score = (TRUCK, 0.6) if k % 4 == 3 else (CAR, 0.85)
        out, owner = feed(tracker, [("a", box(100 + 200 * (t - T0), 300), score, cls)], t)
        ids.update(owner.values())
        for tr in out:
            assert tr.class_id == CAR
    assert ids == {1}
    (track,) = tracker.active_tracks()
    assert track.class_scores[TRUCK] > 0.0


def test_track_class_follows_the_highest_accumulated_score() -> None:
    tracker = Tracker(CLASSIC)
    for k in range(30):
        cls = CAR if k < 5 else TRUCK
        out, _ = feed(tracker, [("a", box(300, 300), 0.9, cls)], T0 + k / 30)
    assert out[0].class_id == TRUCK
    assert out[0].track_id == 1


def test_class_aware_matching_splits_classes() -> None:
    tracker = Tracker(TrackerConfig(class_aware=True))
    for k in range(60):
        t = T0 + k / 30
        cls = TRUCK if k % 4 == 3 else CAR
        out, _ = feed(tracker, [("a", box(100 + 200 * (t - T0), 300), 0.85, cls)], t)
        assert all(tr.class_id == CAR and tr.track_id == 1 for tr in out)
    # Each truck detection started a tentative track that never reached min_hits.
    assert tracker.active_tracks()[0].track_id == 1


def test_tentative_track_is_dropped_after_a_miss() -> None:
    tracker = Tracker(CLASSIC)
    feed(tracker, [("a", box(300, 300), 0.9, CAR)], T0)
    feed(tracker, [("a", box(300, 300), 0.9, CAR)], T0 + 1 / 30)
    feed(tracker, [], T0 + 2 / 30)
    assert tracker.active_tracks() == []
    assert tracker.pop_removed() == []  # never reported, so nothing to forget
    for k in range(3, 6):
        out, _ = feed(tracker, [("a", box(300, 300), 0.9, CAR)], T0 + k / 30)
    assert [tr.track_id for tr in out] == [2]


def test_min_hits_one_reports_a_track_at_once() -> None:
    tracker = Tracker(TrackerConfig(min_hits=1))
    out, _ = feed(tracker, [("a", box(300, 300), 0.9, CAR)], T0)
    assert [tr.track_id for tr in out] == [1] and out[0].confirmed


def test_noisy_detections_with_misses_keep_ids() -> None:
    rng = np.random.default_rng(1234)
    tracker = Tracker(CLASSIC)
    cars = [  # start x, y, vx, vy, w, h
        (100.0, 300.0, 250.0, 10.0, 90.0, 60.0),
        (1700.0, 420.0, -300.0, 0.0, 100.0, 70.0),
        (900.0, 900.0, 0.0, -120.0, 60.0, 50.0),
    ]
    seen: dict[str, set[int]] = defaultdict(set)
    for k in range(150):
        t = T0 + k / 30
        s = t - T0
        dets: list[Det] = []
        for j, (x, y, vx, vy, w, h) in enumerate(cars):
            if rng.random() < 0.1:
                continue  # missed by the detector
            jitter = rng.normal(0.0, 2.0, size=4)
            b = [v + e for v, e in zip(box(x + vx * s, y + vy * s, w, h), jitter, strict=True)]
            dets.append((f"car{j}", b, float(rng.uniform(0.35, 0.95)), CAR))
        rng.shuffle(dets)
        _, owner = feed(tracker, dets, t)
        for name, track_id in owner.items():
            seen[name].add(track_id)
    assert all(len(ids) == 1 for ids in seen.values()), seen
    assert len({next(iter(ids)) for ids in seen.values()}) == 3


def test_hundred_cars_in_a_dense_scene_keep_their_ids() -> None:
    rng = np.random.default_rng(5)
    tracker = Tracker(CLASSIC)
    grid = [(150.0 + 170.0 * i, 80.0 + 95.0 * j) for i in range(10) for j in range(10)]
    seen: dict[str, set[int]] = defaultdict(set)
    for k in range(45):
        t = T0 + k / 30
        s = t - T0
        dets: list[Det] = []
        for n, (x, y) in enumerate(grid):
            vx = 120.0 if n % 2 == 0 else -120.0  # neighbouring lanes go opposite ways
            cx = x + vx * s + rng.normal(0.0, 1.5)
            dets.append((f"c{n}", box(cx, y + rng.normal(0.0, 1.5), 110.0, 70.0), 0.8, CAR))
        _, owner = feed(tracker, dets, t)
        for name, track_id in owner.items():
            seen[name].add(track_id)
    assert len(seen) == 100
    assert all(len(ids) == 1 for ids in seen.values())
    assert len(set().union(*seen.values())) == 100


def test_anchor_history_is_bounded_bottom_centre() -> None:
    tracker = Tracker(TrackerConfig(history_len=5))
    for k in range(20):
        out, _ = feed(tracker, [("a", box(300, 300, 80, 50), 0.9, CAR)], T0 + k / 30)
    track = out[0]
    assert len(track.anchor_history) == 5
    t, x, y = track.anchor_history[-1]
    assert t == pytest.approx(T0 + 19 / 30)
    assert x == pytest.approx(300.0, abs=0.5) and y == pytest.approx(325.0, abs=0.5)
    assert track.anchor == pytest.approx((x, y))
    assert track.box.dtype == np.float32 and track.box.shape == (4,)


def test_max_tracks_is_respected() -> None:
    tracker = Tracker(TrackerConfig(max_tracks=5))
    dets = [(f"c{j}", box(100 + 200 * j, 300), 0.9, CAR) for j in range(8)]
    for k in range(5):
        out, _ = feed(tracker, dets, T0 + k / 30)
    assert len(tracker.active_tracks()) == 5
    assert len(out) == 5


def test_reset_drops_tracks_and_ids_keep_increasing() -> None:
    tracker = Tracker(CLASSIC)
    for k in range(5):
        feed(tracker, [("a", box(300, 300), 0.9, CAR)], T0 + k / 30)
    tracker.reset()
    assert tracker.active_tracks() == []
    assert tracker.pop_removed() == [1]
    for k in range(3):
        out, _ = feed(tracker, [("a", box(300, 300), 0.9, CAR)], T0 + 1 + k / 30)
    assert [tr.track_id for tr in out] == [2]


def test_invalid_detections_are_ignored_and_bad_input_rejected() -> None:
    tracker = Tracker(TrackerConfig(min_hits=1))
    boxes = np.array([[np.nan, 0, 10, 10], [10, 10, 5, 20], [0, 0, 10, 10]], dtype=np.float32)
    out = tracker.update(boxes, np.array([0.9, 0.9, 0.9]), np.array([2, 2, 2]), T0)
    assert len(out) == 1
    np.testing.assert_allclose(out[0].box, [0, 0, 10, 10], atol=1e-4)
    assert tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0), T0 + 0.1) == []
    with pytest.raises(ValueError, match="disagree"):
        tracker.update(np.zeros((2, 4)), np.zeros(1), np.zeros(2), T0 + 0.2)
    with pytest.raises(ValueError, match="shape"):
        tracker.update(np.zeros((2, 5)), np.zeros(2), np.zeros(2), T0 + 0.2)
    with pytest.raises(ValueError, match="timestamp"):
        tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0), float("nan"))


def test_timestamp_going_backwards_is_tolerated() -> None:
    tracker = Tracker(CLASSIC)
    for k in range(10):
        feed(tracker, [("a", box(300 + 5 * k, 300), 0.9, CAR)], T0 + k / 30)
    out, _ = feed(tracker, [("a", box(350, 300), 0.9, CAR)], T0)  # clock stepped back
    assert [tr.track_id for tr in out] == [1]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"low_thresh": 0.6},
        {"new_track_thresh": 0.2},
        {"match_iou": 0.0},
        {"min_hits": 0},
        {"max_age_s": 0.0},
        {"max_tracks": 0},
        {"history_len": 1},
    ],
)
def test_config_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TrackerConfig(**kwargs)  # type: ignore[arg-type]


_frame = st.lists(
    st.tuples(
        st.floats(0, 600),
        st.floats(0, 400),
        st.floats(5, 120),
        st.floats(5, 120),
        st.floats(0.0, 1.0),
        st.integers(0, 7),
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 0.5), _frame), min_size=1, max_size=25))
def test_invariants_on_arbitrary_streams(frames: list[tuple[float, list[tuple]]]) -> None:  # type: ignore[type-arg]
    tracker = Tracker(TrackerConfig(max_tracks=20))
    t = T0
    reported: set[int] = set()
    removed: set[int] = set()
    highest = 0
    for dt, dets in frames:
        t += dt
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h, _, _ in dets]).reshape(-1, 4)
        scores = np.array([d[4] for d in dets])
        classes = np.array([d[5] for d in dets])
        out = tracker.update(boxes, scores, classes, t)
        ids = [tr.track_id for tr in out]
        assert ids == sorted(set(ids))
        assert len(out) <= len(dets)
        assert all(tr.confirmed and tr.time_since_update == 0 for tr in out)
        assert all(tr.last_seen == t for tr in out)
        active = tracker.active_tracks()
        assert len(active) <= 20
        active_ids = [tr.track_id for tr in active]
        assert active_ids == sorted(set(active_ids))
        new_ids = [i for i in active_ids if i > highest]
        highest = max([highest, *active_ids])
        assert not (set(new_ids) & (reported | removed))
        reported.update(ids)
        removed.update(tracker.pop_removed())
        assert not (removed & set(active_ids))


def test_det_index_points_at_the_matched_detection() -> None:
    from itsd.analytics import Tracker, TrackerConfig

    tracker = Tracker(TrackerConfig(min_hits=1))
    for step in range(5):
        x = 10.0 + 5 * step
        boxes = np.array([[0, 0, 1, 1], [x, 10, x + 20, 30], [200, 10, 220, 30]], np.float32)
        # the first box is below the low threshold and is ignored by the tracker
        scores = np.array([0.01, 0.9, 0.8], np.float32)
        tracks = tracker.update(boxes, scores, np.array([2, 2, 7]), step * 0.1)
    by_index = {t.det_index: t for t in tracks}
    assert set(by_index) == {1, 2}
    assert by_index[2].class_id == 7
