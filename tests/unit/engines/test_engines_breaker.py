"""Unit tests of the inference circuit breaker (fake clock)."""

from __future__ import annotations

import pytest

from itsd.engines.breaker import BreakerPolicy, BreakerState, CircuitBreaker, classify
from itsd.engines.faults import FaultSpec, FaultyEngine, make_error, parse_faults
from itsd.errors import ConfigError


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "oom"),
        (MemoryError(), "oom"),
        (RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : CUDNN failure 4"), "cuda"),
        (RuntimeError("CUDA error: an illegal memory access was encountered"), "cuda"),
        (TimeoutError("inference took too long"), "timeout"),
        (ValueError("bad shape"), "other"),
        (make_error("oom"), "oom"),
        (make_error("cuda"), "cuda"),
        (make_error("timeout"), "timeout"),
        (make_error("other"), "other"),
    ],
)
def test_classify(exc: BaseException, kind: str) -> None:
    assert classify(exc) == kind


def test_counts_are_kept_apart_and_oom_opens_fastest() -> None:
    clock = Clock()
    br = CircuitBreaker(clock=clock)
    for _ in range(2):
        br.failure(make_error("cuda"))
        br.failure(make_error("other"))
        br.failure(make_error("timeout"))
    assert br.state is BreakerState.CLOSED
    assert br.totals == {"cuda": 2, "oom": 0, "timeout": 2, "other": 2}
    br.failure(make_error("oom"))
    assert br.state is BreakerState.CLOSED
    br.failure(make_error("oom"))
    assert br.state is BreakerState.OPEN
    assert br.reason == "2 out-of-memory errors within 60 s"
    assert not br.allow()


def test_failures_outside_the_window_do_not_add_up() -> None:
    clock = Clock()
    br = CircuitBreaker(BreakerPolicy(window_s=10), clock=clock)
    for _ in range(4):
        br.failure(make_error("other"))
        clock.t += 6
    assert br.state is BreakerState.CLOSED
    assert br.totals["other"] == 4


def test_half_open_probe_closes_on_success() -> None:
    clock = Clock()
    br = CircuitBreaker(BreakerPolicy(open_s=5), clock=clock)
    for _ in range(3):
        br.failure(make_error("cuda"))
    assert br.state is BreakerState.OPEN
    clock.t += 4.9
    assert not br.allow()
    assert br.seconds_to_probe() == pytest.approx(0.1)
    clock.t += 0.2
    assert br.allow()  # the probe
    assert br.state is BreakerState.HALF_OPEN
    assert not br.allow()  # only one probe at a time
    br.success()
    assert br.state is BreakerState.CLOSED
    assert br.allow()
    # The window was cleared: it takes a full threshold again to open.
    br.failure(make_error("cuda"))
    br.failure(make_error("cuda"))
    assert br.state is BreakerState.CLOSED


def test_failed_probe_reopens_with_a_longer_cool_down() -> None:
    clock = Clock()
    br = CircuitBreaker(BreakerPolicy(open_s=5, max_open_s=15), clock=clock)
    br.failure(make_error("oom"))
    br.failure(make_error("oom"))
    for expected in (10, 15, 15):
        clock.t += 100
        assert br.allow()
        br.failure(make_error("oom"))
        assert br.state is BreakerState.OPEN
        assert br.reason == "probe failed with a out-of-memory error"
        assert br.seconds_to_probe() == pytest.approx(expected)
    d = br.describe()
    assert d["state"] == "open" and d["errors"]["oom"] == 5 and d["opened"] == 4
    assert "CUDA out of memory" in d["last_error"]


def test_policy_is_checked() -> None:
    with pytest.raises(ValueError, match="thresholds"):
        BreakerPolicy(thresholds={"gpu": 1})
    with pytest.raises(ValueError, match="max_open_s"):
        BreakerPolicy(open_s=10, max_open_s=5)


def test_fault_spec_parsing() -> None:
    assert parse_faults("oom") == FaultSpec("oom", 0, None)
    assert parse_faults("cuda:3:2") == FaultSpec("cuda", 3, 2)
    for bad in ("gpu", "oom:x", "oom:1:2:3", "oom:-1"):
        with pytest.raises(ConfigError, match="ITSD_TEST_ENGINE_FAULTS"):
            parse_faults(bad)


class _Inner:
    name = "fake"
    input_size = (32, 32)
    class_names = ["a"]
    max_batch = 1

    def infer(self, frames: object) -> list[str]:
        return ["ok"]

    def close(self) -> None:
        pass


def test_faulty_engine_fails_after_and_for_count() -> None:
    eng = FaultyEngine(_Inner(), FaultSpec("timeout", after=1, count=2))  # type: ignore[arg-type]
    assert eng.infer([]) == ["ok"]
    for _ in range(2):
        with pytest.raises(TimeoutError):
            eng.infer([])
    assert eng.infer([]) == ["ok"]
