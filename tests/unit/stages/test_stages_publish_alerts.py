"""The publisher's daemon alerts: each transition on the alerts board becomes one alert
event, once, also across a restart of the stage (its sequence number is in a cell)."""

from __future__ import annotations

import json
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from itsd.runtime.metrics import MetricWriter
from itsd.runtime.service_metrics import alerts_board_name
from itsd.shm import new_run_id, segment_name
from itsd.shm.board import Board
from itsd.shm.cells import CellTable
from itsd.stages import publish


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[str, CellTable]]:
    monkeypatch.setenv("ITSD_SHM_DIR", str(tmp_path))
    rid = new_run_id()
    table = CellTable.create(segment_name(rid, "cells", "publish"), 64)
    yield rid, table
    table.close()
    table.unlink()


def transition(seq: int, state: str) -> dict[str, object]:
    return {
        "seq": seq,
        "rule": "QueueDepthHigh",
        "severity": "critical",
        "alert_type": "ALERT_TYPE_QUEUE_DEPTH",
        "state": state,
        "subject": "events",
        "camera_id": "",
        "value": 1500.0,
        "threshold": 1000.0,
        "for_s": 60.0,
        "at": time.time(),
        "message": "queue depth (events): 1500 > 1000 for 60 s",
        "alert_id": "daemon-1-QueueDepthHigh",
    }


def take(rid: str, table: CellTable) -> list[dict[str, object]]:
    ctx = types.SimpleNamespace(metrics=MetricWriter(table))
    alerts = publish._DaemonAlerts(ctx, rid)  # type: ignore[arg-type]
    try:
        return [json.loads(e.payload) for e in alerts.take()]
    finally:
        alerts.close()


def test_each_transition_once(run: tuple[str, CellTable]) -> None:
    rid, table = run
    assert take(rid, table) == []  # no board yet: nothing, no error
    board = Board.create(alerts_board_name(rid), 64 * 1024)
    try:
        board.publish(json.dumps({"transitions": [transition(1, "firing")]}).encode())
        (ev,) = take(rid, table)
        assert ev["event_type"] == "alert"
        assert (
            ev["data"]["state"] == "raised" and ev["data"]["severity"] == "ALERT_SEVERITY_CRITICAL"
        )
        assert ev["data"]["evidence"]["subject"] == "events"
        assert take(rid, table) == []  # a restarted publisher does not repeat it
        board.publish(
            json.dumps(
                {"transitions": [transition(1, "firing"), transition(2, "resolved")]}
            ).encode()
        )
        (ev,) = take(rid, table)
        assert ev["data"]["state"] == "cleared"
        assert ev["data"]["alert_id"] == "daemon-1-QueueDepthHigh"
    finally:
        board.close()
        board.unlink()
