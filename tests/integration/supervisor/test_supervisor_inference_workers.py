"""Several inference workers: cameras spread over them, a worker restart, changes routed.

Two workers on four cameras: each camera is read by one worker (the placement shows in
/api/state and holds across restarts); killing one worker restarts it while the other
worker's cameras go on untouched; adding and removing cameras on either worker works.
"""

from __future__ import annotations

import os
import signal
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Daemon, wait_until

from itsd.control import client

pytestmark = pytest.mark.slow


def _state(d: Daemon) -> dict[str, Any]:
    return d.api_state()


def _frames(d: Daemon) -> dict[str, list[int]]:
    return d.frames()


def test_two_workers_share_the_cameras(start_daemon: Callable[..., Daemon]) -> None:
    src = "pattern://moving?width=160&height=120&fps=5"
    cams = [{"id": f"c{i}", "source": src, "target_fps": 5.0} for i in range(4)]
    d = start_daemon(
        cameras=cams,
        max_restarts=1,
        # Placement by hash alone here: no moves for saturation.
        extra={"performance": {"inference_workers": 2, "rebalance": False}},
    )
    d.wait_log(r"2 inference worker\(s\)", timeout=30)
    d.wait_log(r"all stages running", timeout=90)
    wait_until(lambda: len(_frames(d)) == 4, 60, "frames of every camera", d.log_path)

    # Placement: the inference stages' health lists their cameras; /metrics labels them.
    by_worker: dict[int, list[str]] = {}
    for st in d.status_json()["stages"]:
        if st["name"].startswith("infer:"):
            w = int(st["name"].split(":")[1])
            listed = st["detail"].split(":", 1)[1].split(";")[0]
            by_worker[w] = [c.strip() for c in listed.split(",") if c.strip()]
    assert sorted(by_worker[0] + by_worker[1]) == ["c0", "c1", "c2", "c3"], by_worker
    with urllib.request.urlopen(f"http://127.0.0.1:{d.http_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    for w, cams_w in by_worker.items():
        for cam in cams_w:
            assert (
                f'itsd_camera_info{{camera="{cam}",origin="file",worker="infer:{w}"}} 1.0' in text
            )

    # Kill worker 1: it restarts; worker 0's cameras go on without a gap.
    before = {c: max(v) for c, v in _frames(d).items()}
    os.kill(d.stage_pid("infer:1"), signal.SIGKILL)
    d.wait_log(r"infer:1 died \(killed by SIGKILL\); restarting in")
    d.wait_log(r"started infer:1 \(pid", count=2)
    wait_until(
        lambda: all(max(_frames(d)[c]) > before[c] + 5 for c in before),
        60,
        "frames of every camera after the restart",
        d.log_path,
    )
    for cam in by_worker[0]:
        ids = _frames(d)[cam]
        assert ids == sorted(set(ids))
    t = f"127.0.0.1:{d.grpc_port}"
    # Changes reach the right worker: add two cameras, remove one of each worker.
    client.register_stream(t, 60, "n0", src, 5.0)
    client.register_stream(t, 60, "n1", src, 5.0)
    for w in (0, 1):
        if by_worker[w]:
            assert client.unregister_stream(t, 60, by_worker[w][0]) is True
    wait_until(lambda: {"n0", "n1"} <= set(_frames(d)), 60, "frames of the new cameras", d.log_path)
    assert all(
        st["restarts"] == (1 if st["name"] == "infer:1" else 0) for st in d.status_json()["stages"]
    )

    # Worker 1 dies again, past its restart cap: its cameras move to worker 0.
    live = {st["camera_id"] for st in _state(d)["cameras"]}
    before = {c: max(v) for c, v in _frames(d).items() if c in live}
    os.kill(d.stage_pid("infer:1"), signal.SIGKILL)
    d.wait_log(r"infer:1 died .* giving up on it; its cameras move to infer:0", timeout=30)
    wait_until(
        lambda: all(max(_frames(d)[c]) > before[c] + 5 for c in before),
        60,
        "frames of every camera on the one worker left",
        d.log_path,
    )
    # The state is refreshed each tick: the moved cameras may stream before it shows.
    wait_until(
        lambda: _state(d)["health"]["status"] == "degraded", 10, "health degraded", d.log_path
    )
    health = _state(d)["health"]
    assert any("infer:1" in r for r in health["reasons"]), health["reasons"]
    assert d.stop().returncode == 0


def test_a_saturated_worker_hands_a_camera_to_an_idle_one(
    start_daemon: Callable[..., Daemon],
) -> None:
    # Eight busy cameras, four on each worker; the four of infer:1 are removed, so
    # infer:0 is left with four it cannot keep up with and infer:1 with none.
    src = "pattern://moving?width=160&height=120&fps=30"
    cams = [{"id": f"hot{i}", "source": src, "target_fps": 30.0} for i in range(8)]
    d = start_daemon(cameras=cams, extra={"performance": {"inference_workers": 2}})
    d.wait_log(r"all stages running", timeout=90)
    placed = {c["camera_id"]: c["worker"] for c in _state(d)["cameras"]}
    assert sorted(placed.values()) == ["infer:0"] * 4 + ["infer:1"] * 4, placed
    t = f"127.0.0.1:{d.grpc_port}"
    for cid, w in placed.items():
        if w == "infer:1":
            assert client.unregister_stream(t, 60, cid) is True
    line = d.wait_log(
        r"camera (hot\d+) moved from infer:0 \(saturated: \d+% of its frames "
        r"dropped\) to infer:1",
        timeout=120,
    )
    print(line)
    moved = [c for c in _state(d)["cameras"] if c["worker"] == "infer:1"]
    assert moved, "a camera must now be read by infer:1"
    cid = moved[0]["camera_id"]
    # The moved camera goes on from the new worker, frame ids still increasing.
    n0 = len(_frames(d).get(cid, []))
    wait_until(lambda: len(_frames(d).get(cid, [])) > n0 + 10, 120, "frames after the move")
    ids_seen = _frames(d)[cid]
    assert ids_seen == sorted(set(ids_seen))
    stages = {s["name"]: s for s in d.status_json()["stages"]}
    assert stages["infer:0"]["restarts"] == 0 and stages["infer:1"]["restarts"] == 0
    assert d.stop().returncode == 0
