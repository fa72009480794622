"""``/metrics`` in both exposition formats: parses, one family per name, every help text."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import pytest
from prometheus_client.openmetrics import parser as om_parser
from prometheus_client.parser import text_string_to_metric_families

from itsd.monitor.http import MonitorServer
from itsd.runtime import metrics as m
from itsd.runtime.metrics import REGISTRY, Sample

SAMPLES = (
    Sample(m.SUP_RESTARTS, MappingProxyType({"stage": "infer"}), 2.0),
    Sample(m.SUP_RESTARTS, MappingProxyType({"stage": "decode:a"}), 0.0),
    Sample(m.SUP_UP, MappingProxyType({}), 1.0),
    Sample(m.SUP_FPS, MappingProxyType({"step": "decoded"}), 14.5),
    Sample(m.DECODE_FRAMES, MappingProxyType({"camera": 'odd "id"\\'}), 10.0),
)


@pytest.fixture
def server() -> Iterator[MonitorServer]:
    srv = MonitorServer(object(), "127.0.0.1", 0, lambda: SAMPLES)  # type: ignore[arg-type]
    yield srv
    srv.stop()


def get(srv: MonitorServer, accept: str | None) -> tuple[str, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{srv.port}/metrics")
    if accept is not None:
        req.add_header("Accept", accept)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read().decode(), resp.headers["Content-Type"]


def check(families: list[Any]) -> dict[str, Any]:
    names = [f.name for f in families]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    by_name = {f.name: f for f in families}
    for name, defn in REGISTRY.items():
        if defn.exported:
            fam = by_name[name.removesuffix("_total")]
            assert fam.documentation == defn.help, name
            assert fam.type == defn.kind.value, name
    restarts = by_name["itsd_stage_restarts"]
    values = {s.labels["stage"]: s.value for s in restarts.samples if s.name.endswith("_total")}
    assert values == {"infer": 2.0, "decode:a": 0.0}
    return by_name


@pytest.mark.parametrize("accept", [None, "", "text/plain", "*/*", "text/plain;version=0.0.4"])
def test_text_format_by_default(server: MonitorServer, accept: str | None) -> None:
    text, ctype = get(server, accept)
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype
    by_name = check(list(text_string_to_metric_families(text)))
    (frames,) = by_name["itsd_decode_frames"].samples
    assert frames.labels == {"camera": 'odd "id"\\'}
    for name, defn in REGISTRY.items():
        if defn.exported:
            assert f"# HELP {name} {defn.help}\n" in text, name


@pytest.mark.parametrize(
    "accept",
    [
        "application/openmetrics-text",
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        # What Prometheus sends: OpenMetrics first, text as the fallback.
        "application/openmetrics-text;version=1.0.0;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    ],
)
def test_openmetrics_when_asked(server: MonitorServer, accept: str) -> None:
    text, ctype = get(server, accept)
    assert ctype.startswith("application/openmetrics-text"), ctype
    assert text.endswith("# EOF\n")
    check(list(om_parser.text_string_to_metric_families(text)))
    for name, defn in REGISTRY.items():
        if defn.exported:
            assert f"# HELP {name.removesuffix('_total')} {defn.help}\n" in text, name
