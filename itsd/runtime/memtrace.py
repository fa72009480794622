"""Allocation tracing for a stage process, switched on by ``ITSD_TRACEMALLOC=<dir>``.

A memory hunt tool, off unless the environment asks for it. With the variable set, the
stage harness calls ``start(stage_name)`` and, in the stages named by
``ITSD_TRACEMALLOC_STAGES`` (name prefixes, comma-separated; all when unset),
``tracemalloc`` starts tracing (``ITSD_TRACEMALLOC_FRAMES`` frames deep, default 8)
and a daemon thread takes a snapshot every ``ITSD_TRACEMALLOC_PERIOD`` seconds
(default 30). The first snapshot after ``ITSD_TRACEMALLOC_WARMUP`` seconds (default
60) is the baseline; each later one is compared with it and the largest growths, by
line and by traceback, are appended to ``<dir>/<stage>-<pid>.txt`` with the traced
total and the process's RSS. Growth that
keeps rising from one report to the next is what a leak looks like; growth that stops
is a cache or a high-water mark.

Tracing costs CPU (several times the allocation cost) and memory (the traces): use it
to find a leak, not in production.

This module must never import a stage, the supervisor, ``control`` or ``monitor``, and
never fail the stage it runs in: errors end the tracing, not the process.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import tracemalloc
from pathlib import Path

log = logging.getLogger("itsd.memtrace")

ENV_DIR = "ITSD_TRACEMALLOC"
#: Comma-separated stage name prefixes to trace (``analyze,publish``); empty: every stage.
ENV_STAGES = "ITSD_TRACEMALLOC_STAGES"
TOP = 25


def _rss_kib() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def report(
    base: tracemalloc.Snapshot, snap: tracemalloc.Snapshot, elapsed_s: float, top: int = TOP
) -> str:
    """A text report of what grew from ``base`` to ``snap``: by line, then by traceback."""
    filters = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
        tracemalloc.Filter(False, "<unknown>"),
    ]
    base, snap = base.filter_traces(filters), snap.filter_traces(filters)
    traced = sum(s.size for s in snap.statistics("filename"))
    lines = [
        f"== t={elapsed_s:.0f} s  traced {traced / 1024:.0f} KiB  rss {_rss_kib()} KiB",
        "-- by line (size diff, count diff, where)",
    ]
    for st in snap.compare_to(base, "lineno")[:top]:
        if st.size_diff <= 0:
            continue
        fr = st.traceback[0]
        where = f"{fr.filename}:{fr.lineno}"
        lines.append(f"{st.size_diff / 1024:+10.1f} KiB {st.count_diff:+8d}  {where}")
    lines.append("-- by traceback (largest 5)")
    for st in snap.compare_to(base, "traceback")[:5]:
        if st.size_diff <= 0:
            continue
        lines.append(f"{st.size_diff / 1024:+10.1f} KiB {st.count_diff:+8d}")
        lines.extend(f"      {fr.filename}:{fr.lineno}" for fr in st.traceback)
    return "\n".join(lines) + "\n"


def start(stage: str) -> bool:
    """Start tracing this process if ``ITSD_TRACEMALLOC`` names a folder; True if started."""
    out_dir = os.environ.get(ENV_DIR, "")
    if not out_dir:
        return False
    only = [p.strip() for p in os.environ.get(ENV_STAGES, "").split(",") if p.strip()]
    if only and not any(stage.startswith(p) for p in only):
        return False
    try:
        directory = Path(out_dir)
        directory.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", stage)
        path = directory / f"{safe}-{os.getpid()}.txt"
        tracemalloc.start(int(_env_float("ITSD_TRACEMALLOC_FRAMES", 8)))
    except (OSError, ValueError) as err:
        log.warning("allocation tracing not started: %s", err)
        return False
    period = max(1.0, _env_float("ITSD_TRACEMALLOC_PERIOD", 30.0))
    warmup = max(0.0, _env_float("ITSD_TRACEMALLOC_WARMUP", 60.0))
    t0 = time.monotonic()

    def loop() -> None:
        try:
            time.sleep(warmup)
            base = tracemalloc.take_snapshot()
            with path.open("a") as fh:
                fh.write(f"baseline at t={time.monotonic() - t0:.0f} s, rss {_rss_kib()} KiB\n")
            while True:
                time.sleep(period)
                text = report(base, tracemalloc.take_snapshot(), time.monotonic() - t0)
                with path.open("a") as fh:
                    fh.write(text)
        except Exception as err:  # a diagnostic must never end the stage
            log.warning("allocation tracing stopped: %s", err)

    threading.Thread(target=loop, name="memtrace", daemon=True).start()
    log.info("tracing allocations into %s every %.0f s", path, period)
    return True
