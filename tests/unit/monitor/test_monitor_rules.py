"""The Prometheus rules file: valid for promtool, the critical rules fire on synthetic
series, and thresholds and durations match the daemon's defaults (``alerts:``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from itsd.config import AlertsConfig
from itsd.runtime.alerts import rules_from_config

REPO = Path(__file__).resolve().parents[3]
RULES = REPO / "deploy" / "prometheus" / "itsd-rules.yml"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool missing in CI (Debian package prometheus; make system-deps)")
        pytest.skip("promtool not installed (Debian package prometheus)")
    return path


def _rules() -> dict[str, dict[str, object]]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"]}


def _seconds(text: str) -> float:
    n, unit = re.fullmatch(r"(\d+)([smh])", text).groups()  # type: ignore[union-attr]
    return float(n) * {"s": 1, "m": 60, "h": 3600}[unit]


def test_same_rules_as_the_daemon() -> None:
    file_rules = _rules()
    daemon = {r.name: r for r in rules_from_config(AlertsConfig())}
    assert set(file_rules) == set(daemon)
    for name, rule in daemon.items():
        fr = file_rules[name]
        assert fr["labels"] == {"severity": rule.severity}, name  # type: ignore[comparison-overlap]
        assert _seconds(str(fr["for"])) == rule.for_s, name
        expr = str(fr["expr"])
        assert (
            f"{rule.op} {rule.threshold:g}" in expr or f"{rule.op} {rule.threshold:g} *" in expr
        ), (
            name,
            expr,
        )


def test_promtool_check_rules() -> None:
    out = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 7 rules found" in out.stdout


def _alert(name: str, labels: dict[str, str], summary: str) -> dict[str, object]:
    return {
        "eval_time": "10m",
        "alertname": name,
        "exp_alerts": [{"exp_labels": labels, "exp_annotations": {"summary": summary}}],
    }


def test_promtool_fires_the_critical_rules(tmp_path: Path) -> None:
    inst = {"instance": "edge1"}
    series = [
        # p95 of 150 ms: every batch in the (0.1, 0.15] bucket.
        ('ml_inference_latency_seconds_bucket{instance="edge1", le="0.1"}', "0+0x60"),
        ('ml_inference_latency_seconds_bucket{instance="edge1", le="0.15"}', "0+15x60"),
        ('ml_inference_latency_seconds_bucket{instance="edge1", le="+Inf"}', "0+15x60"),
        ('gpu_utilization{instance="edge1", gpu="0"}', "20x60"),
        ('ml_error_rate{instance="edge1"}', "0.2x60"),
        ('queue_depth{instance="edge1", queue="events"}', "5000x60"),
        # Healthy values: nothing fires for these.
        ('gpu_utilization{instance="edge2", gpu="0"}', "90x60"),
        ('queue_depth{instance="edge2", queue="events"}', "10x60"),
    ]
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [{"series": s, "values": v} for s, v in series],
                "alert_rule_test": [
                    _alert(
                        "InferenceLatencyCritical",
                        {"severity": "critical", **inst},
                        "itsd inference latency p95 above 100 ms for 5 minutes on edge1",
                    ),
                    # Not before it has held for 5 minutes.
                    {"eval_time": "4m", "alertname": "InferenceLatencyCritical", "exp_alerts": []},
                    _alert(
                        "GpuUtilizationLow",
                        {"severity": "critical", "gpu": "0", **inst},
                        "GPU 0 busy less than 50% on edge1",
                    ),
                    _alert(
                        "ErrorRateHigh",
                        {"severity": "critical", **inst},
                        "itsd error rate above 5% on edge1",
                    ),
                    _alert(
                        "QueueDepthHigh",
                        {"severity": "critical", "queue": "events", **inst},
                        "itsd queue events holds more than 1000 items",
                    ),
                ],
            }
        ],
    }
    path = tmp_path / "itsd-rules.test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    out = subprocess.run(
        [promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_check_config() -> None:
    config = RULES.parent / "prometheus.yml"
    out = subprocess.run(
        [promtool(), "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
