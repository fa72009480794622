"""Traffic analytics on detections: class names, multi-object tracking, counting lines,
ground-plane calibration, speed and heading, zones, violations and anomalies, interval
summaries (``scene`` composes one camera's share of them).

Analytics receives plain numpy arrays (boxes, scores, class ids of one frame of one
camera) and returns plain records (tracks, line crossings, motions, alerts, summaries).
It must never import itsd.engines, any GPU library, itsd.stages, itsd.control,
itsd.monitor or itsd.cli, and it never draws on images.
"""

from __future__ import annotations

from itsd.analytics.assignment import linear_sum_assignment, match_eligible
from itsd.analytics.boxes import iou_matrix
from itsd.analytics.classes import (
    COCO_NAMES,
    VEHICLE_CLASS_IDS,
    VEHICLE_CLASS_NAMES,
    class_name,
    is_vehicle,
)
from itsd.analytics.lines import CountingLine, LineCounter, LineCrossing
from itsd.analytics.motion import MotionNoise
from itsd.analytics.tracker import Track, Tracker, TrackerConfig

__all__ = [
    "COCO_NAMES",
    "VEHICLE_CLASS_IDS",
    "VEHICLE_CLASS_NAMES",
    "CountingLine",
    "LineCounter",
    "LineCrossing",
    "MotionNoise",
    "Track",
    "Tracker",
    "TrackerConfig",
    "class_name",
    "iou_matrix",
    "is_vehicle",
    "linear_sum_assignment",
    "match_eligible",
]
