"""Tracker and counting lines together: the behaviours that make counts right.

A crossing made while a track was still tentative is counted once it is confirmed; class
flicker and duplicate boxes of one vehicle do not split its track; jitter on the line
counts once; the anchor point is chosen per line; a crossing made while the track's class
was one the line does not count is counted once the class settles on one it does.
"""

from __future__ import annotations

import numpy as np
import pytest

from itsd.analytics.classes import COCO_NAMES
from itsd.analytics.lines import ANCHORS, CountingLine, LineCounter, LineCrossing
from itsd.analytics.tracker import RECOMMENDED_CANDIDATE_CONFIDENCE, Tracker, TrackerConfig

CAR, MOTORCYCLE, BUS, TRUCK, PHONE = 2, 3, 5, 7, 67
W, H = 640, 360
FPS = 25.0
VEHICLES = frozenset({"car", "truck", "bus", "motorcycle"})


def box_at(cx: float, cy: float, w: float = 60.0, h: float = 40.0) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def run(
    frames: list[list[tuple[list[float], float, int]]],
    line: CountingLine,
    config: TrackerConfig | None = None,
) -> tuple[list[LineCrossing], Tracker, LineCounter]:
    tracker = Tracker(config or TrackerConfig())
    counter = LineCounter([line], COCO_NAMES)
    out: list[LineCrossing] = []
    for i, dets in enumerate(frames):
        boxes = np.array([d[0] for d in dets], dtype=np.float32).reshape(-1, 4)
        scores = np.array([d[1] for d in dets], dtype=np.float32)
        classes = np.array([d[2] for d in dets], dtype=np.int32)
        t = i / FPS
        tracks = tracker.update(boxes, scores, classes, t)
        out += counter.update(tracks, W, H, t)
        counter.forget(tracker.pop_removed())
    return out, tracker, counter


def vertical_line(**kw: object) -> CountingLine:
    return CountingLine("v", (0.5, 0.0), (0.5, 1.0), classes=VEHICLES, **kw)  # type: ignore[arg-type]


def test_defaults_take_moderate_detections_and_candidates() -> None:
    cfg = TrackerConfig()
    assert cfg.low_thresh == RECOMMENDED_CANDIDATE_CONFIDENCE
    assert cfg.new_track_thresh < 0.6
    assert cfg.min_hits <= 3


def test_crossing_while_tentative_is_counted_after_confirmation() -> None:
    # A car appears just left of the line, crosses it on its second frame and is only
    # confirmed on its fourth (min_hits 4): the crossing still counts, with its own time.
    cfg = TrackerConfig(min_hits=4)
    xs = [300.0 + 15.0 * k for k in range(10)]
    frames = [[(box_at(x, 200), 0.5, CAR)] for x in xs]
    crossings, _, _ = run(frames, vertical_line(), cfg)
    assert len(crossings) == 1
    c = crossings[0]
    assert c.direction == "out"  # left to right, for a line drawn top to bottom
    # The centre crossed x = 320 between frames 1 (315) and 2 (330).
    assert 1 / FPS < c.timestamp < 2 / FPS


def test_class_flicker_and_duplicates_do_not_split_a_track() -> None:
    # The detector alternates car / truck and often reports both boxes for one vehicle
    # (class-aware NMS): one track, one count, class car (the larger accumulated score).
    frames = []
    for k in range(20):
        x = 200.0 + 12.0 * k
        dets = [(box_at(x, 200), 0.55 if k % 3 else 0.3, CAR if k % 3 else TRUCK)]
        if k % 2 == 0:
            dets.append((box_at(x + 1.0, 200.5), 0.35, TRUCK if k % 3 else CAR))
        frames.append(dets)
    crossings, tracker, _ = run(frames, vertical_line())
    assert len(crossings) == 1
    assert crossings[0].class_name == "car"
    ids = {t.track_id for t in tracker.active_tracks()}
    assert len(ids) == 1


def test_jitter_on_the_line_counts_once() -> None:
    xs = [250, 270, 290, 310, 322, 316, 324, 317, 326, 318, 330, 350, 370, 390, 410]
    frames = [[(box_at(float(x), 200), 0.6, CAR)] for x in xs]
    crossings, _, counter = run(frames, vertical_line())
    assert len(crossings) == 1
    assert counter.totals()["v"]["out"] == {"car": 1}
    # Back and forth across the whole band counts once per direction at most.
    xs2 = [*range(250, 400, 10), *range(390, 240, -10), *range(250, 400, 10)]
    frames2 = [[(box_at(float(x), 200), 0.6, CAR)] for x in xs2]
    crossings2, _, _ = run(frames2, vertical_line())
    assert sorted(c.direction for c in crossings2) == ["in", "out"]


@pytest.mark.parametrize(("anchor", "expected"), [("bottom_center", 1), ("center", 0)])
def test_anchor_is_chosen_per_line(anchor: str, expected: int) -> None:
    # A tall box moves down until its bottom edge is well past a line at y = 0.5 (180 px)
    # while its centre stays above it.
    ys = [100.0 + 6.0 * k for k in range(12)]  # centres 100 .. 166, bottoms 150 .. 216
    frames = [[(box_at(320, y, h=100.0), 0.6, CAR)] for y in ys]
    line = CountingLine("h", (0.0, 0.5), (1.0, 0.5), classes=VEHICLES, anchor=anchor)
    crossings, _, _ = run(frames, line)
    assert len(crossings) == expected


def test_unknown_anchor_is_refused() -> None:
    with pytest.raises(ValueError, match="anchor"):
        CountingLine("h", (0.0, 0.5), (1.0, 0.5), anchor="feet")
    assert "bottom_center" in ANCHORS and "center" in ANCHORS


def test_crossing_under_an_uncounted_class_is_counted_when_the_class_settles() -> None:
    # Seen first as a "cell phone" (which the line does not count) while it crosses, then
    # as a car for long enough that car becomes the track's class: counted once, as a car,
    # at the time it crossed.
    frames = []
    for k in range(24):
        x = 260.0 + 8.0 * k
        cls, score = (PHONE, 0.5) if k < 10 else (CAR, 0.6)
        frames.append([(box_at(x, 200), score, cls)])
    crossings, _, counter = run(frames, vertical_line())
    assert len(crossings) == 1
    assert crossings[0].class_name == "car"
    assert crossings[0].timestamp < 10 / FPS
    assert counter.totals()["v"]["out"] == {"car": 1}


def test_low_score_detections_keep_a_track_but_do_not_start_one() -> None:
    cfg = TrackerConfig()
    weak = (cfg.low_thresh + cfg.new_track_thresh) / 2
    weak = min(weak, cfg.high_thresh - 0.01)
    # Only weak detections: no track is ever confirmed, nothing is counted.
    frames = [[(box_at(250.0 + 10 * k, 200), weak, CAR)] for k in range(15)]
    crossings, _, _ = run(frames, vertical_line(), cfg)
    assert crossings == []
    # A strong start, then the same weak detections: the track carries through.
    frames = [[(box_at(250.0 + 10 * k, 200), 0.7 if k < 3 else weak, CAR)] for k in range(15)]
    crossings, _, _ = run(frames, vertical_line(), cfg)
    assert len(crossings) == 1
