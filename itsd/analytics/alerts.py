"""Alert bookkeeping shared by the violation and anomaly rules: raised once, cleared once.

A rule names each condition it watches with a key unique within the camera
(``wrong_way:lane1:42``). ``AlertBook.raise_alert`` returns an ``Alert`` only the first
time a key goes active; ``clear`` returns the matching clear only for an active key. So
every condition gives exactly one raise and one clear, however many frames it lasts.

``Thresholds`` holds the camera-wide settings of the rules (what "sustained" and "slow"
mean); per-zone settings (limits, allowed direction) live on ``ZoneSpec``.

This module must never import anything from itsd outside ``itsd.analytics``, and never
draws.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from itsd.analytics.zones import ZoneSpec

RAISED = "raised"
CLEARED = "cleared"

WRONG_WAY = "ALERT_TYPE_WRONG_WAY"
SPEEDING = "ALERT_TYPE_SPEEDING"
STOPPED_VEHICLE = "ALERT_TYPE_STOPPED_VEHICLE"
CONGESTION = "ALERT_TYPE_CONGESTION"
CAMERA_BLIND = "ALERT_TYPE_CAMERA_BLIND"

INFO = "ALERT_SEVERITY_INFO"
WARNING = "ALERT_SEVERITY_WARNING"
CRITICAL = "ALERT_SEVERITY_CRITICAL"


@dataclass(frozen=True)
class Thresholds:
    """Camera-wide rule settings (``analytics.*`` of the configuration)."""

    wrong_way_min_m: float = 10.0
    wrong_way_tolerance_deg: float = 90.0
    speeding_min_s: float = 2.0
    stopped_speed_kmh: float = 3.0
    congestion_speed_kmh: float = 15.0
    congestion_min_vehicles: float = 4.0
    congestion_window_s: float = 30.0
    blind_after_s: float = 60.0
    blind_min_detections: float = 0.5
    freeze_after_s: float = 10.0
    dark_luma: float = 12.0
    dark_after_s: float = 10.0


@dataclass(frozen=True)
class Alert:
    """A raise or a clear of one condition."""

    key: str
    alert_type: str
    severity: str
    state: str
    message: str
    t: float
    zone_id: str = ""
    track_ids: tuple[int, ...] = ()
    speed_kmh: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def tracking_id(self) -> int:
        """The main track of the alert, 0 for none."""
        return self.track_ids[0] if self.track_ids else 0


class AlertBook:
    """Active conditions of one camera, so each is raised once and cleared once."""

    def __init__(self) -> None:
        self.active: dict[str, Alert] = {}

    def raise_alert(self, alert: Alert) -> Alert | None:
        """``alert`` if its key was not active (now it is), else None."""
        if alert.key in self.active:
            return None
        self.active[alert.key] = alert
        return alert

    def clear(self, key: str, t: float, why: str, **evidence: Any) -> Alert | None:
        """The clear of an active key (now inactive), else None."""
        raised = self.active.pop(key, None)
        if raised is None:
            return None
        return Alert(
            key=key,
            alert_type=raised.alert_type,
            severity=raised.severity,
            state=CLEARED,
            message=f"cleared: {why}",
            t=t,
            zone_id=raised.zone_id,
            track_ids=raised.track_ids,
            speed_kmh=None,
            evidence={**evidence, "raised_at_s": raised.t, "duration_s": round(t - raised.t, 3)},
        )

    def is_active(self, key: str) -> bool:
        """Whether ``key`` is raised and not cleared."""
        return key in self.active

    def keys_with_track(self, track_id: int) -> list[str]:
        """Active keys about one track."""
        return [k for k, a in self.active.items() if track_id in a.track_ids]

    def to_state(self) -> list[dict[str, Any]]:
        """The raised alerts as plain JSON data (``restore_state`` takes them back)."""
        return [
            {
                "key": a.key,
                "alert_type": a.alert_type,
                "severity": a.severity,
                "message": a.message,
                "t": a.t,
                "zone_id": a.zone_id,
                "track_ids": list(a.track_ids),
                "speed_kmh": a.speed_kmh,
                "evidence": a.evidence,
            }
            for a in self.active.values()
        ]

    def restore_state(self, state: list[dict[str, Any]]) -> int:
        """Mark alerts saved by ``to_state`` raised again (so each gets its one clear);
        how many. Entries that do not parse are skipped."""
        n = 0
        for d in state:
            try:
                a = Alert(
                    key=str(d["key"]),
                    alert_type=str(d["alert_type"]),
                    severity=str(d["severity"]),
                    state=RAISED,
                    message=str(d["message"]),
                    t=float(d["t"]),
                    zone_id=str(d.get("zone_id", "")),
                    track_ids=tuple(int(x) for x in d.get("track_ids", ())),
                    speed_kmh=None if d.get("speed_kmh") is None else float(d["speed_kmh"]),
                    evidence=dict(d.get("evidence") or {}),
                )
            except (KeyError, TypeError, ValueError):
                continue
            if self.raise_alert(a) is not None:
                n += 1
        return n

    def clear_all(self, t: float, reason: str) -> list[Alert]:
        """Clear everything (the camera goes away)."""
        out = []
        for key in list(self.active):
            c = self.clear(key, t, reason)
            if c is not None:
                out.append(c)
        return out


class TrackRule:
    """A rule kept per track in one zone (wrong way, speeding, stopped vehicle): each
    track's state while the rule watches it, its alert key, and the clear when the track
    leaves the zone or ends."""

    #: First part of the rule's alert keys (``wrong_way:<zone>:<track>``).
    rule = ""

    def __init__(self, spec: ZoneSpec, thresholds: Thresholds, book: AlertBook) -> None:
        self.spec = spec
        self.th = thresholds
        self.book = book
        #: Per track: when (or how far) the condition started to hold.
        self.state: dict[int, float] = {}

    def _key(self, tid: int) -> str:
        return f"{self.rule}:{self.spec.zone_id}:{tid}"

    def _clear_evidence(self, tid: int) -> dict[str, Any]:
        """Evidence added to a track's clear (and state dropped with it)."""
        return {}

    def _gone(self, tid: int, t: float, reason: str) -> list[Alert]:
        self.state.pop(tid, None)
        c = self.book.clear(self._key(tid), t, reason, **self._clear_evidence(tid))
        return [c] if c is not None else []

    def forget(self, track_ids: Iterable[int], t: float) -> list[Alert]:
        """Clear the alerts of tracks that ended."""
        out: list[Alert] = []
        for tid in track_ids:
            out.extend(self._gone(tid, t, "the track ended"))
        return out
