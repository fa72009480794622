"""ByteTrack-style multi-object tracker: one instance per camera, fed one frame at a time.

Each frame's detections are associated with the existing tracks in three stages, as in
ByteTrack (Zhang et al., ECCV 2022):

1. high-score detections (``score >= high_thresh``) against every confirmed track, the
   ones seen last frame and the lost ones, by IoU with the track's predicted box;
2. low-score detections (``low_thresh <= score < high_thresh``) against the confirmed
   tracks that were seen last frame and are still unmatched, with a stricter IoU gate
   (``low_match_iou``). Low-score boxes are mostly partly hidden objects: they may keep a
   track alive but never start one and never revive a lost one, because that is where the
   detector's false positives live;
3. the remaining high-score detections against tentative tracks.

A remaining detection with ``score >= new_track_thresh`` starts a tentative track; a
tentative track that misses a frame is dropped, one with ``min_hits`` hits is confirmed.
A confirmed track that is not matched becomes lost and is kept, moving along its
prediction, until ``max_age_s`` seconds have passed since it was last seen.

Prediction is a constant-velocity Kalman filter on box centre and size (``motion``) driven
by the frame timestamps, so a skipped or late frame moves the box by ``velocity * dt``
rather than by one nominal frame. Matching is optimal (maximum number of pairs above the
IoU gate, then the largest total similarity) using the assignment solver in
``assignment``; the IoU matrix is computed for all pairs at once.

Identity rules: track ids are unique and increasing for the life of a ``Tracker`` (also
across ``reset``), assigned when a tentative track is created, so the ids reported for
confirmed tracks may have gaps. By default matching ignores the class, so a car that the
detector sometimes calls a truck stays one track; the track's class is the one with the
highest accumulated detection score.

The tracker owns its ``Track`` objects and updates them in place on every call; callers
must not modify them and should copy what they need to keep. This module must never
import a stage, an engine, a GPU library, itsd.control, itsd.monitor or itsd.cli, and it
never draws: it receives plain numpy arrays and returns plain records.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from itsd.analytics import motion
from itsd.analytics.assignment import match_eligible
from itsd.analytics.boxes import cxcywh_to_xyxy, iou_matrix, xyxy_to_cxcywh

IntArray = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]

#: The confidence down to which the detector should pass candidate boxes to the tracker
#: (``TrackerConfig.low_thresh``). It is far below a sensible reporting confidence: the
#: tracker's second association exists to keep tracks alive on weak boxes, and small,
#: distant or dim vehicles score 0.1-0.5. Detection events filter by their own
#: (reporting) confidence; the tracker ignores anything below this. Chosen by
#: measurement against hand counts (bench/count_tune.py).
RECOMMENDED_CANDIDATE_CONFIDENCE = 0.1


def _empty_state() -> FloatArray:
    return np.zeros((5, 4), dtype=np.float64)


@dataclass(slots=True, eq=False)
class Track:
    """One tracked object. Updated in place by its ``Tracker``; read it, do not modify it."""

    track_id: int
    #: (4,) float32 ``x_min, y_min, x_max, y_max``: the filtered box at the last match.
    box: np.ndarray
    #: The class with the highest accumulated detection score.
    class_id: int
    #: Score of the detection matched last.
    score: float
    #: Number of detections matched to this track.
    hits: int
    #: Number of ``Tracker.update`` calls since the track started, the first one included.
    age_frames: int
    #: Number of ``Tracker.update`` calls since the last match (0: matched in the latest).
    time_since_update: int
    #: Capture time (seconds) of the first and of the latest matched detection.
    first_seen: float
    last_seen: float
    #: Whether the track has reached ``min_hits`` (only confirmed tracks are reported).
    confirmed: bool
    #: ``(t, x, y)`` of the box's bottom centre at each match, oldest first, bounded.
    anchor_history: deque[tuple[float, float, float]]
    #: Accumulated detection score per class id.
    class_scores: dict[int, float] = field(default_factory=dict)
    #: Filter state (see ``motion``), owned by the tracker.
    motion_state: FloatArray = field(default_factory=_empty_state, repr=False)
    #: Time (seconds) that ``motion_state`` refers to.
    state_time: float = field(default=0.0, repr=False)
    #: Index of the detection (in the arrays of the latest ``update``) matched to this
    #: track in that call; -1 when it was not matched in it.
    det_index: int = -1
    #: ``(t, x_min, y_min, x_max, y_max)`` of the filtered box at each match, oldest first,
    #: as long as ``anchor_history`` (line counters take any anchor point from it).
    box_history: deque[tuple[float, float, float, float, float]] = field(
        default_factory=deque, repr=False
    )

    @property
    def anchor(self) -> tuple[float, float]:
        """Bottom centre of ``box`` (where the object meets the road), in pixels."""
        return (float(self.box[0] + self.box[2]) * 0.5, float(self.box[3]))

    @property
    def velocity(self) -> tuple[float, float]:
        """Estimated velocity of the box centre in pixels per second."""
        return (float(self.motion_state[motion.VEL, 0]), float(self.motion_state[motion.VEL, 1]))

    @property
    def predicted_box(self) -> np.ndarray:
        """(4,) float32 box where the filter expects the object at ``state_time``."""
        cxcywh = motion.boxes_cxcywh(self.motion_state[None])
        out: np.ndarray = cxcywh_to_xyxy(cxcywh)[0].astype(np.float32)
        return out


@dataclass(frozen=True)
class TrackerConfig:
    """Thresholds of the tracker. Scores are detector confidences in [0, 1].

    The defaults were chosen by measurement (bench/count_tune.py) against hand counts of
    the test clips: tracks are born from moderate detections (0.25) and confirmed after 2
    matches, lost tracks are kept 2 s, and boxes down to 0.1 keep tracks alive. The old
    defaults (birth 0.6, 3 matches, candidates cut at 0.25 by the detector) missed about
    a third of the vehicles on a dim overhead street clip.
    """

    #: Detections at or above this score take part in the first association.
    high_thresh: float = 0.25
    #: Detections below this score are ignored (the candidate floor); between this and
    #: ``high_thresh`` they can only continue a track that was seen in the previous frame.
    #: The detector must pass candidates down to at least this score (see
    #: ``RECOMMENDED_CANDIDATE_CONFIDENCE``); what detection events report is filtered
    #: separately, by the reporting confidence.
    low_thresh: float = RECOMMENDED_CANDIDATE_CONFIDENCE
    #: An unmatched detection starts a new track only at or above this score.
    new_track_thresh: float = 0.25
    #: Minimum IoU between a track's predicted box and a detection to match them.
    match_iou: float = 0.3
    #: Minimum IoU for the low-score (second) association; stricter, as in ByteTrack.
    low_match_iou: float = 0.5
    #: Matches needed before a track is confirmed and reported.
    min_hits: int = 2
    #: A lost track is dropped once this many seconds have passed since it was last seen.
    max_age_s: float = 2.0
    #: Upper bound on tracks kept (tentative, confirmed and lost together).
    max_tracks: int = 1000
    #: Match only detections of the track's class (off: a car seen as a truck stays one track).
    class_aware: bool = False
    #: Rank first-stage candidates by IoU times detection score rather than IoU alone.
    fuse_score: bool = True
    #: Length of ``Track.anchor_history``.
    history_len: int = 30
    #: Detections of different classes that overlap this much (IoU) are one object seen
    #: twice (class-aware NMS keeps a "car" and a "truck" box of the same vehicle): only the
    #: strongest takes part in matching, the others add to the track's class scores. 1.0
    #: turns merging off.
    merge_iou: float = 0.7

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_thresh <= self.high_thresh <= self.new_track_thresh <= 1.0:
            raise ValueError(
                "need 0 <= low_thresh <= high_thresh <= new_track_thresh <= 1, got "
                f"{self.low_thresh}, {self.high_thresh}, {self.new_track_thresh}"
            )
        for name in ("match_iou", "low_match_iou", "merge_iou"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if self.min_hits < 1:
            raise ValueError(f"min_hits must be at least 1, got {self.min_hits}")
        if not (math.isfinite(self.max_age_s) and self.max_age_s > 0.0):
            raise ValueError(f"max_age_s must be a positive number, got {self.max_age_s}")
        if self.max_tracks < 1:
            raise ValueError(f"max_tracks must be at least 1, got {self.max_tracks}")
        if self.history_len < 2:
            raise ValueError(f"history_len must be at least 2, got {self.history_len}")


_EMPTY = np.zeros(0, dtype=np.intp)
_DEFAULT_CONFIG = TrackerConfig()
_DEFAULT_NOISE = motion.MotionNoise()


@dataclass(slots=True)
class _Frame:
    """The arrays of one ``update`` call: detections kept and the tracks' predictions."""

    det_boxes: FloatArray
    det_scores: FloatArray
    det_classes: npt.NDArray[np.int64]
    pred_boxes: FloatArray
    track_classes: npt.NDArray[np.int64]
    #: Index of each kept detection in the arrays given to ``update``.
    det_orig: IntArray
    #: Per kept detection: ``(class id, score)`` of the duplicates merged into it.
    det_extra: dict[int, list[tuple[int, float]]]


