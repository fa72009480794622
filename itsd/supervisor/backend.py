"""The supervisor's answer to the control API and the monitoring port.

Implements ``itsd.control.backend.ControlBackend`` from the supervisor's immutable state
snapshot (``Supervisor.state``, rebuilt by its loop every tick) and submits camera
changes to the loop's operation queue, waiting on the returned future. A reading method
never touches a process object, a ring or a lock of the supervisor: it reads one
reference. Requests are validated here (the same validation as a ``cameras:`` entry of
the configuration file), so a bad request changes nothing.

Aggregates (GetAggregatedMetrics, the newest interval of GetTrafficMetrics) come from the
store through a ``StoreReader``: bounded queries on gRPC threads, never on the loop.

This module must never import a stage module, and never write to shared memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from itsd import __version__
from itsd.config import (
    PUSH_SCHEME,
    CameraConfig,
    format_validation_error,
    unavailable_camera_keys,
)
from itsd.control.backend import (
    ADHOC_CAMERA_ID,
    AggregateBucket,
    CameraHealth,
    HealthSnapshot,
    MetricsSnapshot,
    NotSupportedError,
    PushTarget,
    QueueStat,
    StageHealth,
    StreamExistsError,
    StreamInfo,
    TrafficSnapshot,
    UnavailableError,
    ZoneAggregate,
)
from itsd.errors import ConfigError, ResourceError, SourceError
from itsd.redact import redact_text
from itsd.samples import resolve_source
from itsd.sources import SCHEMES
from itsd.store.aggregate import Bucket, merge
from itsd.store.db import StoreError, StoreUnavailable
from itsd.store.model import IntervalRow
from itsd.store.reader import StoreReader
from itsd.supervisor.core import ChangeTimeoutError
from itsd.supervisor.state import CameraView, DaemonState

if TYPE_CHECKING:
    from itsd.supervisor.core import Supervisor

log = logging.getLogger("itsd.supervisor")

#: How long a gRPC call waits for a camera change to take effect.
CHANGE_WAIT_S = 60.0
_STAGE_STATES = {"starting", "running", "stalled", "backoff", "stopping", "stopped", "failed"}


def camera_from_request(stream: StreamInfo, options: dict[str, Any] | None = None) -> CameraConfig:
    """Validate a registration like a ``cameras:`` entry; ValueError names the field."""
    data: dict[str, Any] = dict(options or {})
    for k in ("id", "source", "target_fps", "priority"):
        data.pop(k, None)
    data["id"] = stream.camera_id
    data["source"] = stream.source_url
    if stream.target_fps:
        data["target_fps"] = stream.target_fps
    if stream.priority:
        data["priority"] = stream.priority
    try:
        cfg = CameraConfig.model_validate(data)
    except ValidationError as err:
        text = format_validation_error(err, "config").replace("config: id:", "config: camera_id:")
        raise ValueError(text.replace("config: source:", "config: source_url:")) from None
    problems = unavailable_camera_keys(cfg)
    if problems:
        raise ValueError("; ".join(problems))
    _check_source(cfg)
    return cfg


def _check_source(cfg: CameraConfig) -> None:
    """Refuse sources that can never work (unknown scheme, a missing file)."""
    src = cfg.source.strip()
    if "://" in src:
        scheme = src.split("://", 1)[0].lower()
        if scheme not in (*SCHEMES, "push"):
            raise ValueError(f"config.source_url: unsupported scheme {scheme!r}")
        if scheme != "file":
            return
    try:
        path = resolve_source(src).removeprefix("file://")
    except SourceError as err:
        raise ValueError(f"config.source_url: {err}") from None
    if os.path.isdir(path):
        raise ValueError(f"config.source_url: {redact_text(src)} is a directory, not a video")
    if not os.path.exists(path):
        raise ValueError(f"config.source_url: no such file: {redact_text(src)}")


class SupervisorBackend:
    """ControlBackend over a running Supervisor (and AggregatesBackend over its store)."""

    def __init__(self, sup: Supervisor, store: StoreReader | None = None) -> None:
        self.sup = sup
        #: Reader of the aggregates store; None when the store is disabled.
        self.store = store
        self._adhoc_lock = threading.Lock()

    @property
    def state(self) -> DaemonState:
        """The latest snapshot (one reference read)."""
        return self.sup.state

    # -- reads ---------------------------------------------------------------------------
    def health(self) -> HealthSnapshot:
        """Overall health and each stage's."""
        st = self.state
        stages = []
        for s in st.stages:
            detail = s.last_exit
            if s.kind in ("infer", "decode"):
                mine = [
                    c.camera_id
                    for c in st.cameras
                    if (c.worker if s.kind == "infer" else c.decoder) == s.name
                ]
                shown = ", ".join(mine[:32]) + (", ..." if len(mine) > 32 else "")
                detail = f"{len(mine)} camera(s): {shown}" + (f"; {detail}" if detail else "")
            stages.append(
                StageHealth(
                    s.name,
                    s.pid,
                    s.state if s.state in _STAGE_STATES else "stopped",
                    s.restarts,
                    s.heartbeat_age_s,
                    detail,
                )
            )
        return HealthSnapshot(
            status=st.status,
            version=__version__,
            uptime_s=time.time() - st.started_at,
            backend=st.backend,
            model=st.model,
            stages=stages,
            reasons=tuple(st.reasons),
        )

    def metrics(self) -> MetricsSnapshot:
        """Counters, per-camera values and ring states."""
        st = self.state
        per_camera = {
            c.camera_id: {
                "frames_decoded": float(c.frames_decoded),
                "frames_inferred": float(c.frames_inferred),
                "frames_dropped": float(c.frames_dropped),
                "fps_in": c.fps_in,
                "fps_out": c.fps_out,
            }
            for c in st.cameras
        }
        queues = [
            QueueStat(r.name, r.capacity, r.used, r.written, r.dropped, r.skipped, r.camera_id)
            for r in st.rings
        ]
        return MetricsSnapshot(counters=dict(st.counters), per_camera=per_camera, queues=queues)

    @staticmethod
    def _stream(c: CameraView) -> StreamInfo:
        options = {
            k: v for k, v in _plain(c.config).items() if k not in ("id", "source", "priority")
        }
        return StreamInfo(c.camera_id, c.source, c.target_fps, c.priority, c.state, options)

    def list_streams(self) -> list[StreamInfo]:
        """Every registered camera."""
        return [self._stream(c) for c in self.state.cameras]

    def camera_health(self, camera_id: str | None) -> list[CameraHealth]:
        """Health of one camera's source, or of all."""
        st = self.state
        cams = st.cameras if camera_id is None else (st.camera(camera_id),)
        return [
            CameraHealth(
                camera_id=c.camera_id,
                connected=c.connected,
                fps_in=c.fps_in,
                fps_out=c.fps_out,
                last_frame_age_s=c.last_frame_age_s,
                reconnects=c.reconnects,
                last_error=c.last_error,
                last_error_at=c.last_error_at,
            )
            for c in cams
        ]

    def traffic_metrics(self, camera_id: str) -> TrafficSnapshot:
        """Line counts and vehicles in view since the camera started; the mean speed of
        the window and the newest interval from the store (when it answers)."""
        st = self.state
        c = st.camera(camera_id)
        latest, avg = None, None
        if self.store is not None:
            try:
                row = self.store.latest(camera_id)
                _, avg = self.store.speed_since(camera_id, int(st.started_at * 1000))
            except StoreError as err:  # live counts still answer without the store
                log.warning("GetTrafficMetrics: %s", err)
            else:
                if row is not None:
                    latest = _bucket(merge(row.camera_id, row.start_ms, 0, [row]), row)
        return TrafficSnapshot(
            camera_id=camera_id,
            window_start=st.started_at,
            window_end=st.taken_at,
            line_counts=json.loads(json.dumps(_plain(c.line_counts))),
            vehicles_in_view=c.vehicles_in_view,
            avg_speed_kmh=avg,
            latest_interval=latest,
        )

    def aggregated_metrics(
        self, camera_id: str | None, start: float, end: float, bucket_s: int
    ) -> list[AggregateBucket]:
        """The store's intervals in ``[start, end)`` re-bucketed (one bounded read)."""
        if self.store is None:
            raise NotSupportedError("the aggregates store is disabled (store.enabled: false)")
        if bucket_s < 1:
            raise ValueError(f"bucket_s must be >= 1, got {bucket_s}")
        try:
            buckets = self.store.buckets(
                camera_id, int(start * 1000), int(end * 1000), bucket_s * 1000
            )
        except StoreUnavailable as err:
            raise UnavailableError(str(err)) from None
        except StoreError as err:
            raise RuntimeError(str(err)) from None
        return [_bucket(b) for b in buckets]

    # -- changes -------------------------------------------------------------------------
    def _wait(self, fut: Any) -> Any:
        try:
            return fut.result(timeout=CHANGE_WAIT_S)
        except FutureTimeout:
            raise NotSupportedError(
                f"the change did not take effect within {CHANGE_WAIT_S:.0f} s; "
                "it is still queued (see `itsd streams list`)"
            ) from None
        except ResourceError as err:
            raise NotSupportedError(str(err)) from None
        except ChangeTimeoutError as err:
            raise UnavailableError(str(err)) from None
        except ConfigError as err:
            raise ValueError(str(err)) from None

    def register_stream(self, stream: StreamInfo) -> StreamInfo:
        """Validate, add the camera, wait until the stages serve it; return it.

        On a fleet node (``fleet.enabled``) the camera goes to the fleet's registry topic
        instead, and the node that owns its partition starts it (state ``starting``)."""
        cfg = camera_from_request(stream, dict(stream.options))
        if self.sup.config.fleet.enabled:
            return self._fleet_change(cfg.id, cfg)
        self._wait(self.sup.add_camera(cfg))
        return self._stream(self.state.camera(cfg.id))

    def unregister_stream(self, camera_id: str) -> bool:
        """Stop the camera's decoder, detach it everywhere, free its memory (on a fleet
        node: a tombstone in the registry topic; its owner stops it)."""
        if self.sup.config.fleet.enabled:
            self._fleet_change(camera_id, None)
            return True
        return bool(self._wait(self.sup.remove_camera(camera_id)))

    def _fleet_change(self, camera_id: str, cfg: CameraConfig | None) -> StreamInfo:
        from itsd.fleet.registry import RegistryError, RegistryWriter, read_registry

        config = self.sup.config
        try:
            if cfg is None and camera_id not in read_registry(config, timeout=10.0).cameras:
                raise KeyError(f"camera {camera_id!r} is not in {config.fleet.registry_topic}")
            writer = RegistryWriter(config, create=False)
            if cfg is None:
                writer.delete(camera_id)
            else:
                writer.put(cfg)
            writer.flush()
        except RegistryError as err:
            raise UnavailableError(f"fleet registry: {err}") from None
        if cfg is None:
            return StreamInfo(camera_id, "", state="stopped")
        keys = ("id", "source", "target_fps", "priority")
        options = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in keys}
        return StreamInfo(
            cfg.id, cfg.source, cfg.target_fps or 0.0, cfg.priority, "starting", options
        )

    def reload(self) -> dict[str, Any]:
        """Re-read the configuration file and apply the difference."""
        result = self._wait(self.sup.request_reload())
        return dict(result) if isinstance(result, dict) else {}

    # -- pushed frames (PushBackend) ------------------------------------------------------
    def _push_target(self, camera_id: str, adhoc: bool = False) -> PushTarget:
        if self.sup.stopping:
            raise UnavailableError("itsd is stopping: it takes no more frames")
        view = self.state.camera(camera_id)  # KeyError when unknown
        if not str(view.config.get("source", "")).startswith(PUSH_SCHEME):
            raise NotSupportedError(
                f"camera {camera_id!r} decodes its own source; frames can be sent only to "
                "push:// cameras (or without a camera id, for ad-hoc inference)"
            )
        # Segment names are fixed for the life of the entry; the key tells a replaced one.
        entry = self.sup.cameras.get(camera_id)
        if entry is None or entry.removing or entry.key != view.key:
            raise KeyError(f"camera {camera_id!r} is not registered")
        return PushTarget(
            camera_id,
            entry.key,
            entry.ring.name,
            entry.cells.name,
            results=self.sup.config.outputs.detection_events,
            adhoc=adhoc,
        )

    def push_target(self, camera_id: str) -> PushTarget:
        """Where frames of a push:// camera go."""
        return self._push_target(camera_id)

    def adhoc_target(self) -> PushTarget:
        """The internal push camera of ad-hoc frames, added (not persisted) on first use."""
        try:
            return self._push_target(ADHOC_CAMERA_ID, adhoc=True)
        except KeyError:
            pass
        with self._adhoc_lock:
            try:
                return self._push_target(ADHOC_CAMERA_ID, adhoc=True)
            except KeyError:
                pass
            api = self.sup.config.api
            cfg = CameraConfig(
                id=ADHOC_CAMERA_ID,
                source=f"{PUSH_SCHEME}adhoc",
                max_width=api.max_push_width,
                max_height=api.max_push_height,
            )
            with contextlib.suppress(StreamExistsError):  # made by a call just before
                self._wait(self.sup.submit(lambda: self.sup._op_add(cfg, "internal", False)))
            return self._push_target(ADHOC_CAMERA_ID, adhoc=True)

    def results_ring(self) -> str:
        """The ring the publisher's results sink writes."""
        ring = self.sup.results_ring
        return ring.name if ring is not None else ""


