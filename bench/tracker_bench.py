"""Tracker benchmark: our tracker and counting lines beside supervision's ByteTrack.

Both trackers get the same detections in the same run and are timed the same way: only
the update calls are timed, in-process, with ``time.perf_counter``; the tracker alone
(``Tracker.update`` / ``ByteTrack.update_with_detections``) and the tracker with the
counting lines (``+ LineCounter.update`` / ``+ LineZone.trigger``). Rounds alternate which
side runs first; medians over the rounds are reported.

Our side runs in this interpreter (the project's venv). supervision runs in a separate
interpreter (``--sv-python``, by default ``/tmp/sv-venv/bin/python``) so that the
project's environment stays untouched: this same file is run there with ``--worker``, it
reads the detections from an ``.npz`` file written here and answers in a JSON file. The
worker imports only numpy and supervision. Create that environment with

  python3 -m venv /tmp/sv-venv && /tmp/sv-venv/bin/pip install supervision==0.30.9 numpy

(0.30.9 is the last release with ``sv.ByteTrack``; 0.31 moved it to the ``trackers``
package). Without it only our side runs.

Measured:

1. Throughput on a synthetic scene (fixed seed): 50 detections in every frame, objects
   moving at constant velocity with box noise, some low-score, some missed for a frame,
   some false detections, objects leaving and entering. Tracked detections per second,
   frames per second and cameras per core at 10 fps (frames per second / 10).
2. Counting on the hand-counted clips (``tests/data/counting/*.truth.yaml``), from the
   cached raw detections of ``count_cache.py`` (threshold 0.05, every detection given
   to both trackers): our tracker and lines with the itsd defaults, ByteTrack with its
   defaults (``track_activation_threshold`` 0.25, births from 0.35, 30 frames lost
   buffer at 30 fps) and ByteTrack "tuned" (activation 0.15, so births from 0.25 like
   ours, and a 2 s lost buffer like ours), each with one ``sv.LineZone`` per truth line,
   anchor the box centre (our default anchor too). A supervision crossing counts when its
   detection's class is one the truth counts (LineZone's per-class counts summed over
   those classes), at the frame ``trigger`` reports it. Scored with
   ``itsd.analytics.evaluate`` (tolerance one second of frames), as ``count_tune.py``.

Usage:
  .venv/bin/python bench/tracker_bench.py [--rounds 5] [--frames 1000] [--json FILE]
      [--sv-python /tmp/sv-venv/bin/python] [--cpu N] [--no-clips]

This script must never be imported by the package or the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# One core: keep numpy's and BLAS's thread pools single-threaded on both sides (set before
# numpy is imported).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TRUTH_DIR = REPO / "tests" / "data" / "counting"
MEDIA_DIR = REPO.parent / "shared" / "media"
DEFAULT_SV_PYTHON = Path("/tmp/sv-venv/bin/python")
SV_SETUP = "python3 -m venv /tmp/sv-venv && /tmp/sv-venv/bin/pip install supervision==0.30.9 numpy"
SYNTH = "synthetic"
SYNTH_FPS = 10.0
SYNTH_W, SYNTH_H = 1920, 1080
WARMUP_FRAMES = 50
VEHICLES = (2, 3, 5, 7)  # COCO car, motorcycle, bus, truck

#: supervision ByteTrack settings: name -> constructor keywords (frame_rate added per clip).
SV_SETTINGS: dict[str, dict[str, Any]] = {
    "sv-default": {},
    "sv-tuned": {"track_activation_threshold": 0.15, "lost_track_buffer": 60},
}


# --------------------------------------------------------------------- inputs


@dataclass
class Seq:
    """Every frame's detections of one input, flattened like ``count_cache.ClipDetections``."""

    name: str
    fps: float
    width: int
    height: int
    offsets: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    #: Counting lines: (line_id, (x0, y0), (x1, y1)) normalised.
    lines: list[tuple[str, tuple[float, float], tuple[float, float]]]
    counted_classes: list[str]
    #: Synthetic only: how many times an object's true centre crossed the line.
    true_crossings: int | None = None

    @property
    def n_frames(self) -> int:
        return int(self.offsets.size - 1)

    def frames(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for i in range(self.n_frames):
            a, b = int(self.offsets[i]), int(self.offsets[i + 1])
            out.append((self.boxes[a:b], self.scores[a:b], self.class_ids[a:b]))
        return out


def synthetic(n_frames: int, n_det: int = 50, seed: int = 1234) -> Seq:
    """A scene with exactly ``n_det`` detections per frame (fixed seed).

    ``n_det`` objects are in view at any time, moving at constant velocity (box noise
    about 2 px). An object leaving the frame is replaced by a new one entering at an
    edge. Every frame about 5 % of the objects are missed and replaced by as many false
    detections at random places (low scores), and about 15 % of the objects are seen
    with a low score (0.1 .. 0.3).
    """
    rng = np.random.default_rng(seed)
    w, h = SYNTH_W, SYNTH_H

    def spawn(k: int, anywhere: bool) -> dict[str, np.ndarray]:
        size = rng.uniform(40, 140, (k, 1)) * np.array([[1.0, 0.7]]) * rng.uniform(0.8, 1.2, (k, 2))
        speed = rng.uniform(5, 30, k)
        angle = rng.uniform(0, 2 * np.pi, k)
        vel = np.stack([np.cos(angle), np.sin(angle)], axis=1) * speed[:, None]
        if anywhere:
            ctr = rng.uniform([0, 0], [w, h], (k, 2))
        else:  # at the edge the object moves in from
            ctr = rng.uniform([0, 0], [w, h], (k, 2))
            horiz = np.abs(vel[:, 0]) >= np.abs(vel[:, 1])
            ctr[horiz, 0] = np.where(vel[horiz, 0] > 0, 0.0, w)
            ctr[~horiz, 1] = np.where(vel[~horiz, 1] > 0, 0.0, h)
        return {
            "ctr": ctr,
            "size": size,
            "vel": vel,
            "score": rng.uniform(0.45, 0.95, k),
            "cls": rng.choice(VEHICLES, k),
        }

    objs = spawn(n_det, anywhere=True)
    true_crossings = 0
    offsets = [0]
    boxes, scores, classes = [], [], []
    for _ in range(n_frames):
        ctr, size = objs["ctr"], objs["size"]
        box = np.concatenate([ctr - size / 2, ctr + size / 2], axis=1)
        box += rng.normal(0, 2.0, box.shape)
        score = np.clip(objs["score"] + rng.normal(0, 0.05, n_det), 0.3, 0.99)
        low = rng.random(n_det) < 0.15
        score[low] = rng.uniform(0.1, 0.3, int(low.sum()))
        cls = objs["cls"].copy()
        missed = rng.random(n_det) < 0.05
        k = int(missed.sum())
        if k:
            fsize = rng.uniform(30, 100, (k, 2))
            fctr = rng.uniform([0, 0], [w, h], (k, 2))
            box[missed] = np.concatenate([fctr - fsize / 2, fctr + fsize / 2], axis=1)
            score[missed] = rng.uniform(0.1, 0.4, k)
        order = rng.permutation(n_det)
        boxes.append(box[order].astype(np.float32))
        scores.append(score[order].astype(np.float32))
        classes.append(cls[order].astype(np.int32))
        offsets.append(offsets[-1] + n_det)
        # Move; replace what left the frame.
        objs["ctr"] = ctr + objs["vel"]
        y0, y1 = ctr[:, 1], objs["ctr"][:, 1]
        inside = (ctr[:, 0] >= 0) & (ctr[:, 0] <= w)
        true_crossings += int((((y0 < h / 2) != (y1 < h / 2)) & inside).sum())
        gone = (
            (objs["ctr"][:, 0] < -size[:, 0] / 2)
            | (objs["ctr"][:, 0] > w + size[:, 0] / 2)
            | (objs["ctr"][:, 1] < -size[:, 1] / 2)
            | (objs["ctr"][:, 1] > h + size[:, 1] / 2)
        )
        k = int(gone.sum())
        if k:
            new = spawn(k, anywhere=False)
            for key in objs:
                objs[key][gone] = new[key]
    return Seq(
        name=SYNTH,
        fps=SYNTH_FPS,
        width=w,
        height=h,
        offsets=np.asarray(offsets, np.int64),
        boxes=np.concatenate(boxes),
        scores=np.concatenate(scores),
        class_ids=np.concatenate(classes),
        lines=[("mid", (0.0, 0.5), (1.0, 0.5))],
        counted_classes=["car", "motorcycle", "bus", "truck"],
        true_crossings=true_crossings,
    )


def load_clips(truth_dir: Path, media_dir: Path) -> tuple[list[Seq], dict[str, Any]]:
    """The hand-counted clips' cached detections (running the detector if not cached)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from count_cache import DEFAULT_MODEL, load_or_detect

    from itsd.analytics.evaluate import load_truth

    seqs, truths = [], {}
    for path in sorted(truth_dir.glob("*.truth.yaml")):
        truth = load_truth(path)
        det = load_or_detect(media_dir / truth.clip, DEFAULT_MODEL, 0.05)
        name = path.name.removesuffix(".truth.yaml")
        truths[name] = truth
        seqs.append(
            Seq(
                name=name,
                fps=det.fps,
                width=det.width,
                height=det.height,
                offsets=det.offsets,
                boxes=det.boxes.astype(np.float32),
                scores=det.scores.astype(np.float32),
                class_ids=det.class_ids.astype(np.int32),
                lines=[(ln.line_id, ln.start, ln.end) for ln in truth.lines],
                counted_classes=list(truth.classes),
            )
        )
    return seqs, truths


def save_inputs(path: Path, seqs: Sequence[Seq], class_names: Sequence[str]) -> None:
    arrays: dict[str, Any] = {"class_names": np.asarray(list(class_names))}
    meta = []
    for k, s in enumerate(seqs):
        for field in ("offsets", "boxes", "scores", "class_ids"):
            arrays[f"{k}_{field}"] = getattr(s, field)
        meta.append(
            {
                "name": s.name,
                "fps": s.fps,
                "width": s.width,
                "height": s.height,
                "lines": s.lines,
                "counted_classes": s.counted_classes,
            }
        )
    arrays["meta"] = np.asarray(json.dumps(meta))
    np.savez(path, **arrays)


def load_inputs(path: Path) -> tuple[list[Seq], list[str]]:
    z = np.load(path, allow_pickle=False)
    meta = json.loads(str(z["meta"]))
    seqs = [
        Seq(
            name=m["name"],
            fps=float(m["fps"]),
            width=int(m["width"]),
            height=int(m["height"]),
            offsets=z[f"{k}_offsets"],
            boxes=z[f"{k}_boxes"],
            scores=z[f"{k}_scores"],
            class_ids=z[f"{k}_class_ids"],
            lines=[(lid, tuple(a), tuple(b)) for lid, a, b in m["lines"]],
            counted_classes=list(m["counted_classes"]),
        )
        for k, m in enumerate(meta)
    ]
    return seqs, [str(n) for n in z["class_names"]]


# --------------------------------------------------------------------- timing

#: One frame: run the tracker, then the lines; return the crossings (frame, line, dir,
#: class name) counted in it. ``mark`` is called between tracker and lines.
Step = Callable[[int, Callable[[], None]], list[tuple[int, str, str, str]]]


def run_timed(n_frames: int, step: Step) -> tuple[float, float, list[tuple[int, str, str, str]]]:
    """Run every frame; seconds in the tracker, seconds in tracker + lines, crossings."""
    t_track = t_all = 0.0
    crossings: list[tuple[int, str, str, str]] = []
    mid = 0.0

    def mark() -> None:
        nonlocal mid
        mid = time.perf_counter()

    for i in range(n_frames):
        t0 = time.perf_counter()
        got = step(i, mark)
        t1 = time.perf_counter()
        t_track += mid - t0
        t_all += t1 - t0
        crossings.extend(got)
    return t_track, t_all, crossings


def side_result(seqs: Sequence[Seq], make: Callable[[Seq], Step]) -> dict[str, Any]:
    """Warm up, then time every sequence once."""
    synth = next((s for s in seqs if s.name == SYNTH), seqs[0])
    run_timed(min(WARMUP_FRAMES, synth.n_frames), make(synth))
    out = {}
    for s in seqs:
        t_track, t_all, crossings = run_timed(s.n_frames, make(s))
        out[s.name] = {"track_s": t_track, "track_lines_s": t_all, "crossings": crossings}
    return out


# --------------------------------------------------------------------- our side


def our_step_factory(class_names: Sequence[str]) -> Callable[[Seq], Step]:
    from itsd.analytics import CountingLine, LineCounter, Tracker, TrackerConfig
    from itsd.analytics.evaluate import frame_of

    def make(seq: Seq) -> Step:
        tracker = Tracker(TrackerConfig())
        lines = [
            CountingLine(line_id=lid, start=a, end=b, classes=frozenset(seq.counted_classes))
            for lid, a, b in seq.lines
        ]
        counter = LineCounter(lines, class_names)
        frames = seq.frames()
        fps, w, h = seq.fps, seq.width, seq.height

        def step(i: int, mark: Callable[[], None]) -> list[tuple[int, str, str, str]]:
            boxes, scores, classes = frames[i]
            t = i / fps
            tracks = tracker.update(boxes, scores, classes, t)
            mark()
            got = counter.update(tracks, w, h, t)
            counter.forget(tracker.pop_removed())
            return [(frame_of(c.timestamp, fps), c.line_id, c.direction, c.class_name) for c in got]

        return step

    return make


# --------------------------------------------------------------------- supervision side


def sv_step_factory(class_names: Sequence[str], setting: dict[str, Any]) -> Callable[[Seq], Step]:
    warnings.filterwarnings("ignore")
    import supervision as sv  # type: ignore[import-not-found,unused-ignore]

    # Direction names differ: for a line from (0, 50) to (100, 50) an object moving down
    # the image crosses "in" in itsd.analytics.lines and "out" for LineZone (0.30.9). Find
    # LineZone's name for our "in" by moving one tracked box that way.
    probe = sv.LineZone(
        start=sv.Point(0, 50), end=sv.Point(100, 50), triggering_anchors=[sv.Position.CENTER]
    )
    for y in (20, 30, 70, 80):
        probe.trigger(
            sv.Detections(
                xyxy=np.array([[40, y - 5, 60, y + 5]], np.float32),
                confidence=np.array([0.9], np.float32),
                class_id=np.array([2]),
                tracker_id=np.array([1]),
            )
        )
    if probe.in_count + probe.out_count != 1:
        raise RuntimeError("LineZone direction probe did not count one crossing")
    sv_in = "in" if probe.in_count == 1 else "out"
    sv_out = "out" if sv_in == "in" else "in"

    def make(seq: Seq) -> Step:
        tracker = sv.ByteTrack(frame_rate=seq.fps, **setting)
        zones = [
            (
                lid,
                sv.LineZone(
                    start=sv.Point(a[0] * seq.width, a[1] * seq.height),
                    end=sv.Point(b[0] * seq.width, b[1] * seq.height),
                    triggering_anchors=[sv.Position.CENTER],
                ),
            )
            for lid, a, b in seq.lines
        ]
        counted = set(seq.counted_classes)
        # The Detections objects are built before timing: only the update is timed.
        dets = [
            sv.Detections(xyxy=b.astype(np.float32), confidence=s, class_id=c)
            for b, s, c in seq.frames()
        ]

        def name(cid: int) -> str:
            return class_names[cid] if 0 <= cid < len(class_names) else f"class_{cid}"

        def step(i: int, mark: Callable[[], None]) -> list[tuple[int, str, str, str]]:
            tracked = tracker.update_with_detections(dets[i])
            mark()
            out = []
            for lid, zone in zones:
                crossed_in, crossed_out = zone.trigger(tracked)
                for k in np.flatnonzero(crossed_in | crossed_out):
                    cname = name(int(tracked.class_id[k]))
                    if cname in counted:
                        out.append((i, lid, sv_in if crossed_in[k] else sv_out, cname))
            return out

        return step

    return make


def sv_version() -> str:
    import supervision as sv  # type: ignore[import-not-found,unused-ignore]

    return str(sv.__version__)


def worker(inputs: Path, output: Path, cpu: int | None) -> int:
    """Run in the supervision interpreter: every setting over every sequence, once."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    seqs, class_names = load_inputs(inputs)
    result: dict[str, Any] = {"version": sv_version(), "settings": {}}
    for label, setting in SV_SETTINGS.items():
        chosen = seqs if label == "sv-default" else [s for s in seqs if s.name != SYNTH]
        if not chosen:
            continue
        result["settings"][label] = side_result(chosen, sv_step_factory(class_names, setting))
    output.write_text(json.dumps(result))
    return 0


def run_sv_round(sv_python: Path, inputs: Path, workdir: Path, cpu: int | None) -> dict[str, Any]:
    out = workdir / "sv-result.json"
    out.unlink(missing_ok=True)
    cmd = [str(sv_python), str(Path(__file__).resolve()), "--worker", str(inputs), str(out)]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"supervision worker failed ({proc.returncode}):\n{proc.stderr}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


# --------------------------------------------------------------------- report


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def throughput(seq: Seq, times: list[float]) -> dict[str, Any]:
    t = med(times)
    fps = seq.n_frames / t
    return {
        "median_s": t,
        "runs_s": times,
        "frames_per_s": fps,
        "detections_per_s": seq.scores.size / t,
        "cameras_per_core_at_10fps": fps / 10.0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--worker", nargs=2, type=Path, metavar=("INPUTS", "OUTPUT"), help=argparse.SUPPRESS
    )
    ap.add_argument("--sv-python", type=Path, default=DEFAULT_SV_PYTHON)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--frames", type=int, default=1000, help="synthetic frames (50 det each)")
    ap.add_argument("--cpu", type=int, help="pin both sides to this CPU")
    ap.add_argument("--no-clips", action="store_true", help="only the synthetic throughput")
    ap.add_argument("--truth-dir", type=Path, default=TRUTH_DIR)
    ap.add_argument("--media-dir", type=Path, default=MEDIA_DIR)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker[0], args.worker[1], args.cpu)

    from itsd.analytics import COCO_NAMES
    from itsd.analytics.evaluate import Crossing, evaluate

    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    class_names = list(COCO_NAMES)
    seqs = [synthetic(args.frames)]
    synth_true = seqs[0].true_crossings
    truths: dict[str, Any] = {}
    if not args.no_clips:
        clips, truths = load_clips(args.truth_dir, args.media_dir)
        seqs += clips
    have_sv = args.sv_python.is_file()
    if not have_sv:
        print(
            f"supervision interpreter {args.sv_python} not found; only our side runs. "
            f"Create it with:\n  {SV_SETUP}",
            file=sys.stderr,
        )

    ours_runs: list[dict[str, Any]] = []
    sv_runs: list[dict[str, Any]] = []
    sv_ver = ""
    with tempfile.TemporaryDirectory(prefix="itsd-tracker-bench-") as tmp:
        inputs = Path(tmp) / "inputs.npz"
        save_inputs(inputs, seqs, class_names)
        # Our side reads the very file the worker reads.
        seqs, class_names = load_inputs(inputs)
        for r in range(args.rounds):
            order = ["ours", "sv"] if r % 2 == 0 else ["sv", "ours"]
            for who in order:
                if who == "ours":
                    ours_runs.append(side_result(seqs, our_step_factory(class_names)))
                elif have_sv:
                    res = run_sv_round(args.sv_python, inputs, Path(tmp), args.cpu)
                    sv_ver = res["version"]
                    sv_runs.append(res["settings"])
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    synth = seqs[0]
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()}-core {platform.machine()}, {platform.processor() or ''}",
        "python": platform.python_version(),
        "supervision": sv_ver or None,
        "rounds": args.rounds,
        "cpu_pinned": args.cpu,
        "synthetic": {"frames": synth.n_frames, "detections_per_frame": 50, "fps": SYNTH_FPS},
        "throughput": {},
        "counting": {},
    }
    sides: dict[str, list[dict[str, Any]]] = {"ours": ours_runs}
    if sv_runs:
        sides["sv-default"] = [run["sv-default"] for run in sv_runs]
        if "sv-tuned" in sv_runs[0]:
            sides["sv-tuned"] = [run["sv-tuned"] for run in sv_runs]

    # 1. throughput
    print(
        f"\nThroughput, synthetic: {synth.n_frames} frames x 50 detections, median of "
        f"{args.rounds} rounds (tracker only | tracker + counting line)"
    )
    print(
        f"  {'tracker':<12} {'det/s':>9} {'frames/s':>9} {'cams@10fps':>10} "
        f"| {'det/s':>9} {'frames/s':>9} {'cams@10fps':>10}"
    )
    for label in ("ours", "sv-default"):
        if label not in sides:
            continue
        tp = throughput(synth, [run[SYNTH]["track_s"] for run in sides[label]])
        tl = throughput(synth, [run[SYNTH]["track_lines_s"] for run in sides[label]])
        n_cross = len(sides[label][0][SYNTH]["crossings"])
        report["throughput"][label] = {
            "tracker": tp,
            "tracker_and_lines": tl,
            "line_crossings_counted": n_cross,
        }
        print(
            f"  {label:<12} {tp['detections_per_s']:>9.0f} {tp['frames_per_s']:>9.1f} "
            f"{tp['cameras_per_core_at_10fps']:>10.1f} | {tl['detections_per_s']:>9.0f} "
            f"{tl['frames_per_s']:>9.1f} {tl['cameras_per_core_at_10fps']:>10.1f}"
            f"   ({n_cross} line crossings)"
        )
    print(f"  true line crossings of the synthetic objects' centres: {synth_true}")
    report["synthetic"]["true_line_crossings"] = synth_true
    if "sv-default" in sides:
        o, s = report["throughput"]["ours"], report["throughput"]["sv-default"]
        rt = ratio(o["tracker"]["frames_per_s"], s["tracker"]["frames_per_s"])
        rl = ratio(o["tracker_and_lines"]["frames_per_s"], s["tracker_and_lines"]["frames_per_s"])
        report["throughput"]["ratio_ours_over_sv"] = {"tracker": rt, "tracker_and_lines": rl}
        print(f"  ratio ours/sv: tracker {rt:.2f}x, tracker + line {rl:.2f}x")

    if not truths:
        return write_json(args.json, report)

    # 2. counting
    print("\nCounting on the hand-counted clips (F1 with tolerance one second of frames)")
    print(
        f"  {'clip':<24} {'side':<11} {'true in/out':>11} {'counted':>9} {'match':>6} "
        f"{'F1':>6} {'ms/frame':>9}"
    )
    pooled: dict[str, list[int]] = {}
    pooled_tuning: dict[str, list[int]] = {}
    for s in seqs[1:]:
        truth = truths[s.name]
        tol = max(1, round(s.fps))
        true_in = sum(1 for c in truth.crossings if c.direction == "in")
        true_out = len(truth.crossings) - true_in
        clip_rep: dict[str, Any] = {
            "held_out": truth.held_out,
            "true_in": true_in,
            "true_out": true_out,
        }
        for label, runs in sides.items():
            crossings = [
                Crossing(frame=f, line_id=lid, direction=d, class_name=cn)
                for f, lid, d, cn in runs[0][s.name]["crossings"]
            ]
            ev = evaluate(crossings, truth, tolerance=tol)
            cin = sum(1 for c in crossings if c.direction == "in")
            ms = 1e3 * med([run[s.name]["track_lines_s"] for run in runs]) / s.n_frames
            clip_rep[label] = {
                "counted_in": cin,
                "counted_out": len(crossings) - cin,
                "matched": ev.matched,
                "f1": ev.f1,
                "ms_per_frame_tracker_and_lines": ms,
                "evaluation": ev.to_dict(),
            }
            for pool in (pooled, pooled_tuning) if not truth.held_out else (pooled,):
                p = pool.setdefault(label, [0, 0, 0])
                p[0] += ev.counted
                p[1] += ev.true
                p[2] += ev.matched
            tag = " (held out)" if truth.held_out and label == "ours" else ""
            print(
                f"  {s.name[:24]:<24} {label:<11} {true_in:>5}/{true_out:<5} "
                f"{cin:>4}/{len(crossings) - cin:<4} {ev.matched:>6} {ev.f1:>6.3f} "
                f"{ms:>9.2f}{tag}"
            )
        report["counting"][s.name] = clip_rep
    for title, key, pool in (
        ("all clips", "counting_pooled_f1", pooled),
        ("clips not held out", "counting_pooled_f1_not_held_out", pooled_tuning),
    ):
        print(f"  pooled over {title}:")
        f1s = {}
        for label, (counted, true, matched) in pool.items():
            f1 = 2.0 * matched / (counted + true) if counted + true else 1.0
            f1s[label] = f1
            print(
                f"    {label:<11} counted {counted:>3} true {true:>3} matched {matched:>3} "
                f"F1 {f1:.3f}"
            )
        for other in ("sv-default", "sv-tuned"):
            if other in f1s:
                print(f"    ratio ours/{other:<10} F1 {ratio(f1s['ours'], f1s[other]):.2f}")
        report[key] = f1s
    return write_json(args.json, report)


def write_json(path: Path | None, report: dict[str, Any]) -> int:
    if path is not None:
        path.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
