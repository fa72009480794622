"""Three (then four) real itsd nodes share 12 cameras through a Tansu broker.

One scenario, in order (node start-up is the expensive part):

1. ``itsd fleet apply`` puts 12 synthetic cameras in a 12-partition registry, one per
   partition (ids chosen by their CRC-32 so hashing does not bunch them: with a handful of
   cameras, hashing alone can give 6/3/3); three nodes join and run about 4 each.
2. One node is SIGKILLed: its cameras run on the other two within 20 s, and the events
   show no camera produced by two nodes at overlapping times.
3. A fourth node joins: cameras move to it, and the other nodes keep every camera they
   were not asked to give up (cooperative-sticky: a camera that stays is never restarted).
4. A camera is added and another removed through the topic (gRPC RegisterStream on a
   node, ``itsd streams remove --fleet``): the owning nodes start and stop them.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import zlib
from collections import defaultdict

import pytest
import yaml
from conftest import PATTERN, Fleet, Node, wait_for

from itsd.config import parse_config
from itsd.fleet.registry import RegistryError
from itsd.fleet.status import fleet_status

pytestmark = pytest.mark.slow

N_CAMERAS = 12


def spread_ids(n: int, partitions: int) -> list[str]:
    """``n`` camera ids that land on ``n`` different partitions."""
    ids: dict[int, str] = {}
    k = 0
    while len(ids) < n:
        cid = f"cam-{k}"
        ids.setdefault(zlib.crc32(cid.encode()) % partitions, cid)
        k += 1
    return sorted(ids.values())


def running(fleet: Fleet) -> dict[str, list[str]]:
    """node -> cameras it runs, from the status topic (nodes that are up)."""
    cfg = parse_config(yaml.safe_load(fleet.write_config("cli").read_text()))
    try:
        st = fleet_status(cfg, timeout=15)
    except RegistryError as err:  # a slow read on a busy machine: ask again
        print(f"fleet status: {err}")
        return {}
    return {n["node"]: sorted(n["cameras"]) for n in st["nodes"] if n["state"] == "running"}


def owners(by_node: dict[str, list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for node, cams in by_node.items():
        for c in cams:
            out[c].append(node)
    return out


def settled(fleet: Fleet, nodes: set[str], cameras: set[str]) -> dict[str, list[str]] | None:
    """The assignment once exactly ``nodes`` are up and each camera runs exactly once."""
    by_node = running(fleet)
    if set(by_node) != nodes:
        return None
    own = owners(by_node)
    if set(own) != cameras or any(len(v) != 1 for v in own.values()):
        return None
    return by_node


def intervals(nodes: list[Node]) -> dict[str, list[tuple[str, str, str]]]:
    """camera -> [(first, last, node)] of its detection events on each node (RFC 3339
    UTC timestamps sort as strings)."""
    spans: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for n in nodes:
        for e in n.events():
            if e["event_type"] == "detection":
                assert e.get("node") == n.name, e
                spans[e["camera_id"]][n.name].append(e["timestamp"])
    return {
        cam: sorted((min(ts), max(ts), node) for node, ts in per.items())
        for cam, per in spans.items()
    }


def added_count(node: Node, cam: str) -> int:
    return len(re.findall(rf"camera {re.escape(cam)} added \(fleet\)", node.log()))


def test_three_nodes_share_cameras_survive_a_kill_and_take_in_a_fourth(fleet: Fleet) -> None:
    cams = spread_ids(N_CAMERAS, 12)
    file = fleet.tmp / "cameras.yaml"
    entries = [
        {"id": c, "source": PATTERN, "max_width": 160, "max_height": 120, "target_fps": 1}
        for c in cams
    ]
    file.write_text(yaml.safe_dump({"cameras": entries}))
    out = fleet.cli("fleet", "apply", str(file))
    assert out.returncode == 0, out.stderr
    assert f"{N_CAMERAS} added" in out.stdout

    nodes = [fleet.start(f"n{i}") for i in (1, 2, 3)]
    first = wait_for(
        lambda: settled(fleet, {"n1", "n2", "n3"}, set(cams)), 120, "12 cameras on 3 nodes"
    )
    assert all(3 <= len(v) <= 5 for v in first.values()), first  # about 4 each

    # -- a node dies ---------------------------------------------------------------------
    victim = nodes[0]
    lost = set(first[victim.name])
    time.sleep(3)  # some events from every camera
    victim.kill()
    t_kill = time.monotonic()
    after_kill = wait_for(
        lambda: settled(fleet, {"n2", "n3"}, set(cams)), 40, "the dead node's cameras moved"
    )
    moved_s = time.monotonic() - t_kill
    print(f"cameras of the killed node running elsewhere after {moved_s:.1f} s")
    assert moved_s < 20.0
    for node in ("n2", "n3"):
        assert set(first[node]) <= set(after_kill[node])  # nothing taken from survivors

    # -- a fourth node joins -----------------------------------------------------------
    time.sleep(2)
    n4 = fleet.start("n4")
    after_join = wait_for(
        lambda: (s := settled(fleet, {"n2", "n3", "n4"}, set(cams))) and len(s["n4"]) >= 2 and s,
        90,
        "cameras moved to the fourth node",
    )
    for node in ("n2", "n3"):
        kept = set(after_join[node])
        gave = set(after_kill[node]) - kept
        assert kept <= set(after_kill[node])  # gained nothing
        assert gave <= set(after_join["n4"])  # what it gave went to the new node
        by = {n.name: n for n in nodes}[node]
        for cam in kept:  # never restarted: added once on this node
            assert added_count(by, cam) == 1, (node, cam)

    # -- a camera added and one removed through the topic ------------------------------
    gone = after_join["n2"][0]
    # through a node's gRPC RegisterStream (a fleet node writes it to the registry)
    out = fleet.cli("streams", "add", "cam-new", PATTERN, "--target", nodes[2].grpc_target,
                    "--options", json.dumps({"max_width": 160, "max_height": 120}))  # fmt: skip
    assert out.returncode == 0, out.stderr
    out = fleet.cli("streams", "remove", gone, "--fleet")
    assert out.returncode == 0, out.stderr
    wanted = (set(cams) - {gone}) | {"cam-new"}
    final = wait_for(lambda: settled(fleet, {"n2", "n3", "n4"}, wanted), 30, "add and remove")
    owner = next(n for n in [*nodes[1:], n4] if "cam-new" in final[n.name])
    wait_for(lambda: added_count(owner, "cam-new") == 1, 10, "the owner's log")
    wait_for(lambda: f"camera {gone} removed" in nodes[1].log(), 10, "n2 removed its camera")

    # -- one producer at a time, per camera --------------------------------------------
    time.sleep(2)
    spans = intervals([*nodes, n4])
    for cam in lost:
        assert len(spans[cam]) >= 2, (cam, spans[cam])  # produced before and after the move
    for cam, seq in spans.items():
        for (_, end, a), (start, _, b) in itertools.pairwise(seq):
            assert end < start, f"camera {cam}: {a} until {end}, {b} from {start}"

    status = fleet.cli("fleet", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "every camera of the registry runs" in status.stdout
    assert "n1" in status.stdout  # the killed node, shown as gone
