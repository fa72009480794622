"""The supervisor's state snapshot: the only thing gRPC and HTTP threads read.

The supervisor's loop builds a new ``DaemonState`` every tick (and after every camera
change) from its own tables, the stages' cell tables, the rings' counters, the stages'
info boards and the analytics board, then swaps one reference. Snapshots are immutable
(frozen dataclasses, tuples, read-only mappings), so a reader in another thread never
sees half an update and never touches a live ``Process`` object.

This module must never import a stage, ``control`` or ``monitor``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from itsd.runtime.alerts import AlertsView
from itsd.runtime.hostinfo import HostSample
from itsd.runtime.metrics import Sample

EMPTY: Mapping[str, Any] = MappingProxyType({})


def _empty() -> Mapping[str, Any]:
    return EMPTY


@dataclass(frozen=True, slots=True)
class StageView:
    """One stage process as the supervisor last saw it."""

    name: str
    kind: str
    #: "starting", "running", "stalled", "backoff", "stopping", "stopped", "failed"
    state: str
    pid: int | None
    restarts: int
    heartbeat_age_s: float | None
    last_exit: str
    camera_id: str = ""
    #: What the stage says about itself (backend, model, versions, last error...).
    about: Mapping[str, Any] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True)
class CameraView:
    """One camera."""

    camera_id: str
    key: int
    #: The inference worker that reads the camera's frames (its stage name).
    worker: str
    #: Source URL with credentials replaced by ``***``.
    source: str
    target_fps: float
    priority: int
    #: "file" (configuration file) or "registered" (added at run time).
    origin: str
    #: A StreamState value: "starting", "running", "reconnecting", "stopped", "failed".
    state: str
    connected: bool
    fps_in: float
    fps_out: float
    frames_decoded: int
    frames_inferred: int
    frames_dropped: int
    reconnects: int
    last_frame_age_s: float | None
    last_error: str = ""
    last_error_at: float | None = None
    ring: str = ""
    ring_slots: int = 0
    ring_used: int = 0
    line_counts: Mapping[str, Any] = field(default_factory=_empty)
    vehicles_in_view: int = 0
    #: The camera's configuration entry (credentials redacted).
    config: Mapping[str, Any] = field(default_factory=_empty)
    #: The decode worker that runs the camera (its stage name).
    decoder: str = ""
    #: The source's own state: "connecting", "streaming", "stalled", "reconnecting",
    #: "failed" or "stopped" (with ``reason``); "" before the decoder reports.
    source_state: str = ""
    reason: str = ""
    stalls: int = 0
    #: Mean seconds to decode and convert one kept frame (0 before the first).
    decode_time_s: float = 0.0
    #: The analytics shard that analyses the camera (its stage name).
    analytics: str = ""


@dataclass(frozen=True, slots=True)
class RingView:
    """A shared-memory ring."""

    name: str
    capacity: int
    used: int
    written: int
    dropped: int
    skipped: int
    camera_id: str = ""


@dataclass(frozen=True, slots=True)
class DaemonState:
    """Everything the control API and the monitoring port show, at one instant."""

    taken_at: float = field(default_factory=time.time)
    started_at: float = field(default_factory=time.time)
    uptime_s: float = 0.0
    stopping: bool = False
    #: A HealthStatus value: "serving", "degraded" or "not_serving".
    status: str = "not_serving"
    #: Why the status is not "serving", one line each.
    reasons: tuple[str, ...] = ()
    backend: str = ""
    model: str = ""
    stages: tuple[StageView, ...] = ()
    cameras: tuple[CameraView, ...] = ()
    rings: tuple[RingView, ...] = ()
    samples: tuple[Sample, ...] = ()
    #: Daemon-wide values by name (frames_decoded, inference_fps, ...).
    counters: Mapping[str, float] = field(default_factory=_empty)
    #: Configuration generation: 1 at start, +1 per applied reload.
    generation: int = 1
    #: The alert rules now (pending, firing) and their last transitions.
    alerts: AlertsView = field(default_factory=AlertsView)
    #: Host memory and the GPUs (NVML), sampled at most once a second.
    host: HostSample = field(default_factory=HostSample)

    def camera(self, camera_id: str) -> CameraView:
        """The camera named; KeyError when it is not registered."""
        for c in self.cameras:
            if c.camera_id == camera_id:
                return c
        raise KeyError(f"camera {camera_id!r} is not registered")
