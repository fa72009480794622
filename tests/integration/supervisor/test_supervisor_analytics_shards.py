"""Analytics shards: cameras split across analytics processes; one shard's restart leaves
the other's cameras alone.

Two shards, one inference worker, four cameras (two on the real dusk clip, two test
patterns). New cameras go to the shard with fewest cameras, so each shard gets one clip
and one pattern; /api/state names each camera's shard. SIGKILL of one shard: it
restarts, takes back its cameras' open intervals, and their events resume; the other
shard keeps its process, and its cameras' events go on without a pause and without a
frame analysed twice. Camera changes still reach every shard (added and removed at run
time).
"""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from conftest import Daemon, wait_until

from itsd.control import client

pytestmark = pytest.mark.slow


def _state(d: Daemon) -> dict[str, Any]:
    return d.api_state()


def _frames(d: Daemon) -> dict[str, list[int]]:
    return d.frames()


def _shards(d: Daemon) -> dict[str, str]:
    return {c["camera_id"]: c["analytics"] for c in _state(d)["cameras"]}


def test_cameras_are_split_across_shards_and_survive_the_other_shards_restart(
    start_daemon: Callable[..., Daemon], media_dir: Any
) -> None:
    clip = str(media_dir / "street_overhead_dusk.mp4")
    pattern = "pattern://moving?width=160&height=120&fps=5"
    line = {"id": "l", "start": [0.0, 0.6], "end": [1.0, 0.6]}
    cams = [
        {"id": "d0", "source": clip, "loop": True, "realtime": True, "target_fps": 5.0},
        {"id": "d1", "source": clip, "loop": True, "realtime": True, "target_fps": 5.0},
        {"id": "p2", "source": pattern, "target_fps": 5.0},
        {"id": "p3", "source": pattern, "target_fps": 5.0},
    ]
    for c in cams:
        c["lines"] = [line]
    d = start_daemon(
        cameras=cams,
        extra={
            "performance": {
                "inference_workers": 1,
                "analytics_workers": 2,
                "decode_workers": 1,
                "rebalance": False,
            }
        },
    )
    d.wait_log(r"all stages running", timeout=90)
    wait_until(lambda: len(_frames(d)) == 4, 60, "frames of every camera", d.log_path)
    shards = _shards(d)
    assert shards == {"d0": "analyze:0", "d1": "analyze:1", "p2": "analyze:0", "p3": "analyze:1"}
    # Both shards track: vehicles of the clip get track ids on either shard.
    wait_until(
        lambda: (
            {
                e["camera_id"]
                for e in d.detections()
                if any(x.get("tracking_id") for x in e["data"]["detections"])
            }
            >= {"d0", "d1"}
        ),
        60,
        "tracked vehicles on both clip cameras",
        d.log_path,
    )

    pid0 = d.stage_pid("analyze:0")
    before = {c: max(v) for c, v in _frames(d).items()}
    os.kill(d.stage_pid("analyze:1"), signal.SIGKILL)
    d.wait_log(r"analyze:1 died \(killed by SIGKILL\); restarting in")
    d.wait_log(r"started analyze:1 \(pid", count=2)
    # The restarted shard took back its cameras' open intervals (saved every second).
    d.wait_log(r"analyze:1\[\d+\] itsd\.analyze: camera (d1|p3): open interval restored")
    wait_until(
        lambda: all(max(_frames(d)[c]) > before[c] + 10 for c in before),
        60,
        "frames of every camera after the shard restarted",
        d.log_path,
    )
    assert d.stage_pid("analyze:0") == pid0
    stages = {st["name"]: st for st in d.status_json()["stages"]}
    assert stages["analyze:0"]["restarts"] == 0
    assert stages["analyze:1"]["restarts"] == 1
    # The other shard's cameras: every frame once, in order, no pause around the kill.
    for cam in ("d0", "p2"):
        evs = [e for e in d.detections() if e["camera_id"] == cam]
        ids = [int(e["frame_id"]) for e in evs]
        assert ids == sorted(set(ids)), cam
        # Published while the other shard was down: no pause longer than a busy moment.
        near = [
            datetime.fromisoformat(e["timestamp"]).timestamp()
            for e in evs
            if int(e["frame_id"]) > before[cam] - 10
        ]
        gaps = [b - a for a, b in itertools.pairwise(near)]
        assert max(gaps) < 3.0, (cam, gaps)

    # Changes still reach every shard: a camera added goes to a shard and runs there; one
    # removed from each shard is gone.
    t = f"127.0.0.1:{d.grpc_port}"
    client.register_stream(t, 60, "n4", pattern, 5.0)
    wait_until(lambda: "n4" in _frames(d), 60, "frames of the new camera", d.log_path)
    assert _shards(d)["n4"] in ("analyze:0", "analyze:1")
    assert client.unregister_stream(t, 60, "p2") is True
    assert client.unregister_stream(t, 60, "p3") is True
    assert set(_shards(d)) == {"d0", "d1", "n4"}
    assert d.stop().returncode == 0
