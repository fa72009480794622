"""``itsd eval``: run the real pipeline on a clip and score its line counts against a truth file.

The clip runs through the same processes as a camera (decode, inference, analytics,
publisher), with the configuration given (the embedded defaults when none), as a
lossless file source (``realtime: false``: every frame, in order, with back-pressure, at
the speed the machine allows) and with the truth file's counting lines. The line
crossings it publishes are matched one to one against the hand-counted crossings within
a frame tolerance (``itsd.analytics.evaluate``); the report gives, per line and
direction, counted, true, matched, missed and false crossings, precision, recall and F1.

A crossing's frame is the frame whose capture time is nearest to the crossing's own
(interpolated) time, so a crossing counted a few frames late (a track confirmed after it
crossed) is still placed where it happened.

This module must never draw, and never change the configuration file it is given.
"""

from __future__ import annotations

import bisect
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from itsd.analytics.evaluate import Crossing, Evaluation, Truth, evaluate, load_truth
from itsd.config import Config, apply_overrides, load_config
from itsd.errors import ConfigError, SourceError

EVAL_CAMERA = "eval"


@dataclass
class EvalRun:
    """What one evaluation produced."""

    clip: Path
    truth: Truth
    evaluation: Evaluation
    frames: int
    exit_code: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        return {
            "clip": str(self.clip),
            "truth": self.truth.source,
            "held_out": self.truth.held_out,
            "frames": self.frames,
            "exit_code": self.exit_code,
            **self.evaluation.to_dict(),
        }


def _ts(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def find_clip(truth: Truth, truth_path: Path, clip: str | None) -> Path:
    """The clip to run: given, else the truth's ``clip`` beside the truth file or in
    ``$ITSD_TEST_MEDIA`` / ``../shared/media``."""
    if clip:
        path = Path(clip)
        if not path.is_file():
            raise SourceError(f"{clip}: no such file")
        return path
    candidates = [truth_path.parent / truth.clip]
    if os.environ.get("ITSD_TEST_MEDIA"):
        candidates.append(Path(os.environ["ITSD_TEST_MEDIA"]) / truth.clip)
    candidates.append(Path.cwd().parent / "shared" / "media" / truth.clip)
    for c in candidates:
        if c.is_file():
            return c
    raise SourceError(
        f"{truth_path}: clip {truth.clip!r} not found (looked in "
        f"{', '.join(str(c.parent) for c in candidates)}); give it with --clip"
    )


def build_config(
    base: Config, clip: Path, truth: Truth, workdir: Path, log_level: str = "WARNING"
) -> Config:
    """The evaluation's configuration: ``base`` with one lossless camera and the truth's lines."""
    lines = [
        {
            "id": ln.line_id,
            "start": list(ln.start),
            "end": list(ln.end),
            "classes": list(truth.classes),
        }
        for ln in truth.lines
    ]
    camera = {
        "id": EVAL_CAMERA,
        "source": str(clip),
        "realtime": False,
        "target_fps": 240.0,  # every frame of the file
        "lines": lines,
    }
    data = base.model_dump(mode="json")
    data["cameras"] = [camera]
    data["kafka"] = {**data["kafka"], "enabled": False}
    cfg = apply_overrides(
        Config.model_validate(data),
        {
            "outputs.jsonl_path": str(workdir / "events.jsonl"),
            "outputs.detection_events": True,
            "server.grpc_port": 0,
            "server.monitoring_port": 0,
            "pid_file": str(workdir / "itsd.pid"),
            "state_dir": str(workdir / "state"),
            "supervisor.exit_when_sources_end": True,
            "production": False,
            "logging.level": log_level,
        },
        "eval options",
    )
    return cfg


def crossings_from_events(path: Path) -> tuple[list[Crossing], int]:
    """Line crossings of the events file, placed on frames; and the number of frames."""
    frame_ts: list[tuple[float, int]] = []
    raw: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            ev = json.loads(line)
            if ev.get("camera_id") != EVAL_CAMERA:
                continue
            if ev["event_type"] == "detection":
                frame_ts.append((_ts(ev["timestamp"]), int(ev["frame_id"])))
            elif ev["event_type"] == "line_crossing":
                raw.append(ev)
    frame_ts.sort()
    times = [t for t, _ in frame_ts]
    out = []
    for ev in raw:
        t = _ts(ev["timestamp"])
        i = bisect.bisect_left(times, t)
        near = [j for j in (i - 1, i) if 0 <= j < len(times)]
        frame = (
            min((frame_ts[j] for j in near), key=lambda x: abs(x[0] - t))[1]
            if near
            else int(ev["frame_id"])
        )
        d = ev["data"]
        out.append(Crossing(frame, d["line_id"], d["direction"], d.get("class_name", "")))
    return out, len({f for _, f in frame_ts})


def run_eval(
    truth_path: Path,
    clip: str | None = None,
    config_path: str | None = None,
    overrides: dict[str, Any] | None = None,
    tolerance: int = 12,
    match_class: bool = False,
    log_level: str = "WARNING",
) -> EvalRun:
    """Run the pipeline on the clip and score it; ConfigError/SourceError for bad input."""
    truth = load_truth(truth_path)
    clip_path = find_clip(truth, truth_path, clip)
    base = apply_overrides(load_config(config_path), overrides or {})
    from itsd.supervisor.service import serve  # heavy imports only when running

    with tempfile.TemporaryDirectory(prefix="itsd-eval-") as tmp:
        work = Path(tmp)
        cfg = build_config(base, clip_path, truth, work, log_level)
        code = serve(cfg)
        events = work / "events.jsonl"
        if not events.exists():
            raise ConfigError(f"the pipeline wrote no events (exit code {code}); see the log")
        counted, frames = crossings_from_events(events)
    ev = evaluate(counted, truth, tolerance=tolerance, match_class=match_class)
    return EvalRun(clip_path, truth, ev, frames, code)


def format_report(run: EvalRun) -> str:
    """The table people read."""
    rows = [
        f"{run.clip.name}: {run.frames} frames"
        + (" (held out of the tuning)" if run.truth.held_out else ""),
        f"{'LINE':<10} {'DIR':<4} {'COUNTED':>7} {'TRUE':>5} {'MATCHED':>7} {'MISSED':>6} "
        f"{'FALSE':>5} {'PREC':>6} {'RECALL':>6} {'F1':>6}",
    ]
    for s in run.evaluation.scores:
        rows.append(
            f"{s.line_id:<10} {s.direction:<4} {s.counted:>7} {s.true:>5} {s.matched:>7} "
            f"{s.missed:>6} {s.false:>5} {s.precision:>6.3f} {s.recall:>6.3f} {s.f1:>6.3f}"
        )
    e = run.evaluation
    rows.append(
        f"all: counted {e.counted}, true {e.true}, matched {e.matched}, F1 {e.f1:.3f}, "
        f"largest count error {e.max_count_error} (tolerance {e.tolerance} frames)"
    )
    return "\n".join(rows)
