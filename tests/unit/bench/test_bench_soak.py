"""The soak's numbers: growth after warm-up, slopes, and the verdict (bench/soak.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))

from soak import growth_pct, judge, slope_per_min


def _samples(
    mem: dict[str, list[float]], p50: list[float], p99: list[float]
) -> list[dict[str, Any]]:
    n = len(p50)
    return [
        {
            "t": 10.0 * i,
            "pss_mib": {k: v[i] for k, v in mem.items()},
            "pids": {k: 100 for k in mem},
            "p50_ms": p50[i],
            "p99_ms": p99[i],
        }
        for i in range(n)
    ]


def test_slope_is_per_minute_and_skips_missing_windows() -> None:
    ts = [0.0, 30.0, 60.0, 90.0]
    assert slope_per_min(ts, [1.0, 2.0, 3.0, 4.0]) == pytest.approx(2.0)
    assert slope_per_min(ts, [1.0, math.nan, 3.0, 4.0]) == pytest.approx(2.0, rel=0.05)
    assert slope_per_min([0.0], [5.0]) == 0.0


def test_growth_compares_medians_of_the_ends() -> None:
    assert growth_pct([100.0] * 10) == 0.0
    assert growth_pct([100.0, 100.0, 100.0, 100.0, 110.0, 110.0, 110.0]) == pytest.approx(10.0)
    # one odd sample at either end does not decide it
    assert growth_pct([130.0, 100.0, 100.0, 100.0, 100.0, 100.0, 70.0]) == 0.0


def test_flat_run_passes_and_warmup_is_left_out() -> None:
    n = 30
    mem = {"analyze": [20.0 + i for i in range(6)] + [40.0] * (n - 6), "publish": [30.0] * n}
    s = _samples(mem, [60.0] * n, [90.0] * n)
    v = judge(s, warmup_s=60.0)
    assert v.passed, v.failures
    assert v.memory["analyze"]["growth_pct"] == 0.0
    assert not judge(s, warmup_s=0.0).passed  # the warm-up's climb counts without it


def test_growth_latency_rise_and_restarts_fail() -> None:
    n = 30
    mem = {"analyze": [50.0 + 0.2 * i for i in range(n)], "publish": [30.0] * n}
    s = _samples(mem, [60.0 + 2 * i for i in range(n)], [90.0] * n)
    s[-1]["pids"]["publish"] = 101
    v = judge(s, warmup_s=20.0)
    text = " ".join(v.failures)
    assert "analyze: memory grew" in text
    assert "latency p50 rises" in text
    assert "publish: restarted" in text
    assert "p99" not in text


def test_no_samples_after_warmup_fails() -> None:
    assert not judge(_samples({"a": [1.0]}, [1.0], [1.0]), warmup_s=60.0).passed


def test_judged_on_own_memory_with_its_parts() -> None:
    n = 20
    mem = {"publish": [60.0 + (3.0 if i % 2 else 0.0) for i in range(n)]}  # file share noise
    s = _samples(mem, [60.0] * n, [90.0] * n)
    for x in s:
        x["pss_anon_mib"] = {"publish": 40.0}
        x["pss_shmem_mib"] = {"publish": 12.0}
        x["own_mib"] = {"publish": 52.0}
    v = judge(s, warmup_s=0.0, key="own_mib")
    assert v.passed, v.failures
    r = v.memory["publish"]
    assert r["growth_pct"] == 0.0 and r["anon_end_mib"] == 40.0 and r["shmem_end_mib"] == 12.0
    assert r["pss_growth_pct"] == 5.0
