"""Counting accuracy: counted line crossings against a hand-made ground truth.

A truth file (YAML, see ``tests/data/counting/*.truth.yaml``) names a clip, one or more
counting lines in normalised coordinates, and every true crossing as
``{frame, direction, class, note}``; directions follow ``itsd.analytics.lines`` (``in``
is from the left of ``start -> end`` to its right, as displayed). ``evaluate`` matches
the counted crossings to the true ones per line and direction, one to one, within a
frame tolerance: the most pairs first, then the smallest total ``|frame difference|``
(an optimal assignment, not a greedy one), and reports per line and direction how many
were counted, true, matched, missed and false, with precision, recall and F1. Classes
are compared only when asked (``match_class``); the share of matched pairs whose class
agrees is reported either way.

Frames rather than times are compared because the truth was made by looking at
numbered frames; a counter's crossing time converts with ``frame = t * fps``.

This module is pure: it reads truth files and nothing else, never runs an engine or a
tracker, never draws, and must never import a stage, an engine, a GPU library,
itsd.control, itsd.monitor or itsd.cli.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from itsd.analytics.assignment import match_eligible
from itsd.analytics.lines import DIRECTIONS

#: Vehicle classes a truth file counts unless it says otherwise.
DEFAULT_TRUTH_CLASSES: tuple[str, ...] = ("car", "truck", "bus", "motorcycle")


@dataclass(frozen=True)
class Crossing:
    """One crossing of a line: counted by the software or true (from a truth file)."""

    frame: int
    line_id: str
    direction: str
    class_name: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")


@dataclass(frozen=True)
class TruthLine:
    """A counting line of a truth file, normalised like ``CountingLine``."""

    line_id: str
    start: tuple[float, float]
    end: tuple[float, float]


@dataclass(frozen=True)
class Truth:
    """The content of one truth file."""

    clip: str
    lines: tuple[TruthLine, ...]
    crossings: tuple[Crossing, ...]
    classes: tuple[str, ...] = DEFAULT_TRUTH_CLASSES
    held_out: bool = False
    frames: int | None = None
    method: str = ""
    source: str = ""


def _point(value: Any, where: str) -> tuple[float, float]:
    if not (isinstance(value, Sequence) and len(value) == 2):
        raise ValueError(f"{where}: expected a point [x, y], got {value!r}")
    x, y = float(value[0]), float(value[1])
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise ValueError(f"{where}: expected normalised coordinates in 0..1, got {value!r}")
    return (x, y)


def parse_truth(data: Mapping[str, Any], source: str = "<truth>") -> Truth:
    """Build a ``Truth`` from the parsed YAML of a truth file; errors name ``source``."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a mapping at the top level")
    raw_lines = data.get("lines")
    if raw_lines is None and "line" in data:
        raw_lines = [data["line"]]
    if not raw_lines:
        raise ValueError(f"{source}: expected `line` or `lines`")
    lines = []
    for i, raw in enumerate(raw_lines):
        where = f"{source}: lines[{i}]"
        if not isinstance(raw, Mapping) or "id" not in raw:
            raise ValueError(f"{where}: expected a mapping with id, start and end")
        lines.append(
            TruthLine(
                line_id=str(raw["id"]),
                start=_point(raw.get("start"), f"{where}.start"),
                end=_point(raw.get("end"), f"{where}.end"),
            )
        )
    ids = {ln.line_id for ln in lines}
    default_line = lines[0].line_id if len(lines) == 1 else None
    crossings = []
    for i, raw in enumerate(data.get("crossings") or []):
        where = f"{source}: crossings[{i}]"
        if not isinstance(raw, Mapping) or "frame" not in raw or "direction" not in raw:
            raise ValueError(f"{where}: expected a mapping with frame and direction")
        line_id = str(raw.get("line", default_line or ""))
        if line_id not in ids:
            raise ValueError(f"{where}: unknown line {line_id!r} (lines: {sorted(ids)})")
        try:
            crossings.append(
                Crossing(
                    frame=int(raw["frame"]),
                    line_id=line_id,
                    direction=str(raw["direction"]),
                    class_name=str(raw.get("class", "")),
                    note=str(raw.get("note", "")),
                )
            )
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    classes = tuple(str(c) for c in data.get("classes_counted") or DEFAULT_TRUTH_CLASSES)
    frames = data.get("frames")
    return Truth(
        clip=str(data.get("clip", "")),
        lines=tuple(lines),
        crossings=tuple(crossings),
        classes=classes,
        held_out=bool(data.get("held_out", False)),
        frames=int(frames) if frames is not None else None,
        method=str(data.get("method", "")),
        source=source,
    )


def load_truth(path: str | Path) -> Truth:
    """Read a truth YAML file."""
    import yaml

    p = Path(path)
    with p.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    return parse_truth(data, source=str(p))


