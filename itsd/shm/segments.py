"""POSIX shared-memory segments: create, attach, size-check, list and sweep.

A segment is a file in ``/dev/shm`` (tmpfs), mapped with ``mmap``. Rules:

- Names are ``itsd-<runid>-<kind>-<key>``; the run id starts with the creator's pid
  (``<pid>x<hex>``), so a later run can tell which segments belong to a dead run.
- ``create`` uses ``O_CREAT|O_EXCL`` (never reuses an existing file) and sizes the file
  with ``posix_fallocate``: when ``/dev/shm`` is full the creation fails at once with
  ``ShmSpaceError`` and a clear message, instead of a SIGBUS at the first touch of a page
  that tmpfs cannot back.
- Only the creating process (same pid, so not a forked child) may unlink a segment.
- ``sweep_stale`` removes segments whose creator is gone (pid dead, zombie, or reused by
  a program that is neither itsd nor Python). Pids are those of the creator's pid
  namespace: processes that share one ``/dev/shm`` must share one pid namespace.

``multiprocessing.shared_memory`` is deliberately not used: its resource tracker unlinks
segments it thinks leaked, behind the owner's back.

The directory is ``$ITSD_SHM_DIR`` when set (tests point it at a private folder), else
``SHM_DIR``; it is read at each call, so a test can change it.

This module must never import anything else from ``itsd`` and never unlink a segment it
did not create, except in ``sweep_stale`` for segments of dead runs.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

__all__ = [
    "SHM_DIR",
    "Segment",
    "SegmentInfo",
    "ShmSpaceError",
    "check_free_space",
    "list_segments",
    "new_run_id",
    "parse_segment_name",
    "pid_is_alive_itsd",
    "segment_name",
    "shm_dir",
    "sweep_stale",
]

log = logging.getLogger(__name__)

SHM_DIR = "/dev/shm"
PREFIX = "itsd-"
_MIB = 1024 * 1024
_NAME_MAX = 255

_VALID_NAME = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.\-]*$")
_VALID_PART = re.compile(r"^[A-Za-z0-9]+$")
_KEY_BAD = re.compile(r"[^A-Za-z0-9_.]")
_RUN_PID = re.compile(r"^(\d+)x[A-Za-z0-9]*$")


class ShmSpaceError(Exception):
    """``/dev/shm`` has too little room for what itsd needs (the caller maps it to its errors)."""


def shm_dir() -> str:
    """Directory holding the segments: ``$ITSD_SHM_DIR`` if set, else ``SHM_DIR``."""
    return os.environ.get("ITSD_SHM_DIR") or SHM_DIR


def new_run_id() -> str:
    """A short id for one daemon run; it starts with the creator's pid: ``<pid>x<6 hex>``."""
    return f"{os.getpid()}x{secrets.token_hex(3)}"


def segment_name(run_id: str, kind: str, key: str) -> str:
    """Name of a segment: ``itsd-<run_id>-<kind>-<key>``.

    ``run_id`` and ``kind`` must be alphanumeric (no dashes: the name is split on them);
    ``key`` is sanitised: every character outside ``[A-Za-z0-9_.]`` becomes ``_``.
    """
    if not _VALID_PART.match(run_id):
        raise ValueError(f"segment run id {run_id!r} must be non-empty and alphanumeric")
    if not _VALID_PART.match(kind):
        raise ValueError(f"segment kind {kind!r} must be non-empty and alphanumeric")
    clean = _KEY_BAD.sub("_", key)
    if not clean:
        raise ValueError(f"segment key {key!r} is empty")
    name = f"{PREFIX}{run_id}-{kind}-{clean}"
    if len(name) > _NAME_MAX:
        raise ValueError(f"segment name {name[:40]!r}... is {len(name)} bytes, over {_NAME_MAX}")
    return name


@dataclass(frozen=True, slots=True)
class ParsedName:
    """The parts of an itsd segment name; ``owner_pid`` is None when the run id has no pid."""

    run_id: str
    kind: str
    key: str
    owner_pid: int | None


def parse_segment_name(name: str) -> ParsedName | None:
    """Split ``itsd-<run>-<kind>-<key>``; None when ``name`` is not such a name."""
    if not name.startswith(PREFIX):
        return None
    parts = name.split("-", 3)
    if len(parts) != 4 or not all(parts[1:]):
        return None
    _, run_id, kind, key = parts
    m = _RUN_PID.match(run_id)
    return ParsedName(run_id, kind, key, int(m.group(1)) if m else None)


