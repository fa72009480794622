"""The daemon's alert rules: thresholds held for a duration, raised and cleared.

The rules are those of the original design, each with its threshold and duration in the
configuration (``alerts:`` in ``itsd.config``); ``deploy/prometheus/itsd-rules.yml`` holds
the same rules for a Prometheus server (a test keeps the two in step)::

    rule                       severity  condition (defaults)
    InferenceLatencyCritical   critical  p95 of ml_inference_latency_seconds > 100 ms for 5 min
    InferenceLatencyHigh       warning   p95 of ml_inference_latency_seconds > 75 ms for 5 min
    GpuUtilizationLow          critical  gpu_utilization < 50 % for 5 min (GPUs of gpus:)
    ErrorRateHigh              critical  ml_error_rate > 5 % for 1 min
    QueueDepthHigh             critical  queue_depth > 1000 for 1 min (per queue)
    ThroughputLow              warning   ml_throughput_fps < 0.9 x ml_target_fps for 2 min
                                         (per running camera)
    MemoryHigh                 warning   memory_used_ratio > 90 % for 2 min (host, each GPU)

Semantics follow Prometheus: a condition true at every evaluation is *pending*; once it
has held for ``for_s`` the alert *fires* (one transition); the first evaluation where it
is false, or where the value is missing (no GPU, no frames in the window, a camera gone),
*resolves* it (one transition). Latency is the 95th percentile of the histogram's
observations over the last ``window_s`` seconds, estimated as ``histogram_quantile``
does. Each subject (a camera, a queue, a GPU) has its own alert.

``AlertEngine.evaluate`` is called by the supervisor's snapshot each tick with the values
it measured; transitions carry an increasing sequence number so the publisher can turn
each into exactly one ``alert`` event (``itsd.events.alert_event``) however often it
looks. This module only decides; it must never import a stage, the supervisor,
``control`` or ``monitor``, and never publish anything itself.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping
from dataclasses import dataclass

from itsd.config import AlertsConfig
from itsd.runtime.metrics import quantile

#: Alert type of each rule in the ``alert`` event (``itsd.events.builders.ALERT_TYPES``).
ALERT_TYPES: Mapping[str, str] = {
    "InferenceLatencyCritical": "ALERT_TYPE_INFERENCE_LATENCY",
    "InferenceLatencyHigh": "ALERT_TYPE_INFERENCE_LATENCY",
    "GpuUtilizationLow": "ALERT_TYPE_GPU_UTILIZATION",
    "ErrorRateHigh": "ALERT_TYPE_ERROR_RATE",
    "QueueDepthHigh": "ALERT_TYPE_QUEUE_DEPTH",
    "ThroughputLow": "ALERT_TYPE_THROUGHPUT",
    "MemoryHigh": "ALERT_TYPE_MEMORY",
}
RECENT = 50  # transitions kept for the dashboard and the publisher


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: ``value <op> threshold`` held for ``for_s`` seconds."""

    name: str
    severity: str  # "critical" or "warning"
    #: What the value is, for messages: "latency" (seconds, shown in ms), "percent",
    #: "ratio" (shown in %), "count", "fps".
    unit: str
    op: str  # ">" or "<"
    threshold: float
    for_s: float
    description: str

    def breached(self, value: float) -> bool:
        """True when ``value`` breaks the rule."""
        return value > self.threshold if self.op == ">" else value < self.threshold

    @property
    def alert_type(self) -> str:
        """The ``alert_type`` of its events."""
        return ALERT_TYPES.get(self.name, "ALERT_TYPE_UNSPECIFIED")

    @property
    def event_severity(self) -> str:
        """The ``severity`` of its events."""
        critical = self.severity == "critical"
        return "ALERT_SEVERITY_CRITICAL" if critical else "ALERT_SEVERITY_WARNING"


def show(unit: str, value: float) -> str:
    """A value for people: ``142 ms``, ``37 %``, ``1200``, ``11.5 fps``."""
    if math.isnan(value):
        return "n/a"
    if unit == "latency":
        return f"{value * 1000:.0f} ms"
    if unit == "ratio":
        return f"{value * 100:.1f} %"
    if unit == "percent":
        return f"{value:.0f} %"
    if unit == "fps":
        return f"{value:.1f} fps"
    return f"{value:.0f}"


@dataclass(frozen=True, slots=True)
class Transition:
    """An alert fired or resolved."""

    seq: int
    rule: str
    severity: str
    alert_type: str
    #: "firing" or "resolved".
    state: str
    #: Camera id, queue name, ``gpu0``, ``host`` ... ("" for daemon-wide rules).
    subject: str
    camera_id: str
    value: float
    threshold: float
    for_s: float
    at: float  # wall clock
    message: str
    #: Shared by an alert's firing and its resolution (``daemon-<run seq>-<rule>``).
    alert_id: str = ""


@dataclass(frozen=True, slots=True)
class ActiveAlert:
    """An alert that is pending or firing now."""

    rule: str
    severity: str
    subject: str
    state: str  # "pending" or "firing"
    since: float  # wall clock of the first breaching evaluation
    value: float
    threshold: float
    message: str


@dataclass(frozen=True, slots=True)
class AlertsView:
    """What the dashboard and ``/health`` show: alerts now, and the last transitions."""

    active: tuple[ActiveAlert, ...] = ()
    recent: tuple[Transition, ...] = ()
    last_seq: int = 0


@dataclass
class _Track:
    since_mono: float
    since_wall: float
    value: float
    firing: bool = False
    alert_id: str = ""


