"""An inference backend that keeps failing opens the circuit breaker; the daemon runs on.

The failing backend is the test-only fault injection of ``itsd.engines.faults``
(``ITSD_TEST_ENGINE_FAULTS``): the real ONNX engine wrapped so every call raises a
simulated CUDA out-of-memory error. Two of them open the breaker; the worker goes on
with the CPU fallback (the same model on ONNX Runtime, real detections) and health says
it is degraded and why. With ``breaker_fallback: skip`` frames are skipped and counted
instead, and the rest of the daemon (decode, analytics, publisher, control API) keeps
running. A backend that recovers is noticed by the half-open probe after the cool-down:
the breaker closes and health is serving again.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Daemon, wait_until

pytestmark = pytest.mark.slow

SOURCE = "pattern://moving?width=160&height=120&fps=10"


def _health(d: Daemon) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{d.http_port}/health", timeout=5) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as err:
        return json.loads(err.read())  # type: ignore[no-any-return]


def _metric(d: Daemon, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{d.http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    )


def test_oom_opens_the_breaker_and_the_cpu_fallback_keeps_detecting(
    start_daemon: Callable[..., Daemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ITSD_TEST_ENGINE_FAULTS", "oom")
    d = start_daemon(cameras=[{"id": "c0", "source": SOURCE, "target_fps": 10.0}])
    d.wait_log(r"ITSD_TEST_ENGINE_FAULTS is set", timeout=60)
    d.wait_log(r"circuit breaker open \(2 out-of-memory errors within 60 s\); running on the CPU")
    d.wait_log(r"all stages running", timeout=60)
    h = wait_until(
        lambda: (h := _health(d))["status"] == "degraded" and h,
        30,
        "health to say the daemon is degraded",
        d.log_path,
    )
    opened = r"stage infer: circuit breaker open .*CPU fallback"
    assert any(re.search(opened, r) for r in h["reasons"]), h
    # Detections keep coming from the fallback; the daemon and its API keep running.
    n = len(d.detections())
    wait_until(lambda: len(d.detections()) > n + 10, 60, "detections after the breaker opened")
    assert _metric(d, "itsd_infer_breaker_state") == 2.0
    assert _metric(d, "itsd_infer_errors_total") >= 2
    assert d.proc.poll() is None
    assert d.stop().returncode == 0


def test_skip_mode_skips_and_counts_frames_while_the_daemon_runs(
    start_daemon: Callable[..., Daemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ITSD_TEST_ENGINE_FAULTS", "cuda")
    d = start_daemon(
        cameras=[{"id": "c0", "source": SOURCE, "target_fps": 10.0}],
        extra={"performance": {"breaker_fallback": "skip"}},
    )
    d.wait_log(r"circuit breaker open \(3 CUDA errors within 60 s\); skipping frames", 90)
    wait_until(
        lambda: _metric(d, "itsd_infer_frames_skipped_total") > 10,
        60,
        "skipped frames to be counted",
        d.log_path,
    )
    d.wait_log(r"all stages running", timeout=60)
    h = wait_until(lambda: (h := _health(d))["status"] == "degraded" and h, 30, "degraded")
    assert any("circuit breaker open" in r for r in h["reasons"]), h
    # Decode goes on: frames are still decoded while inference is skipped.
    decoded = _metric(d, "itsd_decode_frames_total")
    wait_until(lambda: _metric(d, "itsd_decode_frames_total") > decoded + 5, 30, "decoding")
    assert d.proc.poll() is None
    assert d.stop().returncode == 0


def test_a_probe_that_succeeds_closes_the_breaker_and_health_recovers(
    start_daemon: Callable[..., Daemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two out-of-memory errors, then the backend works again.
    monkeypatch.setenv("ITSD_TEST_ENGINE_FAULTS", "oom:0:2")
    d = start_daemon(cameras=[{"id": "c0", "source": SOURCE, "target_fps": 10.0}])
    d.wait_log(r"circuit breaker open \(2 out-of-memory errors", timeout=90)
    d.wait_log(r"circuit breaker closed: the onnxruntime backend works again", timeout=60)
    d.wait_log(r"all stages running", timeout=60)
    h = wait_until(lambda: (h := _health(d))["status"] == "serving" and h, 30, "serving again")
    assert not any("circuit breaker" in r for r in h["reasons"])
    assert _metric(d, "itsd_infer_breaker_state") == 0.0
    assert _metric(d, "itsd_infer_errors_total") == 2.0
    assert d.stop().returncode == 0
