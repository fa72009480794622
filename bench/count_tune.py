"""Offline tuning of tracker and counting lines against hand-counted clips.

For every truth file (``tests/data/counting/*.truth.yaml``) the real detector is run once
over every frame of its clip (``count_cache.py``: ONNX Runtime, raw detections at a low
candidate threshold, cached as ``.npz`` in ``/tmp/itsd-count-cache``). Tracker and counting
lines are then replayed over the cached detections, as ``itsd/stages/analyze.py`` wires
them (time ``t = frame / fps``), for a grid of settings:

  cand     candidate threshold: detections below it are dropped before the tracker (what
           the inference stage's confidence would be)
  birth    ``TrackerConfig.new_track_thresh`` (and ``high_thresh`` when it is lower)
  hits     ``TrackerConfig.min_hits`` (matches to confirm a track)
  age      ``TrackerConfig.max_age_s`` (how long a lost track is kept)
  anchor   the point of the box that crosses the line

Each clip's counts per direction are scored against the truth with
``itsd.analytics.evaluate`` (tolerance one second of frames). The score of a setting is
the pooled F1 over the tuning clips, ties broken by the largest per-direction count
error; the held-out clips are reported separately and never used to choose.

Usage:
  .venv/bin/python bench/count_tune.py                # the grid, best settings first
  .venv/bin/python bench/count_tune.py --defaults     # only the library defaults
  .venv/bin/python bench/count_tune.py --legacy       # the old defaults
  options: --truth-dir DIR --media-dir DIR --top N --json FILE --verbose

This script must never be imported by the package or the tests.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from count_cache import DEFAULT_CACHE, DEFAULT_MODEL, ClipDetections, load_or_detect

from itsd.analytics import CountingLine, LineCounter, Tracker, TrackerConfig
from itsd.analytics.evaluate import (
    Crossing,
    Evaluation,
    Truth,
    evaluate,
    frame_of,
    load_truth,
)

REPO = Path(__file__).resolve().parents[1]
TRUTH_DIR = REPO / "tests" / "data" / "counting"
MEDIA_DIR = REPO.parent / "shared" / "media"
CACHE_CONF = 0.05


@dataclass(frozen=True)
class Setting:
    """One point of the grid. ``None`` keeps the library default."""

    cand: float | None = None
    birth: float | None = None
    hits: int | None = None
    age: float | None = None
    anchor: str | None = None

    def label(self) -> str:
        parts = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)]
        return " ".join(p for p in parts if not p.endswith("=None")) or "defaults"


LEGACY = Setting(cand=0.25, birth=0.6, hits=3, age=1.0)


def tracker_config(s: Setting) -> TrackerConfig:
    base = TrackerConfig()
    kw: dict[str, Any] = {}
    if s.cand is not None:
        kw["min_candidate_score"] = s.cand
        kw["low_thresh"] = min(base.low_thresh, s.cand) if s.cand < base.low_thresh else s.cand
    if s.birth is not None:
        kw["new_track_thresh"] = s.birth
        kw["high_thresh"] = min(base.high_thresh, s.birth)
    if s.hits is not None:
        kw["min_hits"] = s.hits
    if s.age is not None:
        kw["max_age_s"] = s.age
    if s == LEGACY:
        kw["high_thresh"] = 0.5
        kw["low_thresh"] = 0.25
    valid = {f.name for f in fields(TrackerConfig)}
    kw = {k: v for k, v in kw.items() if k in valid}
    return TrackerConfig(**{**{f.name: getattr(base, f.name) for f in fields(base)}, **kw})


def replay(det: ClipDetections, truth: Truth, s: Setting) -> list[Crossing]:
    """Run tracker and lines over the cached detections; return the counted crossings."""
    cfg = tracker_config(s)
    tracker = Tracker(cfg)
    line_kw: dict[str, Any] = {}
    if s.anchor is not None:
        line_kw["anchor"] = s.anchor
    lines = [
        CountingLine(
            line_id=ln.line_id,
            start=ln.start,
            end=ln.end,
            classes=frozenset(truth.classes),
            **line_kw,
        )
        for ln in truth.lines
    ]
    counter = LineCounter(lines, det.class_names)
    cut = s.cand if s.cand is not None else 0.0
    out: list[Crossing] = []
    for i in range(det.n_frames):
        boxes, scores, classes = det.frame(i)
        if cut > CACHE_CONF:
            keep = scores >= cut
            boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
        t = i / det.fps
        tracks = tracker.update(boxes, scores, classes, t)
        for c in counter.update(tracks, det.width, det.height, t):
            out.append(
                Crossing(
                    frame=frame_of(c.timestamp, det.fps),
                    line_id=c.line_id,
                    direction=c.direction,
                    class_name=c.class_name,
                )
            )
        counter.forget(tracker.pop_removed())
    return out


@dataclass
class Clip:
    name: str
    truth: Truth
    det: ClipDetections

    @property
    def tolerance(self) -> int:
        return max(1, round(self.det.fps))


def load_clips(truth_dir: Path, media_dir: Path, model: Path) -> list[Clip]:
    clips = []
    for path in sorted(truth_dir.glob("*.truth.yaml")):
        truth = load_truth(path)
        det = load_or_detect(media_dir / truth.clip, model, CACHE_CONF, DEFAULT_CACHE)
        clips.append(Clip(path.name.removesuffix(".truth.yaml"), truth, det))
    return clips


def run_setting(clips: list[Clip], s: Setting) -> dict[str, Evaluation]:
    return {
        c.name: evaluate(replay(c.det, c.truth, s), c.truth, tolerance=c.tolerance) for c in clips
    }


def score(clips: list[Clip], evals: dict[str, Evaluation], held_out: bool) -> tuple[float, int]:
    chosen = [c for c in clips if c.truth.held_out == held_out]
    counted = sum(evals[c.name].counted for c in chosen)
    true = sum(evals[c.name].true for c in chosen)
    matched = sum(evals[c.name].matched for c in chosen)
    f1 = 2.0 * matched / (counted + true) if counted + true else 1.0
    err = max((evals[c.name].max_count_error for c in chosen), default=0)
    return f1, err


def grid() -> Iterator[Setting]:
    for cand, birth, hits, age, anchor in itertools.product(
        (0.05, 0.1, 0.15, 0.25),
        (0.25, 0.3, 0.4, 0.5, 0.6),
        (1, 2, 3),
        (0.5, 1.0, 2.0),
        ("bottom_center", "center"),
    ):
        if birth < cand:
            continue
        yield Setting(cand=cand, birth=birth, hits=hits, age=age, anchor=anchor)


def table(clips: list[Clip], s: Setting, evals: dict[str, Evaluation], verbose: bool) -> str:
    rows = [f"setting: {s.label()}"]
    rows.append(
        f"  {'clip':<24} {'line':<6} {'dir':<4} {'true':>4} {'cnt':>4} {'match':>5} "
        f"{'miss':>4} {'false':>5} {'F1':>6}"
    )
    for c in clips:
        ev = evals[c.name]
        tag = " (held out)" if c.truth.held_out else ""
        for d in ev.scores:
            rows.append(
                f"  {c.name[:24]:<24} {d.line_id:<6} {d.direction:<4} {d.true:>4} "
                f"{d.counted:>4} {d.matched:>5} {d.missed:>4} {d.false:>5} {d.f1:>6.3f}{tag}"
            )
            if verbose and (d.missed_frames or d.false_frames):
                rows.append(f"      missed {list(d.missed_frames)} false {list(d.false_frames)}")
        rows.append(f"  {c.name[:24]:<24} all             F1 {ev.f1:.3f}{tag}")
    f1, err = score(clips, evals, held_out=False)
    rows.append(f"  TUNING clips: F1 {f1:.3f}, worst |count - true| per direction {err}")
    if any(c.truth.held_out for c in clips):
        f1h, errh = score(clips, evals, held_out=True)
        rows.append(f"  HELD-OUT clips: F1 {f1h:.3f}, worst |count - true| per direction {errh}")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--truth-dir", type=Path, default=TRUTH_DIR)
    ap.add_argument("--media-dir", type=Path, default=MEDIA_DIR)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--defaults", action="store_true", help="only the library defaults")
    ap.add_argument("--legacy", action="store_true", help="only the old defaults")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--json", type=Path, help="write every setting's result here")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    clips = load_clips(args.truth_dir, args.media_dir, args.model)
    if args.defaults or args.legacy:
        settings = [Setting()] if args.defaults else [LEGACY]
    else:
        settings = list(grid())
    t0 = time.perf_counter()
    results = []
    for s in settings:
        evals = run_setting(clips, s)
        f1, err = score(clips, evals, held_out=False)
        results.append((f1, -err, s, evals))
    results.sort(key=lambda r: (r[0], r[1]), reverse=True)
    print(
        f"{len(settings)} setting(s) over {len(clips)} clip(s) in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    for f1, neg_err, s, _ in results[: args.top]:
        if len(results) > 1:
            print(f"F1 {f1:.3f} err {-neg_err}  {s.label()}")
    best = results[0]
    print()
    print(table(clips, best[2], best[3], args.verbose))
    if args.json:
        payload = [
            {
                "setting": s.label(),
                "tuning_f1": f1,
                "clips": {k: v.to_dict() for k, v in ev.items()},
            }
            for f1, _, s, ev in results
        ]
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