class AlertEngine:
    """Evaluates the rules on each call and remembers what is pending and firing."""

    def __init__(self, rules: tuple[Rule, ...], start_seq: int = 0) -> None:
        self.rules = {r.name: r for r in rules}
        self._tracks: dict[tuple[str, str], _Track] = {}
        self._seq = start_seq
        self.recent: collections.deque[Transition] = collections.deque(maxlen=RECENT)

    def set_rules(self, rules: tuple[Rule, ...]) -> None:
        """New thresholds (a reload); alerts of rules that went away resolve next time."""
        self.rules = {r.name: r for r in rules}

    def _message(self, rule: Rule, subject: str, value: float, state: str) -> str:
        where = f" ({subject})" if subject else ""
        limit = show(rule.unit, rule.threshold)
        if state == "resolved":
            return f"resolved: {rule.description}{where} back within {limit}"
        now = show(rule.unit, value)
        return f"{rule.description}{where}: {now} {rule.op} {limit} for {rule.for_s:.0f} s"

    def _emit(
        self,
        rule: Rule,
        subject: str,
        camera: str,
        value: float,
        state: str,
        now_wall: float,
        alert_id: str,
    ) -> Transition:
        self._seq += 1
        tr = Transition(
            self._seq,
            rule.name,
            rule.severity,
            rule.alert_type,
            state,
            subject,
            camera,
            value,
            rule.threshold,
            rule.for_s,
            now_wall,
            self._message(rule, subject, value, state),
            alert_id,
        )
        self.recent.append(tr)
        return tr

    def evaluate(
        self,
        values: Mapping[str, Mapping[str, float | None]],
        now_mono: float,
        now_wall: float,
        cameras: frozenset[str] = frozenset(),
    ) -> list[Transition]:
        """One evaluation. ``values[rule][subject]`` is the measured value (None: no data).

        Subjects found in ``cameras`` are put in the events' ``camera_id``.
        """
        out: list[Transition] = []
        seen: set[tuple[str, str]] = set()
        for name, rule in self.rules.items():
            for subject, value in values.get(name, {}).items():
                if value is None or math.isnan(value) or not rule.breached(value):
                    continue
                key = (name, subject)
                seen.add(key)
                tr = self._tracks.get(key)
                if tr is None:
                    tr = self._tracks[key] = _Track(now_mono, now_wall, value)
                tr.value = value
                if not tr.firing and now_mono - tr.since_mono >= rule.for_s:
                    tr.firing = True
                    tr.alert_id = f"daemon-{self._seq + 1}-{name}"
                    cam = subject if subject in cameras else ""
                    out.append(
                        self._emit(rule, subject, cam, value, "firing", now_wall, tr.alert_id)
                    )
        for key in [k for k in self._tracks if k not in seen]:
            tr = self._tracks.pop(key)
            if tr.firing:
                name, subject = key
                rule = self.rules.get(name) or Rule(name, "warning", "count", ">", 0.0, 0.0, name)
                cam = subject if subject in cameras else ""
                out.append(
                    self._emit(rule, subject, cam, tr.value, "resolved", now_wall, tr.alert_id)
                )
        return out

    def view(self) -> AlertsView:
        """Alerts now and the recent transitions (immutable)."""
        active = []
        for (name, subject), tr in sorted(self._tracks.items()):
            rule = self.rules.get(name)
            if rule is None:
                continue
            state = "firing" if tr.firing else "pending"
            active.append(
                ActiveAlert(
                    name,
                    rule.severity,
                    subject,
                    state,
                    tr.since_wall,
                    tr.value,
                    rule.threshold,
                    self._message(rule, subject, tr.value, state),
                )
            )
        return AlertsView(tuple(active), tuple(self.recent), self._seq)


def window_quantile(
    bounds: tuple[float, ...],
    history: collections.deque[tuple[float, tuple[float, ...]]],
    cumulative: tuple[float, ...],
    now: float,
    window_s: float,
    q: float,
) -> float:
    """The ``q`` quantile of the observations of the last ``window_s`` seconds.

    ``history`` holds (time, cumulative buckets) of earlier calls; this call is added.
    NaN when nothing was observed in the window (or the counts restarted).
    """
    if history and history[-1][1] and cumulative[-1] < history[-1][1][-1]:
        history.clear()  # the counts restarted (a stage restarted)
    history.append((now, cumulative))
    while len(history) > 2 and now - history[1][0] >= window_s:
        history.popleft()
    _, old = history[0]
    if len(history) < 2:
        return math.nan
    delta = tuple(a - b for a, b in zip(cumulative, old, strict=True))
    return quantile(bounds, delta, q)


#: (rule name, configuration key, severity, unit, op, description)
_RULES = (
    ("InferenceLatencyCritical", "inference_latency_critical", "critical", "latency", ">",
     "inference latency"),
    ("InferenceLatencyHigh", "inference_latency_warning", "warning", "latency", ">",
     "inference latency"),
    ("GpuUtilizationLow", "gpu_utilization_low", "critical", "percent", "<", "GPU utilisation"),
    ("ErrorRateHigh", "error_rate_high", "critical", "ratio", ">", "error rate"),
    ("QueueDepthHigh", "queue_depth_high", "critical", "count", ">", "queue depth"),
    ("ThroughputLow", "throughput_low", "warning", "ratio", "<", "throughput / target fps"),
    ("MemoryHigh", "memory_high", "warning", "ratio", ">", "memory in use"),
)  # fmt: skip


def rules_from_config(cfg: AlertsConfig) -> tuple[Rule, ...]:
    """The enabled rules with the configured thresholds and durations."""
    out = []
    for name, key, severity, unit, op, description in _RULES:
        rc = getattr(cfg, key)
        if cfg.enabled and rc.enabled:
            out.append(Rule(name, severity, unit, op, rc.threshold, rc.for_s, description))
    return tuple(out)
