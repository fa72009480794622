"""A stage's record ring is mapped whole when attached, so its memory does not climb."""

from __future__ import annotations

from pathlib import Path

from itsd.shm import RecordRing, segment_name


def _rss_kib_of(path: str) -> int:
    """Resident KiB of this process's mappings of ``path`` (from /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            inside = len(head) >= 6 and head[5] == path
        elif inside and line.startswith("Rss:"):
            total += int(head[1])
    return total


def test_attach_maps_every_page_and_the_creator_only_its_header(run_id: str) -> None:
    size = 4 << 20
    ring = RecordRing.create(segment_name(run_id, "rec", "mem"), size)
    try:
        path = ring.segment.path
        assert _rss_kib_of(path) < 64  # the supervisor touches the header only
        reader = RecordRing.attach(ring.name)
        try:
            assert _rss_kib_of(path) >= size // 1024  # both mappings together: the reader's
            before = _rss_kib_of(path)
            for _ in range(4 * size // 1024):  # the data goes round the ring four times
                assert ring.try_put(b"x" * 1000)
                assert reader.get() is not None
            # the reader's mapping did not grow; only the writer's (unpopulated here) did
            assert _rss_kib_of(path) <= before + size // 1024 + 8
        finally:
            reader.close()
        lazy = RecordRing.attach(ring.name, populate=False)
        lazy.close()
    finally:
        ring.close()
        ring.unlink()
