"""Alert rules: pending, firing after the duration, resolved; per subject; quantiles."""

from __future__ import annotations

import collections
import math

from itsd.config import AlertsConfig
from itsd.runtime.alerts import AlertEngine, Rule, rules_from_config, window_quantile
from itsd.runtime.metrics import LATENCY_BUCKETS, quantile

LAT = Rule("InferenceLatencyCritical", "critical", "latency", ">", 0.1, 300.0, "inference latency")
QUEUE = Rule("QueueDepthHigh", "critical", "count", ">", 1000.0, 60.0, "queue depth")


def test_fires_only_after_holding_for_the_duration_then_resolves() -> None:
    eng = AlertEngine((LAT,))
    assert eng.evaluate({LAT.name: {"": 0.15}}, 0.0, 1000.0) == []
    assert eng.view().active[0].state == "pending"
    assert eng.evaluate({LAT.name: {"": 0.2}}, 299.0, 1299.0) == []
    (fired,) = eng.evaluate({LAT.name: {"": 0.2}}, 300.0, 1300.0)
    assert (fired.state, fired.seq, fired.alert_type) == (
        "firing",
        1,
        "ALERT_TYPE_INFERENCE_LATENCY",
    )
    assert "200 ms > 100 ms" in fired.message
    assert eng.evaluate({LAT.name: {"": 0.3}}, 400.0, 1400.0) == []  # once only
    (resolved,) = eng.evaluate({LAT.name: {"": 0.05}}, 401.0, 1401.0)
    assert (resolved.state, resolved.seq) == ("resolved", 2)
    assert eng.view().active == ()
    assert [t.seq for t in eng.view().recent] == [1, 2]


def test_a_dip_restarts_the_wait_and_missing_data_resolves() -> None:
    eng = AlertEngine((QUEUE,))
    eng.evaluate({QUEUE.name: {"events": 2000.0}}, 0.0, 0.0)
    eng.evaluate({QUEUE.name: {"events": 10.0}}, 30.0, 30.0)  # dip: pending dropped
    assert eng.evaluate({QUEUE.name: {"events": 2000.0}}, 61.0, 61.0) == []
    (t,) = eng.evaluate({QUEUE.name: {"events": 2000.0}}, 121.0, 121.0)
    assert t.subject == "events" and t.state == "firing"
    (t,) = eng.evaluate({QUEUE.name: {"events": None}}, 122.0, 122.0)
    assert t.state == "resolved"


def test_subjects_are_separate_and_cameras_named() -> None:
    rule = Rule("ThroughputLow", "warning", "ratio", "<", 0.9, 0.0, "throughput / target fps")
    eng = AlertEngine((rule,))
    out = eng.evaluate({rule.name: {"a": 0.5, "b": 0.95, "c": 0.1}}, 0.0, 0.0, frozenset("ab"))
    assert sorted((t.subject, t.camera_id) for t in out) == [("a", "a"), ("c", "")]


def test_rules_follow_the_configuration() -> None:
    cfg = AlertsConfig.model_validate(
        {"queue_depth_high": {"threshold": 5}, "memory_high": {"enabled": False}}
    )
    rules = {r.name: r for r in rules_from_config(cfg)}
    assert rules["QueueDepthHigh"].threshold == 5 and rules["QueueDepthHigh"].for_s == 60
    assert "MemoryHigh" not in rules and len(rules) == 6
    assert rules_from_config(AlertsConfig(enabled=False)) == ()


def test_window_quantile_uses_only_the_window() -> None:
    n = len(LATENCY_BUCKETS) + 1
    hist: collections.deque[tuple[float, tuple[float, ...]]] = collections.deque()
    slow = (*(0.0 if b < 0.15 else 100.0 for b in LATENCY_BUCKETS), 100.0)
    assert math.isnan(window_quantile(LATENCY_BUCKETS, hist, slow, 0.0, 60.0, 0.95))
    # 100 more observations, all fast, over the next 61 s: the slow ones leave the window.
    fast = tuple(
        v + 100.0 if b >= 0.01 else v for v, b in zip(slow, (*LATENCY_BUCKETS, 1e9), strict=True)
    )
    assert len(fast) == n
    q = window_quantile(LATENCY_BUCKETS, hist, fast, 61.0, 60.0, 0.95)
    assert 0.005 < q <= 0.01
    cum = (0.0, 0.0, 50.0, 100.0) + (100.0,) * (n - 4)
    assert quantile(LATENCY_BUCKETS, cum, 0.5) == 0.02