class Tracker:
    """Multi-object tracker for one camera. Not thread-safe; one instance per camera."""

    def __init__(
        self,
        config: TrackerConfig = _DEFAULT_CONFIG,
        noise: motion.MotionNoise = _DEFAULT_NOISE,
    ) -> None:
        self.config = config
        self.noise = noise
        self._tracks: list[Track] = []
        self._next_id = 1
        self._removed: deque[int] = deque(maxlen=max(1024, 4 * config.max_tracks))

    # ------------------------------------------------------------------ public
    @property
    def next_track_id(self) -> int:
        """The id the next new track gets."""
        return self._next_id

    def start_ids_at(self, first: int) -> None:
        """Give new tracks ids from ``first`` on (never lowers the next id): after a
        restart, ids continue past the ones handed out before, never reused."""
        self._next_id = max(self._next_id, int(first))

    def update(
        self,
        boxes: npt.ArrayLike,
        scores: npt.ArrayLike,
        class_ids: npt.ArrayLike,
        timestamp: float,
    ) -> list[Track]:
        """Feed the detections of one frame; return the confirmed tracks matched in it.

        ``boxes`` is (N, 4) ``x_min, y_min, x_max, y_max`` in frame pixels, ``scores`` and
        ``class_ids`` are (N,); ``timestamp`` is the frame's capture time in seconds (any
        epoch, but one clock per tracker). Call it for every processed frame, also with no
        detections, so tracks age. A timestamp earlier than the previous one is treated as
        no time having passed. Detections with non-finite or empty boxes are ignored.
        Returned tracks are ordered by id.
        """
        if not math.isfinite(timestamp):
            raise ValueError(f"timestamp must be finite, got {timestamp!r}")
        cfg = self.config
        det_boxes, det_scores, det_classes, det_orig, det_extra = self._prepare(
            boxes, scores, class_ids
        )
        tracks = self._tracks
        for t in tracks:
            t.det_index = -1

        # Move every track's filter to this frame's time.
        pred_boxes = np.zeros((0, 4))
        if tracks:
            states = np.stack([t.motion_state for t in tracks])
            times = np.array([t.state_time for t in tracks])
            states = motion.predict(states, timestamp - times, self.noise)
            pred_boxes = cxcywh_to_xyxy(motion.boxes_cxcywh(states))
            for i, t in enumerate(tracks):
                t.motion_state = states[i]
                t.state_time = max(t.state_time, timestamp)
        frame = _Frame(
            det_boxes=det_boxes,
            det_scores=det_scores,
            det_classes=det_classes,
            pred_boxes=pred_boxes,
            track_classes=np.array([t.class_id for t in tracks], dtype=np.int64),
            det_orig=det_orig,
            det_extra=det_extra,
        )
        confirmed = np.array([t.confirmed for t in tracks], dtype=bool)
        seen_last = np.array([t.time_since_update == 0 for t in tracks], dtype=bool)

        high = np.flatnonzero(det_scores >= cfg.high_thresh)
        low = np.flatnonzero(det_scores < cfg.high_thresh)

        # Stage 1: high-score detections against confirmed tracks (seen last frame or lost).
        mt1, md1, left_t, left_high = self._associate(
            frame, np.flatnonzero(confirmed), high, min_iou=cfg.match_iou, fuse=cfg.fuse_score
        )
        # Stage 2: low-score detections against the unmatched tracks seen last frame.
        mt2, md2, _, _ = self._associate(
            frame, left_t[seen_last[left_t]], low, min_iou=cfg.low_match_iou, fuse=False
        )
        # Stage 3: remaining high-score detections against tentative tracks.
        mt3, md3, _, left_high = self._associate(
            frame, np.flatnonzero(~confirmed), left_high, min_iou=cfg.match_iou, fuse=cfg.fuse_score
        )
        matched_t = np.concatenate((mt1, mt2, mt3))
        matched_d = np.concatenate((md1, md2, md3))
        self._apply_matches(frame, matched_t, matched_d, timestamp)

        # Age, lose and drop tracks.
        matched_mask = np.zeros(len(tracks), dtype=bool)
        matched_mask[matched_t] = True
        survivors: list[Track] = []
        for i, t in enumerate(tracks):
            t.age_frames += 1
            if not matched_mask[i]:
                t.time_since_update += 1
                if not t.confirmed:
                    continue  # a tentative track must be seen in consecutive frames
                # A lost track keeps moving but stops growing or shrinking.
                t.motion_state[motion.VEL, 2:4] = 0.0
                if timestamp - t.last_seen > cfg.max_age_s:
                    self._removed.append(t.track_id)
                    continue
            survivors.append(t)
        self._tracks = survivors

        # Start tentative tracks from the strong detections nobody claimed.
        starters = left_high[det_scores[left_high] >= cfg.new_track_thresh]
        if starters.size:
            starters = starters[np.argsort(-det_scores[starters], kind="stable")]
            self._start_tracks(frame, starters, timestamp)

        return [t for t in self._tracks if t.confirmed and t.time_since_update == 0]

    def active_tracks(self) -> list[Track]:
        """Every track kept: tentative, confirmed and lost, ordered by id."""
        return list(self._tracks)

    def pop_removed(self) -> list[int]:
        """Ids of confirmed tracks dropped since the last call (lost too long, evicted or reset).

        Consumers that keep per-track state (line counters, zones) forget these ids.
        """
        out = list(self._removed)
        self._removed.clear()
        return out

    def reset(self) -> None:
        """Drop every track (e.g. after the camera reconnects). Ids keep increasing."""
        self._removed.extend(t.track_id for t in self._tracks if t.confirmed)
        self._tracks = []

    # ----------------------------------------------------------------- helpers

    def _prepare(
        self, boxes: npt.ArrayLike, scores: npt.ArrayLike, class_ids: npt.ArrayLike
    ) -> tuple[
        FloatArray,
        FloatArray,
        npt.NDArray[np.int64],
        IntArray,
        dict[int, list[tuple[int, float]]],
    ]:
        b = np.asarray(boxes, dtype=np.float64)
        if b.size == 0:
            b = b.reshape(0, 4)
        if b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(f"boxes must have shape (N, 4), got {b.shape}")
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        c = np.asarray(class_ids).reshape(-1).astype(np.int64)
        if s.shape[0] != b.shape[0] or c.shape[0] != b.shape[0]:
            raise ValueError(
                f"boxes {b.shape}, scores {s.shape} and class_ids {c.shape} disagree on N"
            )
        keep = (
            np.isfinite(b).all(axis=1)
            & np.isfinite(s)
            & (b[:, 2] > b[:, 0])
            & (b[:, 3] > b[:, 1])
            & (s >= self.config.low_thresh)
        )
        orig = np.flatnonzero(keep)
        if not keep.all():
            b, s, c = b[keep], s[keep], c[keep]
        extra: dict[int, list[tuple[int, float]]] = {}
        if b.shape[0] > 1 and self.config.merge_iou < 1.0:
            b, s, c, orig, extra = _merge_duplicates(b, s, c, orig, self.config.merge_iou)
        return b, s, c, orig, extra

    def _associate(
        self, frame: _Frame, track_idx: IntArray, det_idx: IntArray, *, min_iou: float, fuse: bool
    ) -> tuple[IntArray, IntArray, IntArray, IntArray]:
        """Match tracks to detections (both given by index); return matched track indices,
        matched detection indices, unmatched track indices, unmatched detection indices."""
        if track_idx.size == 0 or det_idx.size == 0:
            return _EMPTY, _EMPTY, track_idx, det_idx
        iou = iou_matrix(frame.pred_boxes[track_idx], frame.det_boxes[det_idx])
        eligible = iou >= min_iou
        if self.config.class_aware:
            same = frame.track_classes[track_idx][:, None] == frame.det_classes[det_idx][None, :]
            eligible &= same
        similarity = iou * frame.det_scores[det_idx][None, :] if fuse else iou
        rows, cols = match_eligible(1.0 - similarity, eligible)
        left_t = np.ones(track_idx.size, dtype=bool)
        left_t[rows] = False
        left_d = np.ones(det_idx.size, dtype=bool)
        left_d[cols] = False
        return track_idx[rows], det_idx[cols], track_idx[left_t], det_idx[left_d]

    def _apply_matches(
        self, frame: _Frame, track_idx: IntArray, det_idx: IntArray, timestamp: float
    ) -> None:
        """Correct the matched tracks with their detections."""
        if track_idx.size == 0:
            return
        tracks = self._tracks
        states = np.stack([tracks[i].motion_state for i in track_idx.tolist()])
        states = motion.update(states, xyxy_to_cxcywh(frame.det_boxes[det_idx]), self.noise)
        new_boxes = cxcywh_to_xyxy(motion.boxes_cxcywh(states)).astype(np.float32)
        scores = frame.det_scores[det_idx].tolist()
        classes = frame.det_classes[det_idx].tolist()
        min_hits = self.config.min_hits
        for k, ti in enumerate(track_idx.tolist()):
            t = tracks[ti]
            box = new_boxes[k]
            score = scores[k]
            cls = classes[k]
            t.motion_state = states[k]
            t.box = box
            t.det_index = int(frame.det_orig[det_idx[k]])
            t.score = score
            t.hits += 1
            t.time_since_update = 0
            t.last_seen = max(t.last_seen, timestamp)
            t.class_scores[cls] = t.class_scores.get(cls, 0.0) + score
            for other, other_score in frame.det_extra.get(int(det_idx[k]), ()):
                t.class_scores[other] = t.class_scores.get(other, 0.0) + other_score
            t.class_id = _best_class(t.class_scores, t.class_id)
            if t.hits >= min_hits:
                t.confirmed = True
            t.anchor_history.append((timestamp, float(box[0] + box[2]) * 0.5, float(box[3])))
            t.box_history.append(
                (timestamp, float(box[0]), float(box[1]), float(box[2]), float(box[3]))
            )

    def _start_tracks(self, frame: _Frame, det_idx: IntArray, timestamp: float) -> None:
        """Start tentative tracks from detections (strongest first) while there is room."""
        cfg = self.config
        room = cfg.max_tracks - len(self._tracks)
        if room < det_idx.size:
            self._evict_lost(det_idx.size - room)
            room = cfg.max_tracks - len(self._tracks)
        det_idx = det_idx[: max(room, 0)]
        if det_idx.size == 0:
            return
        states = motion.initiate(xyxy_to_cxcywh(frame.det_boxes[det_idx]), self.noise)
        new_boxes = cxcywh_to_xyxy(motion.boxes_cxcywh(states)).astype(np.float32)
        scores = frame.det_scores[det_idx].tolist()
        classes = frame.det_classes[det_idx].tolist()
        for k in range(det_idx.size):
            box = new_boxes[k]
            history: deque[tuple[float, float, float]] = deque(maxlen=cfg.history_len)
            history.append((timestamp, float(box[0] + box[2]) * 0.5, float(box[3])))
            boxes_seen: deque[tuple[float, float, float, float, float]] = deque(
                [(timestamp, float(box[0]), float(box[1]), float(box[2]), float(box[3]))],
                maxlen=cfg.history_len,
            )
            class_scores = {classes[k]: scores[k]}
            for other, other_score in frame.det_extra.get(int(det_idx[k]), ()):
                class_scores[other] = class_scores.get(other, 0.0) + other_score
            self._tracks.append(
                Track(
                    track_id=self._next_id,
                    box=box,
                    class_id=_best_class(class_scores, classes[k]),
                    score=scores[k],
                    hits=1,
                    age_frames=1,
                    time_since_update=0,
                    first_seen=timestamp,
                    last_seen=timestamp,
                    confirmed=cfg.min_hits <= 1,
                    anchor_history=history,
                    class_scores=class_scores,
                    motion_state=states[k],
                    state_time=timestamp,
                    det_index=int(frame.det_orig[det_idx[k]]),
                    box_history=boxes_seen,
                )
            )
            self._next_id += 1

    def _evict_lost(self, count: int) -> None:
        """Drop up to ``count`` lost tracks, the longest unseen first, to make room."""
        lost = [t for t in self._tracks if t.time_since_update > 0]
        lost.sort(key=lambda t: t.last_seen)
        victims = {id(t) for t in lost[:count]}
        if not victims:
            return
        for t in lost[:count]:
            if t.confirmed:
                self._removed.append(t.track_id)
        self._tracks = [t for t in self._tracks if id(t) not in victims]