def pid_is_alive_itsd(pid: int) -> bool:
    """True when ``pid`` runs and looks like itsd or Python (per ``/proc/<pid>/cmdline``).

    A zombie has an empty command line and counts as dead, as does a pid reused by an
    unrelated program. Without ``/proc`` only existence is checked.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    except OverflowError:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().lower()
    except FileNotFoundError:
        return not os.path.isdir("/proc/self")  # gone meanwhile, or no procfs at all
    except OSError:
        return True  # exists but unreadable: assume it is ours rather than sweep it
    return b"python" in cmdline or b"itsd" in cmdline


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """One itsd segment found in the shm directory."""

    name: str
    size: int
    run_id: str
    owner_pid: int | None
    owner_alive: bool
    kind: str
    key: str
    path: str


def list_segments() -> list[SegmentInfo]:
    """All ``itsd-*`` segments of the shm directory, sorted by name."""
    directory = shm_dir()
    out: list[SegmentInfo] = []
    alive: dict[int, bool] = {}
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return out
    for entry in entries:
        parsed = parse_segment_name(entry.name)
        if parsed is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            size = entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:
            continue
        pid = parsed.owner_pid
        if pid is not None and pid not in alive:
            alive[pid] = pid_is_alive_itsd(pid)
        out.append(
            SegmentInfo(
                name=entry.name,
                size=size,
                run_id=parsed.run_id,
                owner_pid=pid,
                owner_alive=alive.get(pid, True) if pid is not None else True,
                kind=parsed.kind,
                key=parsed.key,
                path=entry.path,
            )
        )
    out.sort(key=lambda s: s.name)
    return out


def sweep_stale() -> list[str]:
    """Unlink the ``itsd-*`` segments whose creator is dead; return their names.

    Segments whose run id carries no pid are left alone (their owner is unknown).
    """
    removed: list[str] = []
    for info in list_segments():
        if info.owner_pid is None or info.owner_alive:
            continue
        try:
            os.unlink(info.path)
        except FileNotFoundError:
            continue  # another sweeper got it first
        except OSError as exc:
            log.warning("could not remove stale segment %s: %s", info.path, exc)
            continue
        log.info("removed stale segment %s (owner pid %d is gone)", info.name, info.owner_pid)
        removed.append(info.name)
    return removed


def _free_bytes(directory: str) -> tuple[int, int]:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def _space_message(needed: int, free: int, total: int, directory: str, what: str) -> str:
    return (
        f"{what} needs {needed / _MIB:.1f} MiB in {directory} but only {free / _MIB:.1f} MiB "
        f"is free (of {total / _MIB:.1f} MiB). Remove stale itsd-* segments "
        f"(tools/shm_inspect.py --sweep), use fewer or smaller rings, or enlarge {directory} "
        f"(docker: --shm-size=2g; host: mount -o remount,size=4G {directory})."
    )


def check_free_space(needed_bytes: int) -> None:
    """Raise ``ShmSpaceError`` unless the shm directory has ``needed_bytes`` free."""
    directory = shm_dir()
    try:
        free, total = _free_bytes(directory)
    except FileNotFoundError:
        raise ShmSpaceError(
            f"shared-memory directory {directory} does not exist (is /dev/shm mounted?)"
        ) from None
    if needed_bytes > free:
        raise ShmSpaceError(_space_message(needed_bytes, free, total, directory, "itsd"))


def _check_name(name: str) -> None:
    if not _VALID_NAME.match(name) or len(name) > _NAME_MAX:
        raise ValueError(
            f"invalid shared-memory segment name {name!r}: use 1-{_NAME_MAX} characters "
            "from [A-Za-z0-9_.-], not starting with '-'"
        )


class Segment:
    """One mapped shared-memory segment.

    ``buf`` is the ``mmap`` (MAP_SHARED, read-write). ``close`` unmaps; ``unlink`` removes
    the name (creator only). Use as a context manager to close on exit.
    """

    __slots__ = ("_closed", "_creator_pid", "buf", "is_creator", "name", "path", "size")

    def __init__(self, name: str, path: str, buf: mmap.mmap, size: int, creator: bool) -> None:
        self.name = name
        self.path = path
        self.buf = buf
        self.size = size
        self.is_creator = creator
        self._creator_pid = os.getpid() if creator else 0
        self._closed = False

    @staticmethod
    def _map(fd: int, size: int, populate: bool) -> mmap.mmap:
        flags = mmap.MAP_SHARED
        if populate:
            flags |= getattr(mmap, "MAP_POPULATE", 0)
        return mmap.mmap(fd, size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)

    @classmethod
    def create(cls, name: str, size: int, *, populate: bool = False) -> Self:
        """Create and map a new zero-filled segment of ``size`` bytes.

        Raises ``FileExistsError`` if the name is taken, ``ShmSpaceError`` if the shm
        directory cannot hold it. ``populate`` pre-faults the page tables of this process.
        """
        _check_name(name)
        if size <= 0:
            raise ValueError(f"segment {name!r}: size must be positive, got {size}")
        directory = shm_dir()
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise FileExistsError(
                f"shared-memory segment {name!r} already exists in {directory}; "
                "names carry a run id, so this is a second creator of the same ring "
                "or a leftover: sweep stale segments first"
            ) from None
        except FileNotFoundError:
            raise FileNotFoundError(
                f"shared-memory directory {directory} does not exist (is /dev/shm mounted?)"
            ) from None
        try:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.ENOMEM):
                    try:
                        free, total = _free_bytes(directory)
                    except OSError:
                        free, total = 0, 0
                    raise ShmSpaceError(
                        _space_message(size, free, total, directory, f"segment {name!r}")
                    ) from exc
                raise
            buf = cls._map(fd, size, populate)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        os.close(fd)
        return cls(name, path, buf, size, creator=True)

    @classmethod
    def attach(cls, name: str, *, populate: bool = False) -> Self:
        """Map an existing segment; ``FileNotFoundError`` naming it and the folder if missing."""
        _check_name(name)
        directory = shm_dir()
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"shared-memory segment {name!r} not found in {directory}: its creator has "
                "not made it yet, already removed it, or runs with another ITSD_SHM_DIR"
            ) from None
        try:
            size = os.fstat(fd).st_size
            if size <= 0:
                raise ValueError(f"shared-memory segment {name!r} in {directory} is empty")
            buf = cls._map(fd, size, populate)
        finally:
            os.close(fd)
        return cls(name, path, buf, size, creator=False)

    @property
    def closed(self) -> bool:
        """True after ``close``."""
        return self._closed

    def close(self) -> None:
        """Unmap. Idempotent; never raises because views on the memory are still alive.

        If numpy arrays or memoryviews on the mapping are still referenced, the unmapping
        is left to the moment the last of them goes away (the mmap object outlives them).
        """
        if self._closed:
            return
        self._closed = True
        try:
            self.buf.close()
        except BufferError:
            log.debug("segment %s: views still exported; unmapped when they are freed", self.name)

    def unlink(self) -> None:
        """Remove the name from the shm directory; only the creating process does anything.

        Idempotent. In a process that merely attached (or a forked child of the creator)
        this is a no-op: only the creator unlinks.
        """
        if not self.is_creator or os.getpid() != self._creator_pid:
            log.debug(
                "segment %s: not unlinked by pid %d (not its creator)", self.name, os.getpid()
            )
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        role = "creator" if self.is_creator else "attached"
        state = "closed" if self._closed else "open"
        return f"Segment({self.name!r}, size={self.size}, {role}, {state})"


class SegmentBacked:
    """Lifetime shared by the objects that live in one segment (rings, control block, board).

    Subclasses set ``_seg`` and ``_closed = False`` and may override ``_on_close`` to let
    go of what they hold (slots, views) before the segment is unmapped.
    """

    def __init__(self, segment: Segment) -> None:
        self._seg = segment
        self._closed = False

    @classmethod
    def _create_initialised(
        cls, name: str, size: int, init: Callable[[mmap.mmap], None], *, populate: bool = False
    ) -> Self:
        """Create the segment, write its header with ``init``, then open it as ``cls``.

        If any step fails the segment is unmapped and unlinked: nothing half-made is left.
        """
        seg = Segment.create(name, size, populate=populate)
        try:
            init(seg.buf)
            return cls(seg)
        except BaseException:
            seg.close()
            seg.unlink()
            raise

    @classmethod
    def attach(cls, name: str, *, populate: bool = False) -> Self:
        """Map an existing segment as ``cls``; ``FileNotFoundError`` if missing,
        ``ValueError`` if it is not one."""
        return cls(Segment.attach(name, populate=populate))

    @property
    def segment(self) -> Segment:
        """The underlying segment."""
        return self._seg

    @property
    def closed(self) -> bool:
        """True after ``close``."""
        return self._closed

    def _on_close(self) -> None:
        """Hook run once, before unmapping."""

    def close(self) -> None:
        """Unmap. Idempotent; safe at exit."""
        if self._closed:
            return
        self._on_close()
        self._closed = True
        self._seg.close()

    def unlink(self) -> None:
        """Remove the segment name (creator process only; idempotent)."""
        self._seg.unlink()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
