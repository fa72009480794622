"""``itsd events tail`` against a real Kafka-protocol broker (Tansu)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml


def test_tail_reads_one_cameras_events_from_the_broker(tansu: Any, tmp_path: Path) -> None:
    from confluent_kafka import Producer

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump({"kafka": {"enabled": True, "bootstrap_servers": tansu.bootstrap}})
    )
    p = Producer({"bootstrap.servers": tansu.bootstrap})
    for i in range(6):
        cam = "a" if i % 2 == 0 else "b"
        p.produce("alert_events", key=cam, value=f'{{"camera_id": "{cam}", "n": {i}}}')
    assert p.flush(30) == 0
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "itsd",
            "events",
            "tail",
            "--topic",
            "alert_events",
            "--camera",
            "a",
            "--from-beginning",
            "--config",
            str(cfg),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 30
        assert proc.stdout is not None
        while len(lines) < 3 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line:
                lines.append(line.strip())
        assert sorted(lines) == sorted(f'{{"camera_id": "a", "n": {i}}}' for i in (0, 2, 4))
    finally:
        proc.terminate()
        proc.wait(10)
