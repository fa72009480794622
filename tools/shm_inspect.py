"""List itsd shared-memory segments: size, owner pid, alive or dead, and ring counters.

    .venv/bin/python tools/shm_inspect.py [--dir DIR] [--json] [--sweep]

For cell tables it prints every metric by name, with its labels, kind, value and help
text (the stages' counters, gauges and state words). For frame rings it shows the
camera key, the slot geometry, the counters (written, dropped, skipped, read, rejected)
and the slot states; for record rings the counters and bytes in use; for control blocks
the global flags and each used stage slot (name, pid, state, heartbeat). ``--sweep``
first removes the segments of dead runs (as the daemon does at start). ``--dir`` (or
ITSD_SHM_DIR) inspects another folder than /dev/shm.

This tool only reads, except with ``--sweep``; it must never write into a segment.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from typing import Any

from itsd.runtime.metrics import read_table
from itsd.shm import ControlBlock, FrameRing, RecordRing, list_segments, sweep_stale
from itsd.shm.cells import CellTable
from itsd.shm.control import STATE_EMPTY, STATE_NAMES
from itsd.shm.frame_ring import SLOT_STATE_NAMES
from itsd.shm.segments import SegmentInfo

KINDS = {
    b"ITSDFRM1": "frame_ring",
    b"ITSDREC1": "record_ring",
    b"ITSDCTL1": "control",
    b"ITSDCEL1": "cells",
}


def _kind(path: str) -> str:
    try:
        with open(path, "rb") as f:
            magic = f.read(8)
    except OSError:
        return "unknown"
    if magic[:4] == b"BRD1":
        return "board"
    return KINDS.get(magic, "unknown")


def describe(info: SegmentInfo) -> dict[str, Any]:
    """What is known about one segment, as plain data."""
    out: dict[str, Any] = {
        "name": info.name,
        "size": info.size,
        "run_id": info.run_id,
        "owner_pid": info.owner_pid,
        "owner_alive": info.owner_alive,
        "type": _kind(info.path),
    }
    try:
        if out["type"] == "frame_ring":
            with FrameRing.attach(info.name, populate=False) as ring:
                out["camera_key"] = ring.camera_key
                out["slots"] = ring.slot_count
                out["max_size"] = f"{ring.max_width}x{ring.max_height}x{ring.channels}"
                out["counters"] = asdict(ring.stats())
                out["slot_states"] = [SLOT_STATE_NAMES[s] for s in ring.slot_states()]
        elif out["type"] == "record_ring":
            with RecordRing.attach(info.name) as rec:
                out["counters"] = asdict(rec.stats())
                out["max_record_size"] = rec.max_record_size
        elif out["type"] == "cells":
            with CellTable.attach(info.name) as table:
                out["capacity"] = table.capacity
                metrics = []
                for sample in read_table(table):
                    metrics.append(
                        {
                            "name": sample.series_name,  # x_bucket etc. of histograms
                            "labels": dict(sample.labels),
                            "kind": str(sample.defn.kind),
                            "value": sample.value,
                            "help": sample.defn.help,
                        }
                    )
                out["metrics"] = metrics
        elif out["type"] == "control":
            with ControlBlock.attach(info.name) as ctl:
                out["flags"] = ctl.flags()
                stages = []
                for i in range(ctl.n_slots):
                    s = ctl.slot(i)
                    if s.state() == STATE_EMPTY and s.heartbeat() == 0:
                        continue
                    stages.append(
                        {
                            "slot": i,
                            "name": s.name(),
                            "pid": s.pid(),
                            "state": STATE_NAMES.get(s.state(), str(s.state())),
                            "heartbeat": s.heartbeat(),
                        }
                    )
                out["stages"] = stages
    except (OSError, ValueError) as exc:  # vanished or half-made meanwhile
        out["error"] = str(exc)
    return out


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def print_table(rows: list[dict[str, Any]]) -> None:
    """Human-readable listing."""
    if not rows:
        print("no itsd segments")
        return
    width = max(len(r["name"]) for r in rows)
    print(f"{'NAME':<{width}}  {'SIZE':>11}  {'OWNER':>8}  {'STATE':<5}  TYPE")
    for r in rows:
        alive = "alive" if r["owner_alive"] else "DEAD"
        owner = r["owner_pid"] if r["owner_pid"] is not None else "?"
        print(f"{r['name']:<{width}}  {_size(r['size']):>11}  {owner:>8}  {alive:<5}  {r['type']}")
        if "error" in r:
            print(f"    error: {r['error']}")
        if r["type"] == "frame_ring" and "counters" in r:
            c = r["counters"]
            print(
                f"    camera {r['camera_key']}, {r['slots']} slots of {r['max_size']}; "
                f"written={c['written']} dropped={c['dropped']} skipped={c['skipped']} "
                f"read={c['read']} rejected={c['rejected']}; slots: {' '.join(r['slot_states'])}"
            )
        elif r["type"] == "record_ring" and "counters" in r:
            c = r["counters"]
            print(
                f"    put={c['put']} got={c['got']} waits={c['waits']} "
                f"used={c['used_bytes']}/{c['capacity_bytes']} bytes"
            )
        elif r["type"] == "cells" and "metrics" in r:
            for mt in r["metrics"]:
                labels = ",".join(f'{k}="{v}"' for k, v in mt["labels"].items())
                name = f"{mt['name']}{{{labels}}}" if labels else mt["name"]
                value = mt["value"]
                shown = f"{value:.6g}" if isinstance(value, float) else str(value)
                print(f"    {name} = {shown}  ({mt['kind']}: {mt['help']})")
        elif r["type"] == "control" and "stages" in r:
            print(f"    flags={r['flags']:#x}")
            for s in r["stages"]:
                print(
                    f"    slot {s['slot']:>3} {s['name']:<24} pid={s['pid']:<8} "
                    f"{s['state']:<9} heartbeat={s['heartbeat']}"
                )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="List itsd shared-memory segments.")
    ap.add_argument("--dir", help="shm folder to inspect (default: $ITSD_SHM_DIR or /dev/shm)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--sweep", action="store_true", help="first remove segments of dead runs")
    args = ap.parse_args(argv)
    if args.dir:
        os.environ["ITSD_SHM_DIR"] = args.dir
    if args.sweep:
        for name in sweep_stale():
            print(f"removed stale segment {name}", file=sys.stderr)
    rows = [describe(info) for info in list_segments()]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
