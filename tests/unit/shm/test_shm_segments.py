"""Unit tests of itsd.shm.segments: names, create/attach, space checks, listing, sweeping."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from itsd.shm import segments
from itsd.shm.segments import (
    Segment,
    ShmSpaceError,
    check_free_space,
    list_segments,
    new_run_id,
    parse_segment_name,
    segment_name,
    sweep_stale,
)


def _dead_pid() -> int:
    """A pid no process can have (above the kernel's pid_max)."""
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            return int(f.read()) + 1
    except OSError:
        return 2**22 + 1


def test_run_id_contains_the_pid() -> None:
    rid = new_run_id()
    assert rid.startswith(f"{os.getpid()}x")
    assert rid.isalnum()
    assert new_run_id() != rid


def test_segment_name_sanitises_the_key(run_id: str) -> None:
    name = segment_name(run_id, "frame", "cam/1:main-ö")
    assert name == f"itsd-{run_id}-frame-cam_1_main__"
    parsed = parse_segment_name(name)
    assert parsed is not None
    assert (parsed.run_id, parsed.kind, parsed.key) == (run_id, "frame", "cam_1_main__")
    assert parsed.owner_pid == os.getpid()


@pytest.mark.parametrize(
    ("rid", "kind", "key"),
    [("", "frame", "k"), ("12x-a", "frame", "k"), ("12xa", "fr-ame", "k"), ("12xa", "", "k")],
)
def test_segment_name_rejects_bad_parts(rid: str, kind: str, key: str) -> None:
    with pytest.raises(ValueError, match="segment"):
        segment_name(rid, kind, key)


def test_segment_name_rejects_empty_key(run_id: str) -> None:
    with pytest.raises(ValueError, match="key"):
        segment_name(run_id, "rec", "")


def test_parse_ignores_foreign_names() -> None:
    assert parse_segment_name("psm_1234") is None
    assert parse_segment_name("itsd-only") is None
    parsed = parse_segment_name("itsd-nopid-rec-x")
    assert parsed is not None
    assert parsed.owner_pid is None


def test_create_attach_share_memory(run_id: str, shm_dir: Path) -> None:
    name = segment_name(run_id, "test", "a")
    with Segment.create(name, 10_000) as seg:
        assert seg.is_creator
        assert seg.size == 10_000
        assert (shm_dir / name).stat().st_size == 10_000
        seg.buf[0:5] = b"hello"
        with Segment.attach(name) as other:
            assert not other.is_creator
            assert other.size == 10_000
            assert other.buf[0:5] == b"hello"
            other.buf[100:103] = b"abc"
        assert seg.buf[100:103] == b"abc"
        seg.unlink()
        seg.unlink()  # idempotent
    assert not (shm_dir / name).exists()


def test_create_refuses_an_existing_name(run_id: str) -> None:
    name = segment_name(run_id, "test", "dup")
    seg = Segment.create(name, 4096)
    try:
        with pytest.raises(FileExistsError, match="already exists"):
            Segment.create(name, 4096)
    finally:
        seg.close()
        seg.unlink()


@pytest.mark.parametrize("name", ["", "a/b", "-x", "x" * 300, "sp ace"])
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid shared-memory segment name"):
        Segment.create(name, 4096)


def test_create_refuses_zero_size(run_id: str) -> None:
    with pytest.raises(ValueError, match="size must be positive"):
        Segment.create(segment_name(run_id, "test", "z"), 0)


def test_attach_missing_segment_says_what_and_where(shm_dir: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        Segment.attach("itsd-1x1-frame-nothere")
    msg = str(info.value)
    assert "'itsd-1x1-frame-nothere' not found" in msg
    assert str(shm_dir) in msg


def test_only_the_creator_unlinks(run_id: str, shm_dir: Path) -> None:
    name = segment_name(run_id, "test", "own")
    seg = Segment.create(name, 4096)
    other = Segment.attach(name)
    other.unlink()
    assert (shm_dir / name).exists()
    other.close()
    seg.close()
    seg.unlink()
    assert not (shm_dir / name).exists()


def test_close_tolerates_exported_views(run_id: str) -> None:
    seg = Segment.create(segment_name(run_id, "test", "views"), 8192)
    arr = np.frombuffer(seg.buf, dtype=np.uint8)
    arr[0] = 42
    seg.close()  # a view is alive: no exception, the mapping lives on with it
    assert seg.closed
    assert arr[0] == 42
    seg.close()  # idempotent
    seg.unlink()
    del arr


def test_free_space_check_message(shm_dir: Path) -> None:
    check_free_space(1)
    with pytest.raises(ShmSpaceError) as info:
        check_free_space(2**50)
    msg = str(info.value)
    assert "needs 1073741824.0 MiB in" in msg
    assert str(shm_dir) in msg
    assert "MiB is free" in msg
    assert "--shm-size" in msg


def test_create_maps_enospc_to_space_error(
    run_id: str, shm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    name = segment_name(run_id, "test", "big")
    with pytest.raises(ShmSpaceError, match=r"segment 'itsd-.*-test-big' needs 1\.0 MiB in"):
        Segment.create(name, 1024 * 1024)
    assert not (shm_dir / name).exists()  # nothing half-made left behind


def test_list_segments_reports_owner(run_id: str, shm_dir: Path) -> None:
    dead = _dead_pid()
    mine = Segment.create(segment_name(run_id, "frame", "cam0"), 4096)
    stale = Segment.create(segment_name(f"{dead}xabc", "rec", "det"), 8192)
    (shm_dir / "unrelated").write_bytes(b"x")
    try:
        infos = {i.name: i for i in list_segments()}
        assert set(infos) == {mine.name, stale.name}
        assert infos[mine.name].owner_pid == os.getpid()
        assert infos[mine.name].owner_alive
        assert infos[mine.name].size == 4096
        assert infos[mine.name].kind == "frame"
        assert infos[stale.name].owner_pid == dead
        assert not infos[stale.name].owner_alive
        assert infos[stale.name].run_id == f"{dead}xabc"
    finally:
        for seg in (mine, stale):
            seg.close()
            seg.unlink()


def test_sweep_removes_only_dead_runs(run_id: str, shm_dir: Path) -> None:
    dead = _dead_pid()
    mine = Segment.create(segment_name(run_id, "frame", "cam0"), 4096)
    stale = Segment.create(segment_name(f"{dead}x1", "frame", "cam0"), 4096)
    unknown = Segment.create("itsd-nopid-rec-x", 4096)
    stale.close()
    try:
        removed = sweep_stale()
        assert removed == [stale.name]
        assert (shm_dir / mine.name).exists()
        assert (shm_dir / unknown.name).exists()
        assert not (shm_dir / stale.name).exists()
        assert sweep_stale() == []
    finally:
        for seg in (mine, unknown):
            seg.close()
            seg.unlink()


def test_sweep_treats_foreign_and_zombie_pids_as_dead(shm_dir: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])  # alive, but neither itsd nor Python
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        while True:  # wait until it has exited, without reaping it
            try:
                with open(f"/proc/{zombie.pid}/stat") as f:
                    if f.read().split(")")[-1].split()[0] == "Z":
                        break
            except FileNotFoundError:
                break
            os.sched_yield()
        a = Segment.create(segment_name(f"{sleeper.pid}x1", "frame", "a"), 4096)
        b = Segment.create(segment_name(f"{zombie.pid}x1", "frame", "b"), 4096)
        a.close()
        b.close()
        assert sorted(sweep_stale()) == sorted([a.name, b.name])
    finally:
        sleeper.kill()
        sleeper.wait()
        zombie.wait()


def test_pid_checks() -> None:
    assert segments.pid_is_alive_itsd(os.getpid())
    assert not segments.pid_is_alive_itsd(_dead_pid())
    assert not segments.pid_is_alive_itsd(0)
    assert not segments.pid_is_alive_itsd(-5)
