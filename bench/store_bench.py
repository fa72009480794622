"""Benchmark: the aggregates store on SQLite and PostgreSQL (a private server).

Two measures, each in rounds, the databases in rotation, medians reported:

- write: the store sink's path without the ring: ``StoreWriter.write`` of batches of
  ``--batch`` intervals (one transaction each; 2 lines x 2 directions x 3 classes of
  counts, a speed histogram and 2 zones per interval, as a calibrated camera sends),
  for ``--cameras`` cameras; intervals committed per second. At one interval a minute per
  camera, a store that commits N intervals/s keeps up with 60 N cameras.
- read: what GetAggregatedMetrics does for one camera: ``StoreReader.buckets`` of one
  day of 1-minute intervals into 15-minute buckets (line counts summed by the database);
  milliseconds per answer.

    .venv/bin/python bench/store_bench.py [--rounds R] [--cameras C] [--batch B]

This script must never be imported by itsd; it only measures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from pg_server import PostgresServer, pg_bin  # noqa: E402

from itsd.store.db import make_engine, migrate  # noqa: E402
from itsd.store.model import IntervalRow, ZoneRow  # noqa: E402
from itsd.store.reader import StoreReader  # noqa: E402
from itsd.store.writer import StoreWriter  # noqa: E402

T0 = 1_794_960_000_000  # ms, midnight UTC
MIN = 60_000


def interval(camera: str, i: int) -> IntervalRow:
    counts = {
        (line, d, cls): 1 + (i + len(cls)) % 7
        for line in ("north", "south")
        for d in ("in", "out")
        for cls in ("car", "truck", "bus")
    }
    return IntervalRow(
        camera_id=camera,
        start_ms=T0 + i * MIN,
        end_ms=T0 + (i + 1) * MIN,
        seconds=60.0,
        frames=600,
        vehicles_in_view=4,
        counts=counts,
        speed_samples=24,
        speed_mean_kmh=47.5,
        speed_p85_kmh=58.0,
        speed_bin_kmh=5.0,
        speed_histogram=(0, 0, 0, 0, 0, 0, 1, 3, 6, 7, 4, 2, 1),
        zones=(ZoneRow("lane1", 1.2, 0.6, 8.5, 14.0), ZoneRow("lane2", 0.4, 0.2, 6.0, None)),
        longest_queue_m=14.0,
    )


def write_round(url: str, cameras: int, batch: int, minutes: int) -> float:
    engine = make_engine(url)
    migrate(engine)
    w = StoreWriter(engine)
    rows = [interval(f"cam{c:03d}", i) for i in range(minutes) for c in range(cameras)]
    t = time.perf_counter()
    for k in range(0, len(rows), batch):
        w.write(rows[k : k + batch])
    dt = time.perf_counter() - t
    engine.dispose()
    return len(rows) / dt


def read_round(url: str) -> float:
    engine = make_engine(url)
    reader = StoreReader(engine)
    t = time.perf_counter()
    buckets = reader.buckets("cam000", T0, T0 + 1440 * MIN, 15 * MIN)
    dt = time.perf_counter() - t
    assert len(buckets) == 96 and sum(b.intervals for b in buckets) == 1440
    engine.dispose()
    return dt * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cameras", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="itsd-store-bench-"))
    pg = PostgresServer() if pg_bin() else None
    if pg is not None:
        pg.start()
    try:
        dbs: dict[str, list[str]] = {"sqlite": [], "postgresql": []}
        writes: dict[str, list[float]] = {k: [] for k in dbs}
        reads: dict[str, list[float]] = {k: [] for k in dbs}
        for r in range(args.rounds):
            for name in dbs:
                if name == "postgresql" and pg is None:
                    continue
                url = (
                    f"sqlite:///{tmp / f'w{r}.sqlite3'}"
                    if name == "sqlite"
                    else pg.create_database(f"w{r}")  # type: ignore[union-attr]
                )
                # Enough minutes that one camera has a whole day for the read.
                writes[name].append(write_round(url, args.cameras, args.batch, 1440))
                reads[name].append(read_round(url))
        print(
            f"{args.cameras} cameras x 1440 intervals, batches of {args.batch}, "
            f"{args.rounds} rounds"
        )
        print("database     write intervals/s (median)   read 1 day -> 96 buckets, ms (median)")
        for name in dbs:
            if writes[name]:
                print(
                    f"{name:<12} {statistics.median(writes[name]):>26,.0f}   "
                    f"{statistics.median(reads[name]):>10.1f}"
                )
    finally:
        if pg is not None:
            pg.close()


if __name__ == "__main__":
    main()