def _bucket(b: Bucket, interval: IntervalRow | None = None) -> AggregateBucket:
    """A store bucket as the control API's plain dataclass (an interval: its own length)."""
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for (line, direction, cls), n in b.counts.items():
        counts.setdefault(line, {}).setdefault(direction, {})[cls] = n
    start_ms, length_ms = b.start_ms, b.bucket_ms
    if interval is not None:
        start_ms, length_ms = interval.start_ms, interval.end_ms - interval.start_ms
    return AggregateBucket(
        camera_id=b.camera_id,
        start=start_ms / 1000.0,
        bucket_s=length_ms / 1000.0,
        line_counts=counts,
        intervals=b.intervals,
        covered_s=b.covered_s,
        frames=b.frames,
        speed_samples=b.speed_samples,
        avg_speed_kmh=b.speed_mean_kmh,
        p85_speed_kmh=b.speed_p85_kmh,
        longest_queue_m=b.longest_queue_m,
        zones=[
            ZoneAggregate(
                z.zone_id, z.occupancy_mean, z.occupied_fraction, z.dwell_mean_s, z.queue_max_m
            )
            for z in b.zones
        ],
    )


def _plain(obj: Any) -> Any:
    if hasattr(obj, "items"):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return [_plain(v) for v in obj]
    return obj
