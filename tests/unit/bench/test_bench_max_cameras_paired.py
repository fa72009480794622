"""bench/max_cameras.py --paired: the count of cameras follows each round's (a), and
(b)/(a) is taken against the mean of the two (a)s around the itsd run (the limit and the
daemon replaced by recorded figures: this tests the bookkeeping, not the machine)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))

import max_cameras


def test_paired_rounds_follow_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    limits = iter([52.0, 48.0, 61.0, 59.0, 44.0, 46.0])
    monkeypatch.setattr(max_cameras, "raw_all_cores", lambda model, clip: next(limits))
    runs: list[int] = []

    def run_count(n: int, args: Any, model_ms: float, clip: Path) -> dict[str, Any]:
        runs.append(n)
        eps = 4.5 * n
        return {
            "events_per_s": eps,
            "share_of_offered": eps / (n * args.fps),
            "latency_ms": {"p50": 90.0, "p95": 150.0, "p99": 200.0},
        }

    monkeypatch.setattr(max_cameras, "run_count", run_count)
    args = argparse.Namespace(
        model=tmp_path / "m.onnx",
        clip=tmp_path / "c.mp4",
        fps=5.0,
        paired=3,
        start="together",
        ultralytics_python=tmp_path / "no-python",
        json=tmp_path / "out.json",
    )
    assert max_cameras.paired(args, tmp_path / "c5.mp4") == 0
    assert runs == [10, 12, 8]  # floor of each round's first (a) / 5
    report = json.loads((tmp_path / "out.json").read_text())
    ratios = [r["b_over_a"] for r in report["paired_rounds"]]
    assert ratios == pytest.approx([45 / 50, 54 / 60, 36 / 45], abs=1e-3)
    assert report["b_over_a_median"] == pytest.approx(0.9)
    assert report["ultralytics_track"] is None
    assert "median of 3 rounds: 0.90" in capsys.readouterr().out
