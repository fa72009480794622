"""Benchmark: frames through a FrameRing vs multiprocessing.Queue vs a plain memcpy.

For each frame size (1920x1080x3 and 640x360x3 by default) and each round, in rotation:

- ring:   a writer process copies each frame into the ring with ``FrameRing.write`` (one
          copy); a reader process takes it with ``acquire_newest``, touches one byte per
          4 KiB page (no copy) and releases it. The writer waits for a free slot before
          each write, so nothing is overwritten and the count is frames delivered.
- queue:  the same frames through a bounded ``multiprocessing.Queue`` (numpy array
          pickled); the reader touches them the same way.
- memcpy: ``np.copyto`` between two preallocated arrays in this process, one core: the
          ceiling for any transport that copies the frame once.

Each measurement lasts ``--seconds``; the table shows medians over ``--rounds`` of frames/s
and GB/s (1 GB = 1e9 bytes) and the ratios ring/queue and ring/memcpy.

    .venv/bin/python bench/ring_bench.py [--seconds N] [--rounds R] [--slots S]

This script must never be imported by itsd; it only measures.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier, Event
from typing import Any

import numpy as np

from itsd.shm import FrameRing, new_run_id, segment_name
from itsd.shm.frame_ring import SLOT_FREE

PAGE = 4096


def _frame(width: int, height: int) -> np.ndarray:
    rng = np.random.default_rng(width * height)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _touch(pixels: np.ndarray) -> int:
    """Read one byte per page: the frame is really fetched, nothing is copied."""
    return int(pixels.reshape(-1)[::PAGE].sum())


# ------------------------------------------------------------------ ring


def ring_writer(
    *,
    shm_dir: str,
    name: str,
    width: int,
    height: int,
    start: Barrier,
    stop: Event,
    out: Queue[Any],
) -> None:
    os.environ["ITSD_SHM_DIR"] = shm_dir
    ring = FrameRing.attach(name)
    frame = _frame(width, height)
    n = 0
    start.wait()
    while not stop.is_set():
        if SLOT_FREE not in ring.slot_states():
            os.sched_yield()
            continue
        ring.write(frame, frame_id=n, capture_ts_ns=0, pts=n)
        n += 1
    out.put(("writer", n))
    ring.close()


def ring_reader(
    *, shm_dir: str, name: str, seconds: float, start: Barrier, stop: Event, out: Queue[Any]
) -> None:
    os.environ["ITSD_SHM_DIR"] = shm_dir
    ring = FrameRing.attach(name)
    n = 0
    start.wait()
    t0 = time.perf_counter()
    end = t0 + seconds
    while (now := time.perf_counter()) < end:
        slot = ring.acquire_newest()
        if slot is None:
            os.sched_yield()
            continue
        try:
            _touch(slot.pixels)
        finally:
            slot.release()
        n += 1
    stop.set()
    out.put(("reader", n, now - t0))
    ring.close()


def run_ring(width: int, height: int, seconds: float, slots: int) -> tuple[float, int]:
    """Frames/s delivered through a FrameRing, and frames the ring dropped or skipped."""
    ctx = mp.get_context("spawn")
    ring = FrameRing.create(
        segment_name(new_run_id(), "frame", "bench"),
        camera_key=0,
        slot_count=slots,
        max_width=width,
        max_height=height,
    )
    start, stop, out = ctx.Barrier(3), ctx.Event(), ctx.Queue()
    common = {
        "shm_dir": os.environ["ITSD_SHM_DIR"],
        "name": ring.name,
        "start": start,
        "stop": stop,
        "out": out,
    }
    procs = [
        ctx.Process(target=ring_writer, kwargs={**common, "width": width, "height": height}),
        ctx.Process(target=ring_reader, kwargs={**common, "seconds": seconds}),
    ]
    try:
        for p in procs:
            p.start()
        start.wait()
        results = {item[0]: item for item in (out.get(timeout=seconds + 60) for _ in range(2))}
        for p in procs:
            p.join(timeout=30)
        _, frames, elapsed = results["reader"]
        stats = ring.stats()
        return frames / elapsed, stats.dropped + stats.skipped
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        ring.close()
        ring.unlink()


# ------------------------------------------------------------------ queue


def queue_writer(
    *, q: Queue[Any], width: int, height: int, start: Barrier, stop: Event, out: Queue[Any]
) -> None:
    frame = _frame(width, height)
    n = 0
    start.wait()
    while not stop.is_set():
        try:
            q.put(frame, timeout=0.1)
        except Exception:  # queue.Full: check the stop flag again
            continue
        n += 1
    q.cancel_join_thread()
    out.put(("writer", n))


def queue_reader(
    *, q: Queue[Any], seconds: float, start: Barrier, stop: Event, out: Queue[Any]
) -> None:
    n = 0
    start.wait()
    t0 = time.perf_counter()
    end = t0 + seconds
    while (now := time.perf_counter()) < end:
        try:
            pixels = q.get(timeout=0.1)
        except Exception:  # queue.Empty
            continue
        _touch(pixels)
        n += 1
    stop.set()
    out.put(("reader", n, now - t0))
    while True:  # drain so the writer's feeder thread can finish
        try:
            q.get(timeout=0.5)
        except Exception:
            break


def run_queue(width: int, height: int, seconds: float, slots: int) -> float:
    """Frames/s delivered through a bounded multiprocessing.Queue."""
    ctx = mp.get_context("spawn")
    q: Queue[Any] = ctx.Queue(maxsize=slots)
    start, stop, out = ctx.Barrier(3), ctx.Event(), ctx.Queue()
    common = {"q": q, "start": start, "stop": stop, "out": out}
    procs = [
        ctx.Process(target=queue_writer, kwargs={**common, "width": width, "height": height}),
        ctx.Process(target=queue_reader, kwargs={**common, "seconds": seconds}),
    ]
    try:
        for p in procs:
            p.start()
        start.wait()
        results = {item[0]: item for item in (out.get(timeout=seconds + 60) for _ in range(2))}
        for p in procs:
            p.join(timeout=30)
        _, frames, elapsed = results["reader"]
        return float(frames / elapsed)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()


# ------------------------------------------------------------------ memcpy


def run_memcpy(width: int, height: int, seconds: float) -> float:
    """Frames/s of np.copyto between two preallocated arrays (one core)."""
    src = _frame(width, height)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in first
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while (now := time.perf_counter()) < end:
        np.copyto(dst, src)
        n += 1
    return n / (now - t0)


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=2.0, help="length of one measurement")
    ap.add_argument("--rounds", type=int, default=3, help="rounds (medians are reported)")
    ap.add_argument("--slots", type=int, default=4, help="ring slots / queue size")
    ap.add_argument(
        "--sizes", default="1920x1080,640x360", help="comma-separated WxH frame sizes (3 channels)"
    )
    args = ap.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]

    own_dir = "ITSD_SHM_DIR" not in os.environ
    if own_dir:  # keep the bench's segments out of the shared namespace
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        os.environ["ITSD_SHM_DIR"] = tempfile.mkdtemp(prefix="ring-bench-", dir=base)

    print(
        f"ring_bench: python {platform.python_version()}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}; {args.rounds} rounds x {args.seconds} s",
        flush=True,
    )
    methods = ["ring", "queue", "memcpy"]
    fps: dict[tuple[int, int, str], list[float]] = {}
    drops: dict[tuple[int, int], int] = {}
    try:
        for rnd in range(args.rounds):
            order = methods[rnd % 3 :] + methods[: rnd % 3]  # rotate the order each round
            for w, h in sizes:
                for m in order:
                    if m == "ring":
                        v, d = run_ring(w, h, args.seconds, args.slots)
                        drops[(w, h)] = drops.get((w, h), 0) + d
                    elif m == "queue":
                        v = run_queue(w, h, args.seconds, args.slots)
                    else:
                        v = run_memcpy(w, h, args.seconds)
                    fps.setdefault((w, h, m), []).append(v)
                    print(f"  round {rnd + 1} {w}x{h} {m:<6} {v:9.1f} frames/s", flush=True)
    finally:
        if own_dir:
            folder = os.environ["ITSD_SHM_DIR"]
            for leftover in os.listdir(folder):
                os.unlink(os.path.join(folder, leftover))
            os.rmdir(folder)

    print()
    head = (
        f"{'frame':<12}{'method':<8}{'frames/s':>10}{'GB/s':>8}"
        f"{'ring/queue':>12}{'ring/memcpy':>13}"
    )
    print(head)
    print("-" * len(head))
    for w, h in sizes:
        nbytes = w * h * 3
        med = {m: statistics.median(fps[(w, h, m)]) for m in methods}
        for m in methods:
            ratio_q = f"{med['ring'] / med['queue']:.1f}x" if m == "ring" else ""
            ratio_m = f"{med['ring'] / med['memcpy']:.2f}x" if m == "ring" else ""
            print(
                f"{f'{w}x{h}x3':<12}{m:<8}{med[m]:>10.1f}{med[m] * nbytes / 1e9:>8.2f}"
                f"{ratio_q:>12}{ratio_m:>13}"
            )
        print(f"{'':<12}(ring frames dropped or skipped, all rounds: {drops.get((w, h), 0)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
