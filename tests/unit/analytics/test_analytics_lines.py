"""Counting lines: direction convention, once-only counting, hysteresis, class filters."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from itsd.analytics.classes import COCO_NAMES
from itsd.analytics.lines import CountingLine, LineCounter, LineCrossing
from itsd.analytics.tracker import Track, Tracker, TrackerConfig

CAR, TRUCK = 2, 7
W = H = 1000  # frame size used unless a test says otherwise; hysteresis 0.01 -> 10 px
HORIZONTAL = CountingLine("h", (0.0, 0.5), (1.0, 0.5), name="main road")


def make_track(track_id: int = 1, class_id: int = CAR, confirmed: bool = True) -> Track:
    return Track(
        track_id=track_id,
        box=np.zeros(4, dtype=np.float32),
        class_id=class_id,
        score=0.9,
        hits=0,
        age_frames=0,
        time_since_update=0,
        first_seen=0.0,
        last_seen=0.0,
        confirmed=confirmed,
        anchor_history=deque(maxlen=30),
    )


def move(track: Track, t: float, x: float, y: float) -> None:
    """What the tracker does on a match: new box whose bottom centre is (x, y)."""
    track.box = np.array([x - 20, y - 30, x + 20, y], dtype=np.float32)
    track.anchor_history.append((t, x, y))
    track.hits += 1
    track.last_seen = t


def drive(
    counter: LineCounter,
    path: Sequence[tuple[float, float]],
    track: Track | None = None,
    size: tuple[int, int] = (W, H),
    dt: float = 0.1,
) -> list[LineCrossing]:
    track = track or make_track()
    crossings = []
    for k, (x, y) in enumerate(path):
        t = 100.0 + k * dt
        move(track, t, x, y)
        crossings += counter.update([track], size[0], size[1], t)
    return crossings


def straight(
    x0: float, y0: float, x1: float, y1: float, steps: int = 40
) -> list[tuple[float, float]]:
    return [(x0 + (x1 - x0) * k / steps, y0 + (y1 - y0) * k / steps) for k in range(steps + 1)]


def test_moving_down_across_a_left_to_right_line_is_in() -> None:
    # Line from (0, .5) to (1, .5): its left side (as displayed) is the upper half.
    counter = LineCounter([HORIZONTAL], COCO_NAMES)
    crossings = drive(counter, straight(400, 300, 400, 700))
    assert len(crossings) == 1
    c = crossings[0]
    assert (c.line_id, c.track_id, c.class_id, c.class_name, c.direction) == (
        "h",
        1,
        CAR,
        "car",
        "in",
    )
    assert c.position == pytest.approx((400.0, 500.0))
    assert c.timestamp == pytest.approx(100.0 + 2.0)  # 200 px at 10 px per 0.1 s step
    assert counter.totals() == {"h": {"in": {"car": 1}, "out": {}}}


def test_moving_up_is_out() -> None:
    counter = LineCounter([HORIZONTAL], COCO_NAMES)
    crossings = drive(counter, straight(400, 700, 400, 300))
    assert [c.direction for c in crossings] == ["out"]
    assert counter.totals() == {"h": {"in": {}, "out": {"car": 1}}}


def test_reversing_the_line_swaps_directions() -> None:
    reversed_line = CountingLine("r", (1.0, 0.5), (0.0, 0.5))
    counter = LineCounter([reversed_line], COCO_NAMES)
    assert [c.direction for c in drive(counter, straight(400, 300, 400, 700))] == ["out"]


def test_vertical_line_direction_follows_the_same_rule() -> None:
    # Facing down the image from (0.5, 0) to (0.5, 1), the left-hand side is the image's
    # right half: moving from right to left is "in".
    line = CountingLine("v", (0.5, 0.0), (0.5, 1.0))
    counter = LineCounter([line], COCO_NAMES)
    crossings = drive(counter, straight(800, 400, 200, 420))
    assert [c.direction for c in crossings] == ["in"]
    assert crossings[0].position[0] == pytest.approx(500.0)


def test_each_direction_counts_once_per_track() -> None:
    counter = LineCounter([HORIZONTAL], COCO_NAMES)
    path = (
        straight(400, 300, 400, 700)
        + straight(400, 700, 400, 300)
        + straight(400, 300, 400, 700)
        + straight(400, 700, 400, 300)
    )
    crossings = drive(counter, path)
    assert [c.direction for c in crossings] == ["in", "out"]
    other = make_track(track_id=2)
    assert [c.direction for c in drive(counter, straight(300, 300, 300, 700), other)] == ["in"]
    assert counter.totals()["h"] == {"in": {"car": 2}, "out": {"car": 1}}


def test_jitter_on_the_line_is_counted_once() -> None:
    counter = LineCounter([HORIZONTAL], COCO_NAMES)
    rng = np.random.default_rng(3)
    approach = straight(400, 300, 400, 500, steps=20)
    waiting = [(400 + rng.normal(0, 2), 500 + rng.uniform(-8, 8)) for _ in range(100)]
    leave = straight(400, 500, 400, 700, steps=20)
    crossings = drive(counter, approach + waiting + leave)
    assert [c.direction for c in crossings] == ["in"]


def test_vehicle_waiting_on_the_line_is_not_counted() -> None:
    counter = LineCounter([HORIZONTAL], COCO_NAMES)
    path = straight(400, 300, 400, 500, steps=20) + [(400, 500 + 8 * np.sin(k)) for k in range(200)]
    assert drive(counter, path) == []


def test_touching_the_line_without_crossing_is_not_counted() -> None:
    counter = LineCounter([HORIZONTAL], COCO_NAMES)
    assert drive(counter, straight(400, 300, 400, 500) + straight(400, 500, 400, 300)) == []
    # Poking a few pixels over (inside the hysteresis band) and back is not a crossing either.
    poke = straight(400, 300, 400, 506) + straight(400, 506, 400, 300)
    assert drive(counter, poke, make_track(track_id=2)) == []
    assert counter.totals() == {"h": {"in": {}, "out": {}}}


def test_passing_beyond_the_end_of_the_segment_is_not_counted() -> None:
    short = CountingLine("s", (0.2, 0.5), (0.4, 0.5))
    counter = LineCounter([short], COCO_NAMES)
    assert drive(counter, straight(600, 300, 600, 700)) == []
    crossing = drive(counter, straight(300, 300, 300, 700), make_track(track_id=2))
    assert [c.direction for c in crossing] == ["in"]


def test_class_filter() -> None:
    trucks_only = CountingLine("t", (0.0, 0.5), (1.0, 0.5), classes=frozenset({"truck"}))
    counter = LineCounter([trucks_only, HORIZONTAL], COCO_NAMES)
    car = drive(counter, straight(400, 300, 400, 700), make_track(1, CAR))
    truck = drive(counter, straight(400, 300, 400, 700), make_track(2, TRUCK))
    assert [(c.line_id, c.class_name) for c in car] == [("h", "car")]
    assert sorted((c.line_id, c.class_name) for c in truck) == [("h", "truck"), ("t", "truck")]
    assert counter.totals() == {
        "t": {"in": {"truck": 1}, "out": {}},
        "h": {"in": {"car": 1, "truck": 1}, "out": {}},
    }


def test_class_filter_accepts_any_iterable() -> None:
    line = CountingLine("x", (0.0, 0.5), (1.0, 0.5), classes={"car"})  # type: ignore[arg-type]
    assert line.classes == frozenset({"car"})
    assert line.counts_class("car") and not line.counts_class("bus")


@pytest.mark.parametrize("size", [(640, 360), (1920, 1080), (3840, 2160)])
def test_normalised_coordinates_scale_with_the_frame(size: tuple[int, int]) -> None:
    w, h = size
    diagonal = CountingLine("d", (0.25, 0.75), (0.75, 0.25))
    counter = LineCounter([diagonal], COCO_NAMES)
    # The same normalised path (from the lower right to the upper left) in pixels of this size.
    path = [(x * w, y * h) for x, y in straight(0.8, 0.8, 0.3, 0.3)]
    crossings = drive(counter, path, size=size)
    assert len(crossings) == 1
    # Facing from lower left to upper right, the lower right side is on the right: "out".
    assert crossings[0].direction == "out"
    x, y = crossings[0].position
    assert (x / w, y / h) == pytest.approx((0.5, 0.5))


def test_unconfirmed_tracks_are_ignored_until_confirmed_then_history_counts() -> None:
    counter = LineCounter([HORIZONTAL], COCO_NAMES)
    track = make_track(confirmed=False)
    out = []
    for k, (x, y) in enumerate(straight(400, 470, 400, 530, steps=6)):
        move(track, 100.0 + k * 0.1, x, y)
        out += counter.update([track], W, H, 100.0 + k * 0.1)
    assert out == []
    track.confirmed = True
    move(track, 101.0, 400, 540)
    out = counter.update([track], W, H, 101.0)
    assert [c.direction for c in out] == ["in"]
    assert out[0].timestamp == pytest.approx(100.3)


def test_frames_missed_by_the_counter_are_replayed_from_history() -> None:
    counter = LineCounter([HORIZONTAL], COCO_NAMES)
    track = make_track()
    out = []
    for k, (x, y) in enumerate(straight(400, 300, 400, 700)):
        move(track, 100.0 + k * 0.1, x, y)
        if k % 7 == 0:  # the counter only sees every seventh frame
            out += counter.update([track], W, H, 100.0 + k * 0.1)
    assert [c.direction for c in out] == ["in"]
    assert out[0].position == pytest.approx((400.0, 500.0))


def test_forget_drops_track_memory() -> None:
    counter = LineCounter([HORIZONTAL], COCO_NAMES)
    track = make_track()
    assert len(drive(counter, straight(400, 300, 400, 700), track)) == 1
    counter.forget([1, 99])
    # The same id, reused, starts from scratch: its new first anchor sets its side.
    assert len(drive(counter, straight(400, 300, 400, 700), make_track(1))) == 1
    assert counter.totals()["h"]["in"] == {"car": 2}


def test_memory_of_vanished_tracks_expires() -> None:
    counter = LineCounter([HORIZONTAL], COCO_NAMES, forget_after_s=5.0)
    drive(counter, straight(400, 300, 400, 700))
    counter.update([], W, H, 200.0)
    assert drive(counter, straight(400, 300, 400, 700)) != []  # id 1 counted afresh


def test_reset_zeroes_totals() -> None:
    counter = LineCounter([HORIZONTAL], COCO_NAMES)
    drive(counter, straight(400, 300, 400, 700))
    counter.reset()
    assert counter.totals() == {"h": {"in": {}, "out": {}}}


def test_totals_is_a_copy() -> None:
    counter = LineCounter([HORIZONTAL], COCO_NAMES)
    drive(counter, straight(400, 300, 400, 700))
    totals = counter.totals()
    totals["h"]["in"]["car"] = 100
    assert counter.totals()["h"]["in"]["car"] == 1


def test_with_the_real_tracker() -> None:
    tracker = Tracker(TrackerConfig(high_thresh=0.5, new_track_thresh=0.6, min_hits=3))
    line = CountingLine("h", (0.0, 0.5), (1.0, 0.5), anchor="bottom_center")
    counter = LineCounter([line], COCO_NAMES)
    rng = np.random.default_rng(11)
    crossings = []
    for k in range(90):  # two cars: one goes down, one goes up, at 30 fps with jitter
        t = 50.0 + k / 30
        s = t - 50.0
        down = (300.0, 250.0 + 200.0 * s)
        up = (700.0, 800.0 - 200.0 * s)
        boxes = [
            [cx - 40 + e[0], cy - 60 + e[1], cx + 40 + e[2], cy + e[3]]
            for (cx, cy), e in zip((down, up), rng.normal(0, 1.5, (2, 4)), strict=True)
        ]
        tracks = tracker.update(np.array(boxes), np.array([0.9, 0.8]), np.array([CAR, TRUCK]), t)
        crossings += counter.update(tracks, W, H, t)
        counter.forget(tracker.pop_removed())
    assert sorted((c.direction, c.class_name) for c in crossings) == [
        ("in", "car"),
        ("out", "truck"),
    ]
    by_dir = {c.direction: c for c in crossings}
    assert by_dir["in"].position == pytest.approx((300.0, 500.0), abs=3.0)
    assert by_dir["in"].timestamp == pytest.approx(50.0 + 1.25, abs=0.05)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": (0.5, 0.5), "end": (0.5, 0.5)}, "differ"),
        ({"start": (-0.1, 0.5), "end": (0.5, 0.5)}, "normalised"),
        ({"start": (0.1, 0.5), "end": (0.5, float("nan"))}, "normalised"),
        ({"start": (0.1, 0.5), "end": (0.5, 0.5), "hysteresis": -1.0}, "hysteresis"),
        ({"line_id": ""}, "empty"),
    ],
)
def test_line_validation(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"line_id": "l", "start": (0.0, 0.0), "end": (1.0, 1.0)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        CountingLine(**args)  # type: ignore[arg-type]


def test_counter_validation() -> None:
    with pytest.raises(ValueError, match="unique"):
        LineCounter([HORIZONTAL, HORIZONTAL], COCO_NAMES)
    counter = LineCounter([HORIZONTAL], COCO_NAMES)
    with pytest.raises(ValueError, match="frame size"):
        counter.update([], 0, 100, 1.0)
    assert LineCounter([], COCO_NAMES).update([make_track()], W, H, 1.0) == []


_inside = st.tuples(st.floats(100, 900), st.floats(0, 1000))


@settings(max_examples=300, deadline=None)
@given(
    st.tuples(st.floats(100, 900), st.floats(0, 489)),
    st.lists(_inside, max_size=30),
    st.tuples(st.floats(100, 900), st.floats(0, 1000)).filter(lambda p: abs(p[1] - 500) > 10.5),
)
def test_counts_agree_with_start_and_end_sides(
    start: tuple[float, float],
    middle: list[tuple[float, float]],
    end: tuple[float, float],
) -> None:
    """A path that starts above the line and ends clearly on one side, with the line spanning
    the whole width, is counted "in" exactly when it ends below, and never more than once per
    direction; when it ends above, "in" and "out" are equal."""
    counter = LineCounter([HORIZONTAL], COCO_NAMES)
    crossings = drive(counter, [start, *middle, end])
    ins = sum(c.direction == "in" for c in crossings)
    outs = sum(c.direction == "out" for c in crossings)
    assert ins <= 1 and outs <= 1
    if end[1] > 500:
        assert ins == 1
    else:
        assert ins == outs
    for c in crossings:
        assert c.position[1] == pytest.approx(500.0)
