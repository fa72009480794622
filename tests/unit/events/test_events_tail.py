"""``itsd events tail`` on a JSONL file: filtering, the last N lines, following a rotation."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from itsd.config import Config
from itsd.events.tail import resolve_stream, tail_jsonl


def _line(kind: str, cam: str, n: int) -> str:
    return json.dumps({"event_type": kind, "camera_id": cam, "frame_id": n}) + "\n"


def test_resolve_stream_takes_kinds_and_names() -> None:
    cfg = Config.model_validate({"kafka": {"topic_prefix": "site1."}})
    assert resolve_stream(cfg, "alert_events") == ("alert_events", "site1.alert_events")
    assert resolve_stream(cfg, "site1.detection_events")[0] == "detection_events"
    with pytest.raises(ValueError, match="not one of"):
        resolve_stream(cfg, "nope")


def test_last_lines_of_one_camera_and_stream(tmp_path: Path) -> None:
    f = tmp_path / "ev.jsonl"
    f.write_text(
        "".join(_line("line_crossing", c, i) for i in range(5) for c in ("a", "b"))
        + _line("detection", "a", 99)
        + "not json\n"
    )
    out: list[str] = []
    tail_jsonl(f, "analytics_events", "a", 2, False, out.append)
    assert [json.loads(x)["frame_id"] for x in out] == [3, 4]


def test_follow_across_a_rotation(tmp_path: Path) -> None:
    f = tmp_path / "ev.jsonl"
    f.write_text(_line("alert", "a", 0))
    out: list[str] = []
    done = threading.Event()
    t = threading.Thread(
        target=tail_jsonl, args=(f, "alert_events", None, 10, True, out.append, done.is_set)
    )
    t.start()
    try:
        time.sleep(0.3)
        with open(f, "a") as fh:
            fh.write(_line("alert", "a", 1))
            fh.write('{"event_type": "alert", "camera_id": "a", "fra')  # half a line
        time.sleep(0.3)
        with open(f, "a") as fh:
            fh.write('me_id": 2}\n')
        time.sleep(0.3)
        f.rename(tmp_path / "ev.jsonl.1")  # rotated
        f.write_text(_line("alert", "b", 3))
        deadline = time.monotonic() + 5
        while len(out) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        done.set()
        t.join(5)
    assert [json.loads(x)["frame_id"] for x in out] == [0, 1, 2, 3]