def _best_class(class_scores: dict[int, float], current: int) -> int:
    """The class with the highest accumulated score; ``current`` keeps a tie."""
    best = current
    best_score = class_scores.get(current, -1.0)
    for cls, score in class_scores.items():
        if score > best_score:
            best, best_score = cls, score
    return best


def _merge_duplicates(
    boxes: FloatArray,
    scores: FloatArray,
    classes: npt.NDArray[np.int64],
    orig: IntArray,
    merge_iou: float,
) -> tuple[
    FloatArray, FloatArray, npt.NDArray[np.int64], IntArray, dict[int, list[tuple[int, float]]]
]:
    """Class-agnostic suppression of duplicates: the strongest of overlapping detections of
    different classes stays; the others become extra class evidence of it (by new index)."""
    iou = iou_matrix(boxes, boxes)
    np.fill_diagonal(iou, 0.0)
    if not (iou >= merge_iou).any():
        return boxes, scores, classes, orig, {}
    order = np.argsort(-scores, kind="stable")
    absorbed_by = np.full(scores.shape[0], -1, dtype=np.intp)
    kept: list[int] = []
    for i in order.tolist():
        if absorbed_by[i] >= 0:
            continue
        kept.append(i)
        dup = np.flatnonzero((iou[i] >= merge_iou) & (absorbed_by < 0) & (classes != classes[i]))
        dup = dup[dup != i]
        dup = dup[[j not in kept for j in dup.tolist()]] if dup.size else dup
        absorbed_by[dup] = i
    keep = np.array(sorted(kept), dtype=np.intp)
    new_index = {old: new for new, old in enumerate(keep.tolist())}
    extra: dict[int, list[tuple[int, float]]] = {}
    for j in np.flatnonzero(absorbed_by >= 0).tolist():
        extra.setdefault(new_index[int(absorbed_by[j])], []).append(
            (int(classes[j]), float(scores[j]))
        )
    return boxes[keep], scores[keep], classes[keep], orig[keep], extra
