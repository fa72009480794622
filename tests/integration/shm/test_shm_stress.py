"""Multi-process stress test of the shm rings, plus crash recovery with SIGKILL.

Processes (spawn context, like production):

- two camera writers, each into its own FrameRing: frames of random sizes, random
  write paths (``write``, ``begin_write``/``commit`` filled in two halves, aborted
  writes) and random sleeps;
- one reader of both rings (random sleeps, sometimes holding a slot while it reads the
  other ring) that checks every frame and forwards one record per frame, of random size,
  through a small RecordRing (wraps and back-pressure all the time);
- one consumer of the records, with random sleeps.

Every random choice about a frame or a record is derived from (seed, camera, frame id) or
(seed, record index), so the reader and the consumer can recompute what must have been
written and check it byte for byte. The seed comes from ITSD_STRESS_SEED or the clock
and is printed: replay a failure with ``ITSD_STRESS_SEED=<seed> pytest ...``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import random
import shutil
import signal
import struct
import tempfile
import time
import traceback
from collections.abc import Iterator
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import numpy as np
import pytest

from itsd.shm import (
    STATE_RUNNING,
    STATE_STOPPED,
    ControlBlock,
    FrameRing,
    RecordRing,
    new_run_id,
    segment_name,
)
from itsd.shm.frame_ring import SLOT_FREE, SLOT_READING, SLOT_WRITING

MAX_W, MAX_H = 96, 64
RUN_SECONDS = float(os.environ.get("ITSD_STRESS_SECONDS", "3"))
REC_CAPACITY = 2048
REC_MAX_FILLER = 700
BASE = (np.arange(MAX_W * MAX_H * 3, dtype=np.uint32) * 7 % 251).astype(np.uint8)
END = 0xFFFF_FFFF
_REC_HEAD = struct.Struct("<IIqQ")  # record index, camera, frame id, seq

SLOT_WRITER0, SLOT_WRITER1, SLOT_READER, SLOT_CONSUMER = range(4)


@pytest.fixture
def shm_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private shm folder (on tmpfs when /dev/shm exists), inherited by the children."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    path = tempfile.mkdtemp(prefix="pytest-itsd-shm-", dir=base)
    monkeypatch.setenv("ITSD_SHM_DIR", path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def plan(seed: int, cam: int, fid: int) -> tuple[int, int, str]:
    """Width, height and write path of frame ``fid`` of camera ``cam``."""
    rng = random.Random(f"{seed}:{cam}:{fid}")
    w, h = rng.randint(1, MAX_W), rng.randint(1, MAX_H)
    r = rng.random()
    mode = "write" if r < 0.7 else ("zero_copy" if r < 0.93 else "abort")
    return w, h, mode


def pattern(cam: int, fid: int, w: int, h: int) -> np.ndarray:
    """The pixels of a frame: every byte depends on (camera, frame id) and its position."""
    k = np.uint8((cam * 97 + fid * 13) % 256)
    return (BASE[: w * h * 3] + k).reshape(h, w, 3)


def filler(seed: int, index: int) -> bytes:
    """The random-size body of record ``index``."""
    rng = random.Random(f"{seed}:rec:{index}")
    return rng.randbytes(rng.randint(0, REC_MAX_FILLER))


def _report_errors(results: Queue[Any], role: str) -> None:
    results.put(("error", role, traceback.format_exc()))


def writer_main(
    *,
    shm_dir: str,
    ring_name: str,
    ctl_name: str,
    slot: int,
    cam: int,
    seed: int,
    results: Queue[Any],
) -> None:
    os.environ["ITSD_SHM_DIR"] = shm_dir
    try:
        ring = FrameRing.attach(ring_name)
        ctl = ControlBlock.attach(ctl_name)
        me = ctl.slot(slot)
        me.set_state(STATE_RUNNING)
        jitter = random.Random(f"{seed}:jitter:{cam}")
        deadline = time.monotonic() + RUN_SECONDS
        fid = 0
        ok = 0
        while time.monotonic() < deadline:
            fid += 1
            w, h, mode = plan(seed, cam, fid)
            ts, pts = fid * 1000 + cam, fid * 3 - 7
            if mode == "write":
                if ring.write(pattern(cam, fid, w, h), frame_id=fid, capture_ts_ns=ts, pts=pts):
                    ok += 1
            else:
                ws = ring.begin_write(w, h)
                if ws is not None:
                    half = h // 2
                    ws.pixels[:half] = pattern(cam, fid, w, h)[:half]
                    if jitter.random() < 0.2:
                        time.sleep(jitter.random() * 0.0005)
                    ws.pixels[half:] = pattern(cam, fid, w, h)[half:]
                    if mode == "abort":
                        ws.abort()
                    else:
                        ws.commit(frame_id=fid, capture_ts_ns=ts, pts=pts)
                        ok += 1
            me.beat()  # progress, as a stage beats
            if jitter.random() < 0.3:
                time.sleep(jitter.random() * 0.002)
        me.set_state(STATE_STOPPED)
        results.put(("writer", cam, ok, fid))
        ring.close()
        ctl.close()
    except BaseException:
        _report_errors(results, f"writer {cam}")
        raise


def reader_main(
    *,
    shm_dir: str,
    ring_names: list[str],
    rec_name: str,
    ctl_name: str,
    seed: int,
    results: Queue[Any],
) -> None:
    os.environ["ITSD_SHM_DIR"] = shm_dir
    try:
        rings = [FrameRing.attach(n) for n in ring_names]
        rec = RecordRing.attach(rec_name)
        ctl = ControlBlock.attach(ctl_name)
        me = ctl.slot(SLOT_READER)
        me.set_state(STATE_RUNNING)
        jitter = random.Random(f"{seed}:jitter:reader")
        last_seq = [0, 0]
        last_fid = [0, 0]
        counts = [0, 0]
        sent = 0
        held = None
        while True:
            writers_done = all(
                ctl.slot(s).state() == STATE_STOPPED for s in (SLOT_WRITER0, SLOT_WRITER1)
            )
            got_any = False
            for cam, ring in enumerate(rings):
                slot = ring.acquire_newest()
                if slot is None:
                    continue
                got_any = True
                try:
                    fid = slot.frame_id
                    where = f"camera {cam} frame {fid} seq {slot.seq} (seed {seed})"
                    w, h, mode = plan(seed, cam, fid)
                    assert slot.camera_key == cam, where
                    assert slot.seq > last_seq[cam], f"{where}: seq after {last_seq[cam]}"
                    assert fid > last_fid[cam], f"{where}: frame id after {last_fid[cam]}"
                    assert mode != "abort", f"{where}: an aborted frame was published"
                    assert (slot.width, slot.height) == (w, h), f"{where}: size"
                    assert slot.capture_ts_ns == fid * 1000 + cam, f"{where}: timestamp"
                    assert slot.pts == fid * 3 - 7, f"{where}: pts"
                    assert slot.nbytes == w * h * 3, f"{where}: nbytes"
                    if jitter.random() < 0.1:
                        time.sleep(jitter.random() * 0.002)  # hold the slot a while
                    if not np.array_equal(slot.pixels, pattern(cam, fid, w, h)):
                        raise AssertionError(f"{where}: pixels differ from what was written")
                    last_seq[cam], last_fid[cam] = slot.seq, fid
                    counts[cam] += 1
                finally:
                    if held is None and jitter.random() < 0.2:
                        held = slot  # keep it while the other ring is read
                    else:
                        slot.release()
                        if held is not None:
                            held.release()
                            held = None
                body = _REC_HEAD.pack(sent, cam, fid, slot.seq) + filler(seed, sent)
                assert rec.put(body, timeout=30), "record ring stayed full for 30 s"
                sent += 1
            if held is not None and jitter.random() < 0.5:
                held.release()
                held = None
            me.beat()
            if not got_any:
                if writers_done and all(r.pending() == 0 for r in rings):
                    break
                time.sleep(jitter.random() * 0.001)
            elif jitter.random() < 0.2:
                time.sleep(jitter.random() * 0.002)
        if held is not None:
            held.release()
        assert rec.put(_REC_HEAD.pack(END, 0, sent, 0), timeout=30)
        me.set_state(STATE_STOPPED)
        results.put(("reader", counts, sent))
        for ring in rings:
            ring.close()
        rec.close()
        ctl.close()
    except BaseException:
        _report_errors(results, "reader")
        raise


def consumer_main(
    *, shm_dir: str, rec_name: str, ctl_name: str, seed: int, results: Queue[Any]
) -> None:
    os.environ["ITSD_SHM_DIR"] = shm_dir
    try:
        rec = RecordRing.attach(rec_name)
        ctl = ControlBlock.attach(ctl_name)
        me = ctl.slot(SLOT_CONSUMER)
        jitter = random.Random(f"{seed}:jitter:consumer")
        expected = 0
        while True:
            batch = rec.get_many(jitter.randint(1, 8))
            if not batch:
                time.sleep(jitter.random() * 0.001)
                continue
            for body in batch:
                index, _cam, fid, _seq = _REC_HEAD.unpack_from(body)
                if index == END:
                    assert fid == expected, f"reader sent {fid} records, {expected} arrived"
                    me.set_state(STATE_STOPPED)
                    results.put(("consumer", expected))
                    rec.close()
                    ctl.close()
                    return
                assert index == expected, f"record {index} arrived, expected {expected}"
                assert body[_REC_HEAD.size :] == filler(seed, index), f"record {index} damaged"
                expected += 1
                me.beat()
            if jitter.random() < 0.3:
                time.sleep(jitter.random() * 0.003)  # slow consumer: back-pressure
    except BaseException:
        _report_errors(results, "consumer")
        raise


@pytest.mark.timeout(120)
def test_shm_stress_multi_process(shm_dir: str) -> None:
    seed = int(os.environ.get("ITSD_STRESS_SEED") or time.time_ns() % 2**32)
    print(f"ITSD_STRESS_SEED={seed}")
    ctx = mp.get_context("spawn")
    run = new_run_id()
    rings = [
        FrameRing.create(
            segment_name(run, "frame", f"cam{cam}"),
            camera_key=cam,
            slot_count=3 if cam == 0 else 2,
            max_width=MAX_W,
            max_height=MAX_H,
        )
        for cam in range(2)
    ]
    rec = RecordRing.create(segment_name(run, "rec", "det"), REC_CAPACITY)
    ctl = ControlBlock.create(segment_name(run, "ctl", "main"), 4)
    results: Queue[Any] = ctx.Queue()
    names = [r.name for r in rings]
    procs = [
        ctx.Process(
            target=writer_main,
            kwargs={
                "shm_dir": shm_dir,
                "ring_name": names[cam],
                "ctl_name": ctl.name,
                "slot": cam,
                "cam": cam,
                "seed": seed,
                "results": results,
            },
            name=f"writer{cam}",
        )
        for cam in range(2)
    ]
    procs.append(
        ctx.Process(
            target=reader_main,
            kwargs={
                "shm_dir": shm_dir,
                "ring_names": names,
                "rec_name": rec.name,
                "ctl_name": ctl.name,
                "seed": seed,
                "results": results,
            },
            name="reader",
        )
    )
    procs.append(
        ctx.Process(
            target=consumer_main,
            kwargs={
                "shm_dir": shm_dir,
                "rec_name": rec.name,
                "ctl_name": ctl.name,
                "seed": seed,
                "results": results,
            },
            name="consumer",
        )
    )
    try:
        for p in procs:
            p.start()
        got: dict[str, Any] = {}
        errors: list[str] = []
        deadline = time.monotonic() + RUN_SECONDS + 60
        while len(got) < 4 and not errors and time.monotonic() < deadline:
            try:
                item = results.get(timeout=0.5)
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in procs):
                    time.sleep(0.5)  # let the error report arrive
                    while not results.empty():
                        item = results.get()
                        if item[0] == "error":
                            errors.append(f"{item[1]}: {item[2]}")
                    errors.append(", ".join(f"{p.name}={p.exitcode}" for p in procs))
                continue
            if item[0] == "error":
                errors.append(f"{item[1]}: {item[2]}")
            elif item[0] == "writer":
                got[f"writer{item[1]}"] = item
            else:
                got[item[0]] = item
        assert not errors, f"seed {seed}:\n" + "\n".join(errors)
        assert len(got) == 4, f"seed {seed}: only {sorted(got)} finished"
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0, f"seed {seed}: {p.name} exited with {p.exitcode}"

        _, counts, sent = got["reader"]
        assert got["consumer"][1] == sent == sum(counts)
        for cam, ring in enumerate(rings):
            st = ring.stats()
            _, _, ok, _ = got[f"writer{cam}"]
            print(f"camera {cam}: {st}")
            assert st.written == ok
            assert st.read == counts[cam]
            assert counts[cam] > 0
            assert ring.pending() == 0
            assert st.written == st.read + st.skipped + (st.dropped - st.rejected)
            assert ring.slot_states() == [SLOT_FREE] * ring.slot_count
        rs = rec.stats()
        print(f"records: {rs}")
        assert rs.put == rs.got == sent + 1
        assert rec.is_empty()
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join(timeout=10)
        for ring in rings:
            ring.close()
            ring.unlink()
        rec.close()
        rec.unlink()
        ctl.close()
        ctl.unlink()


# ------------------------------------------------------------------ crash recovery


def hold_slot_main(*, shm_dir: str, ring_name: str, role: str, holding: Event) -> None:
    os.environ["ITSD_SHM_DIR"] = shm_dir
    ring = FrameRing.attach(ring_name)
    if role == "reader":
        slot = ring.acquire_newest()
        assert slot is not None
    else:
        ws = ring.begin_write(8, 8)
        assert ws is not None
        ws.pixels[...] = 1
    holding.set()
    time.sleep(600)  # killed with SIGKILL while holding the slot


def _kill_while_holding(ring: FrameRing, role: str) -> None:
    ctx = mp.get_context("spawn")
    holding = ctx.Event()
    p = ctx.Process(
        target=hold_slot_main,
        kwargs={
            "shm_dir": os.environ["ITSD_SHM_DIR"],
            "ring_name": ring.name,
            "role": role,
            "holding": holding,
        },
    )
    p.start()
    try:
        assert holding.wait(timeout=60), f"the {role} child never took a slot"
        assert p.pid is not None
        os.kill(p.pid, signal.SIGKILL)
        p.join(timeout=30)
        assert p.exitcode == -signal.SIGKILL
    finally:
        if p.is_alive():
            p.kill()
            p.join()


@pytest.mark.timeout(120)
def test_shm_reader_killed_while_holding_slot_is_recovered(shm_dir: str) -> None:
    ring = FrameRing.create(
        segment_name(new_run_id(), "frame", "kill"),
        camera_key=0,
        slot_count=2,
        max_width=8,
        max_height=8,
    )
    try:
        assert ring.write(np.full((8, 8, 3), 5, np.uint8), frame_id=1, capture_ts_ns=0, pts=0)
        _kill_while_holding(ring, "reader")
        assert ring.slot_states().count(SLOT_READING) == 1
        assert ring.recover_reader() == 1
        assert ring.slot_states() == [SLOT_FREE, SLOT_FREE]
        for fid in range(2, 6):  # both slots usable again: nothing rejected
            assert ring.write(
                np.full((8, 8, 3), fid, np.uint8), frame_id=fid, capture_ts_ns=0, pts=0
            )
        assert ring.stats().rejected == 0
        slot = ring.acquire_newest()
        assert slot is not None
        with slot:
            assert slot.frame_id == 5
            assert int(slot.pixels[0, 0, 0]) == 5
    finally:
        ring.close()
        ring.unlink()


@pytest.mark.timeout(120)
def test_shm_writer_killed_mid_write_is_recovered(shm_dir: str) -> None:
    ring = FrameRing.create(
        segment_name(new_run_id(), "frame", "killw"),
        camera_key=0,
        slot_count=2,
        max_width=8,
        max_height=8,
    )
    try:
        _kill_while_holding(ring, "writer")
        assert ring.slot_states().count(SLOT_WRITING) == 1
        assert ring.acquire_newest() is None  # the half-written frame is never seen
        assert ring.recover_writer() == 1
        assert ring.slot_states() == [SLOT_FREE, SLOT_FREE]
        assert ring.acquire_newest() is None
    finally:
        ring.close()
        ring.unlink()
