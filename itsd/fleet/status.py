"""``itsd fleet status``: the nodes, their cameras, load and lag, and the cameras nobody runs.

Every node writes a status record to ``fleet.status_topic`` (compacted, key = node id;
see ``itsd.fleet.member``) every ``fleet.status_interval_s`` and soon after a change. A
node is *up* when its last record says ``running`` and is younger than three intervals;
a node that was killed stops writing, so it shows as ``gone`` after that (its cameras
are taken over by the group once its session times out). A camera of the registry that
no up node runs is listed with the reason a node gave (waiting beyond its capacity,
refused by the daemon) or "no node runs it" (partition not assigned yet, its node gone).

This module must never import a stage, an engine, analytics, ``control`` or ``monitor``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from itsd.config import Config
from itsd.fleet.registry import Registry, read_all, read_registry

#: A node whose last record is older than this many intervals is gone.
STALE_INTERVALS = 3.0


def read_nodes(config: Config, timeout: float = 20.0) -> dict[str, dict[str, Any]]:
    """The last status record of every node (tombstones and bad records left out)."""
    _, records = read_all(config, config.fleet.status_topic, timeout)
    nodes: dict[str, dict[str, Any]] = {}
    for key, value, _ in records:
        if not key:
            continue
        node = key.decode(errors="replace")
        if value is None:
            nodes.pop(node, None)
            continue
        try:
            rec = json.loads(value)
        except ValueError:
            continue
        if isinstance(rec, dict):
            nodes[node] = rec
    return nodes


def summarize(
    registry: Registry, nodes: dict[str, dict[str, Any]], now: float | None = None
) -> dict[str, Any]:
    """The fleet's state from the registry and the nodes' records (pure; see the module
    docstring)."""
    now = time.time() if now is None else now
    out_nodes = []
    runs: dict[str, list[str]] = {}
    why: dict[str, str] = {}
    for name in sorted(nodes):
        rec = nodes[name]
        age = now - float(rec.get("time", 0.0))
        interval = float(rec.get("interval_s", 5.0))
        state = str(rec.get("state", "?"))
        if state == "running" and age > STALE_INTERVALS * interval:
            state = "gone"
        up = state == "running"
        cams = list(rec.get("cameras", []))
        starting = list(rec.get("starting", []))
        if up:
            for cid in cams + starting:
                runs.setdefault(cid, []).append(name)
            for cid in rec.get("waiting", []):
                why.setdefault(cid, f"waiting on {name} (capacity {rec.get('capacity')})")
            for cid, reason in dict(rec.get("failed", {})).items():
                why.setdefault(cid, f"refused by {name}: {reason}")
        out_nodes.append(
            {
                "node": name,
                "state": state,
                "age_s": round(age, 1),
                "capacity": rec.get("capacity"),
                "cameras": cams if up else [],
                "starting": starting if up else [],
                "waiting": list(rec.get("waiting", [])) if up else [],
                "partitions": list(rec.get("partitions", [])) if up else [],
                "load": rec.get("load", {}),
                "lag": rec.get("lag"),
            }
        )
    not_running = [
        {
            "camera": cid,
            "partition": part,
            "reason": why.get(cid, "no node runs it (partition not assigned, or its node gone)"),
        }
        for cid, (part, _) in sorted(registry.cameras.items())
        if cid not in runs
    ]
    unknown = sorted(cid for cid in runs if cid not in registry.cameras)
    return {
        "registry": {"cameras": len(registry.cameras), "partitions": registry.partitions},
        "nodes": out_nodes,
        "not_running": not_running,
        "run_twice": {cid: ns for cid, ns in sorted(runs.items()) if len(ns) > 1},
        "not_in_registry": unknown,
        "problems": list(registry.problems),
    }


def fleet_status(config: Config, timeout: float = 20.0) -> dict[str, Any]:
    """Read the registry and the status topic and summarize them."""
    return summarize(read_registry(config, timeout), read_nodes(config, timeout))


def format_status(st: dict[str, Any]) -> str:
    """The summary as tables for people."""
    reg = st["registry"]
    lines = [
        f"registry: {reg['cameras']} camera(s) in {reg['partitions']} partition(s); "
        f"{sum(1 for n in st['nodes'] if n['state'] == 'running')} node(s) up",
        "",
        f"{'NODE':<20} {'STATE':<8} {'SEEN':>6} {'CAMS':>5} {'CAP':>5} {'FPS':>7} "
        f"{'PARTS':>5} {'LAG':>5}",
    ]
    for n in st["nodes"]:
        load = n.get("load") or {}
        lag = "-" if n.get("lag") is None else str(n["lag"])
        lines.append(
            f"{n['node']:<20} {n['state']:<8} {n['age_s']:>5.0f}s {len(n['cameras']):>5} "
            f"{n['capacity'] if n['capacity'] is not None else '-':>5} "
            f"{float(load.get('fps', 0.0)):>7.1f} {len(n['partitions']):>5} {lag:>5}"
        )
    for n in st["nodes"]:
        if n["cameras"] or n["starting"] or n["waiting"]:
            lines.append("")
            lines.append(f"{n['node']}: {', '.join(n['cameras']) or '-'}")
            if n["starting"]:
                lines.append(f"  starting: {', '.join(n['starting'])}")
            if n["waiting"]:
                lines.append(f"  waiting (over capacity): {', '.join(n['waiting'])}")
    lines.append("")
    if st["not_running"]:
        lines.append(f"not running ({len(st['not_running'])}):")
        for c in st["not_running"]:
            lines.append(f"  {c['camera']} (partition {c['partition']}): {c['reason']}")
    else:
        lines.append("every camera of the registry runs")
    for cid, ns in st["run_twice"].items():
        lines.append(f"camera {cid} listed by {', '.join(ns)} (a move in progress)")
    for p in st["problems"]:
        lines.append(f"bad registry record: {p}")
    return "\n".join(lines)
