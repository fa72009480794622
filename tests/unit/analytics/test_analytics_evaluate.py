"""Counting evaluation: truth files, one-to-one matching within a tolerance, scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from itsd.analytics.evaluate import Crossing, evaluate, frame_of, load_truth, parse_truth

TRUTH_DIR = Path(__file__).resolve().parents[2] / "data" / "counting"


def cx(frame: int, direction: str = "in", line: str = "a", cls: str = "car") -> Crossing:
    return Crossing(frame=frame, line_id=line, direction=direction, class_name=cls)


def test_perfect_count_scores_one() -> None:
    truth = [cx(10), cx(50), cx(90, "out")]
    ev = evaluate([cx(12), cx(49), cx(91, "out")], truth, tolerance=5)
    assert ev.f1 == 1.0
    assert ev.max_count_error == 0
    by = {s.direction: s for s in ev.scores}
    assert by["in"].offsets == (2, -1)
    assert by["out"].matched == 1


def test_missed_and_false_are_reported_with_frames() -> None:
    ev = evaluate([cx(10), cx(200)], [cx(12), cx(100)], tolerance=5)
    s = next(s for s in ev.scores if s.direction == "in")
    assert (s.counted, s.true, s.matched, s.missed, s.false) == (2, 2, 1, 1, 1)
    assert s.missed_frames == (100,)
    assert s.false_frames == (200,)
    assert s.precision == 0.5 and s.recall == 0.5 and s.f1 == 0.5


def test_matching_is_optimal_not_greedy() -> None:
    # Greedy smallest-difference-first pairs counted 12 with true 10 (|2|) and leaves
    # counted 7 and true 14 (|7| > 4) apart; the optimal matching pairs 7-10 and 12-14.
    truth = [cx(10), cx(14)]
    counted = [cx(12), cx(7)]
    assert evaluate(counted, truth, tolerance=4).matched == 2


def test_each_crossing_is_matched_once() -> None:
    ev = evaluate([cx(10), cx(11), cx(12)], [cx(11)], tolerance=5)
    assert ev.matched == 1
    assert ev.counted == 3
    assert ev.scores[0].false == 2


def test_direction_and_line_must_agree() -> None:
    ev = evaluate([cx(10, "out"), cx(10, line="b")], [cx(10)], tolerance=5, line_ids=["a", "b"])
    assert ev.matched == 0
    assert len(ev.scores) == 4  # two lines x two directions, empty ones included


def test_class_is_compared_only_when_asked() -> None:
    counted, truth = [cx(10, cls="truck")], [cx(10, cls="car")]
    loose = evaluate(counted, truth, tolerance=5)
    assert loose.matched == 1 and loose.scores[0].class_agree == 0
    assert evaluate(counted, truth, tolerance=5, match_class=True).matched == 0


def test_empty_direction_scores_one_and_result_is_json() -> None:
    ev = evaluate([], [], tolerance=3, line_ids=["a"])
    assert ev.f1 == 1.0
    assert all(s.f1 == 1.0 and s.precision == 1.0 and s.recall == 1.0 for s in ev.scores)
    json.dumps(evaluate([cx(1)], [cx(2)], tolerance=3).to_dict())


def test_negative_tolerance_is_refused() -> None:
    with pytest.raises(ValueError):
        evaluate([], [], tolerance=-1)


def test_parse_truth_and_errors() -> None:
    data = {
        "clip": "x.mp4",
        "line": {"id": "l", "start": [0, 0.5], "end": [1, 0.5]},
        "crossings": [{"frame": 3, "direction": "in", "class": "car"}],
        "held_out": True,
    }
    t = parse_truth(data, "t.yaml")
    assert t.held_out and t.crossings[0].line_id == "l" and t.lines[0].end == (1.0, 0.5)
    with pytest.raises(ValueError, match=r"t.yaml: crossings\[0\]"):
        parse_truth({**data, "crossings": [{"frame": 1, "direction": "up"}]}, "t.yaml")
    with pytest.raises(ValueError, match="unknown line"):
        parse_truth({**data, "crossings": [{"frame": 1, "direction": "in", "line": "z"}]}, "t")
    with pytest.raises(ValueError, match="normalised"):
        parse_truth({**data, "line": {"id": "l", "start": [0, 2], "end": [1, 0]}}, "t")


def test_frame_of() -> None:
    assert frame_of(2.0, 12.5) == 25
    with pytest.raises(ValueError):
        frame_of(1.0, 0.0)


@pytest.mark.parametrize("path", sorted(TRUTH_DIR.glob("*.truth.yaml")), ids=lambda p: p.stem)
def test_shipped_truth_files_load(path: Path) -> None:
    truth = load_truth(path)
    assert truth.clip and truth.method
    assert truth.crossings
    frames = [c.frame for c in truth.crossings]
    assert frames == sorted(frames)
    assert truth.frames is None or max(frames) < truth.frames


def test_exactly_one_truth_file_is_held_out() -> None:
    assert sum(load_truth(p).held_out for p in TRUTH_DIR.glob("*.truth.yaml")) == 1
