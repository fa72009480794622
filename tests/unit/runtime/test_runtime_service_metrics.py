"""ServiceMetrics: the design's derived series, alert evaluation on them, and the alerts
board the publisher reads."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import MappingProxyType

import pytest

from itsd.config import AlertsConfig
from itsd.runtime import metrics as m
from itsd.runtime.hostinfo import GpuStat, HostProbe, HostSample
from itsd.runtime.metrics import Sample
from itsd.runtime.service_metrics import CameraRates, ServiceMetrics, alerts_board_name
from itsd.shm import new_run_id
from itsd.shm.board import Board


def lab(**kv: str) -> MappingProxyType[str, str]:
    return MappingProxyType(kv)


@pytest.fixture
def svc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ServiceMetrics:
    monkeypatch.setenv("ITSD_SHM_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no GPU
    s = ServiceMetrics(new_run_id(), HostProbe())
    yield s  # type: ignore[misc]
    s.close()


def test_derived_series_and_alert_board(svc: ServiceMetrics) -> None:
    cfg = AlertsConfig.model_validate(
        {"queue_depth_high": {"threshold": 10, "for_s": 1}, "throughput_low": {"for_s": 1}}
    )
    cams = [
        CameraRates("a", "running", 10.0, 4.0, 15.0, 2),
        CameraRates("b", "starting", 0, 0, 15, 0),
    ]
    out, view = svc.tick(cfg, [], cams, [("events", 50)], 1000.0, 0.0)
    by = {(s.defn.name, tuple(s.labels.values())): s.value for s in out}
    assert by[("ml_throughput_fps", ("a",))] == 4.0
    assert by[("ml_target_fps", ("a",))] == 10.0  # the source gives 10 of the 15 asked
    assert by[("queue_depth", ("events",))] == 50 and by[("queue_depth", ("frames:a",))] == 2
    assert by[("ml_error_rate", ())] == 0.0
    assert ("gpu_utilization", ("0",)) not in by
    assert {a.rule for a in view.active} == {"QueueDepthHigh", "ThroughputLow"}
    assert all(a.state == "pending" for a in view.active)
    out, view = svc.tick(cfg, [], cams, [("events", 50)], 1001.5, 1.5)
    fired = {(t.rule, t.subject, t.camera_id) for t in view.recent}
    assert fired == {("QueueDepthHigh", "events", ""), ("ThroughputLow", "a", "a")}
    firing = [s for s in out if s.defn is m.ALERTS_FIRING and s.value == 1.0]
    assert {s.labels["rule"] for s in firing} == {"QueueDepthHigh", "ThroughputLow"}
    board = Board.attach(alerts_board_name(svc.run_id))
    try:
        data = json.loads(board.read() or b"{}")
    finally:
        board.close()
    assert [t["seq"] for t in data["transitions"]] == [1, 2]
    assert {t["state"] for t in data["transitions"]} == {"firing"}
    _, view = svc.tick(cfg, [], cams[1:], [("events", 0)], 1002.0, 2.0)
    assert [t.state for t in view.recent[-2:]] == ["resolved", "resolved"]


def test_error_rate_over_the_window(svc: ServiceMetrics) -> None:
    cfg = AlertsConfig()

    def tick(frames: float, errors: float, t: float) -> float:
        samples = [
            Sample(m.DECODE_FRAMES, lab(camera="a"), frames),
            Sample(m.DECODE_ERRORS, lab(camera="a"), errors),
        ]
        out, _ = svc.tick(cfg, samples, [], [], t, t)
        return next(s.value for s in out if s.defn is m.ML_ERROR_RATE)

    assert tick(100, 0, 0.0) == 0.0
    assert tick(190, 10, 10.0) == pytest.approx(10 / 100)
    assert tick(1000, 10, 80.0) == 0.0  # the errors left the window


class _Probe:
    def __init__(self) -> None:
        self.host = HostSample(
            0.5, 1 << 34, (GpuStat(0, "H200", 10.0, 1, 10), GpuStat(1, "H200", 99.0, 1, 10))
        )

    def sample(self) -> HostSample:
        return self.host

    def close(self) -> None:
        pass


def test_only_the_daemons_gpus_are_watched(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ITSD_SHM_DIR", str(tmp_path))
    svc = ServiceMetrics(new_run_id(), _Probe())  # type: ignore[arg-type]
    cfg = AlertsConfig.model_validate({"gpu_utilization_low": {"for_s": 0}})
    try:
        out, view = svc.tick(cfg, [], [], [], 0.0, 0.0, gpus=[1])
        assert {s.labels["gpu"] for s in out if s.defn is m.GPU_UTILIZATION} == {"1"}
        assert view.active == ()  # GPU 1 is busy; GPU 0 is not the daemon's
        out, view = svc.tick(cfg, [], [], [], 1.0, 1.0, gpus=[0, 1])
        assert [(t.rule, t.subject) for t in view.recent] == [("GpuUtilizationLow", "gpu0")]
        out, _ = svc.tick(cfg, [], [], [], 2.0, 2.0)
        assert not [s for s in out if s.defn is m.GPU_UTILIZATION]  # CPU inference
    finally:
        svc.close()