@dataclass(frozen=True)
class DirectionScore:
    """Agreement of counted and true crossings for one line and direction."""

    line_id: str
    direction: str
    counted: int
    true: int
    matched: int
    #: Matched pairs whose class names agree.
    class_agree: int
    #: Frame differences (counted - true) of the matched pairs.
    offsets: tuple[int, ...] = ()
    missed_frames: tuple[int, ...] = ()
    false_frames: tuple[int, ...] = ()

    @property
    def missed(self) -> int:
        return self.true - self.matched

    @property
    def false(self) -> int:
        return self.counted - self.matched

    @property
    def precision(self) -> float:
        return self.matched / self.counted if self.counted else 1.0

    @property
    def recall(self) -> float:
        return self.matched / self.true if self.true else 1.0

    @property
    def f1(self) -> float:
        total = self.counted + self.true
        return 2.0 * self.matched / total if total else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "line_id": self.line_id,
            "direction": self.direction,
            "counted": self.counted,
            "true": self.true,
            "matched": self.matched,
            "missed": self.missed,
            "false": self.false,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "class_agree": self.class_agree,
            "offsets": list(self.offsets),
            "missed_frames": list(self.missed_frames),
            "false_frames": list(self.false_frames),
        }


@dataclass(frozen=True)
class Evaluation:
    """Scores of one run against one truth: per line and direction, and pooled."""

    scores: tuple[DirectionScore, ...]
    tolerance: int
    match_class: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def _sum(self, attr: str) -> int:
        return sum(int(getattr(s, attr)) for s in self.scores)

    @property
    def counted(self) -> int:
        return self._sum("counted")

    @property
    def true(self) -> int:
        return self._sum("true")

    @property
    def matched(self) -> int:
        return self._sum("matched")

    @property
    def f1(self) -> float:
        """Pooled F1 over every line and direction (micro average)."""
        total = self.counted + self.true
        return 2.0 * self.matched / total if total else 1.0

    @property
    def max_count_error(self) -> int:
        """Largest ``|counted - true|`` over the lines and directions."""
        return max((abs(s.counted - s.true) for s in self.scores), default=0)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary."""
        return {
            "tolerance_frames": self.tolerance,
            "match_class": self.match_class,
            "counted": self.counted,
            "true": self.true,
            "matched": self.matched,
            "f1": round(self.f1, 4),
            "max_count_error": self.max_count_error,
            "by_direction": [s.to_dict() for s in self.scores],
            **self.extra,
        }


def _match(
    counted: Sequence[Crossing], true: Sequence[Crossing], tolerance: int, match_class: bool
) -> tuple[list[int], list[int]]:
    """Indices of the matched (counted, true) pairs: most pairs, then least frame error."""
    if not counted or not true:
        return [], []
    cf = np.array([c.frame for c in counted], dtype=np.float64)
    tf = np.array([t.frame for t in true], dtype=np.float64)
    diff = np.abs(cf[:, None] - tf[None, :])
    eligible = diff <= tolerance
    if match_class:
        cc = np.array([c.class_name for c in counted], dtype=object)
        tc = np.array([t.class_name for t in true], dtype=object)
        eligible &= cc[:, None] == tc[None, :]
    rows, cols = match_eligible(diff, eligible)
    return rows.tolist(), cols.tolist()


def evaluate(
    counted: Iterable[Crossing],
    truth: Truth | Sequence[Crossing],
    *,
    tolerance: int = 12,
    match_class: bool = False,
    line_ids: Iterable[str] | None = None,
) -> Evaluation:
    """Score ``counted`` crossings against ``truth`` (a ``Truth`` or its crossings).

    A counted and a true crossing can be paired when they are on the same line, in the
    same direction, at most ``tolerance`` frames apart and (with ``match_class``) of the
    same class; each is paired at most once. Every line of the truth (or of ``line_ids``)
    and both directions are reported, also when nothing crossed there.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    counted = list(counted)
    true = list(truth.crossings) if isinstance(truth, Truth) else list(truth)
    if line_ids is not None:
        ids = list(dict.fromkeys(line_ids))
    elif isinstance(truth, Truth):
        ids = [ln.line_id for ln in truth.lines]
    else:
        ids = list(dict.fromkeys([c.line_id for c in true] + [c.line_id for c in counted]))
    scores = []
    for line_id in ids:
        for direction in DIRECTIONS:
            c = sorted(
                (x for x in counted if x.line_id == line_id and x.direction == direction),
                key=lambda x: x.frame,
            )
            t = sorted(
                (x for x in true if x.line_id == line_id and x.direction == direction),
                key=lambda x: x.frame,
            )
            rows, cols = _match(c, t, tolerance, match_class)
            paired_c, paired_t = set(rows), set(cols)
            scores.append(
                DirectionScore(
                    line_id=line_id,
                    direction=direction,
                    counted=len(c),
                    true=len(t),
                    matched=len(rows),
                    class_agree=sum(
                        1
                        for r, k in zip(rows, cols, strict=True)
                        if c[r].class_name == t[k].class_name
                    ),
                    offsets=tuple(c[r].frame - t[k].frame for r, k in zip(rows, cols, strict=True)),
                    missed_frames=tuple(x.frame for k, x in enumerate(t) if k not in paired_t),
                    false_frames=tuple(x.frame for r, x in enumerate(c) if r not in paired_c),
                )
            )
    return Evaluation(scores=tuple(scores), tolerance=tolerance, match_class=match_class)


def frame_of(timestamp: float, fps: float) -> int:
    """The frame index of a crossing time, for clips timed as ``t = frame / fps``."""
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps}")
    return round(timestamp * fps)
