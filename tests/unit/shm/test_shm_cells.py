"""Unit tests of itsd.shm.cells: named u64 cells, single writer, readers by name."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from itsd.shm import segment_name
from itsd.shm.cells import CellTable, CellTableFullError


def test_cells_are_created_found_and_shared(run_id: str, shm_dir: Path) -> None:
    t = CellTable.create(segment_name(run_id, "cells", "a"), 8)
    other = CellTable.attach(t.name)
    try:
        i = t.cell('itsd_x_total{camera="c1"}')
        assert t.cell('itsd_x_total{camera="c1"}') == i  # found, not created twice
        t.add(i, 5)
        t.add(i)
        j = t.cell("itsd_y")
        t.store(j, 42)
        assert dict(other.items()) == {'itsd_x_total{camera="c1"}': 6, "itsd_y": 42}
        assert other.used() == 2
    finally:
        other.close()
        t.close()
        t.unlink()


def test_a_writer_that_attaches_adopts_the_cells(run_id: str, shm_dir: Path) -> None:
    t = CellTable.create(segment_name(run_id, "cells", "b"), 4)
    try:
        t.add(t.cell("n"), 7)
        again = CellTable.attach(t.name)  # a restarted stage
        assert again.load(again.cell("n")) == 7
        assert again.used() == 1
        again.close()
    finally:
        t.close()
        t.unlink()


def test_retired_cells_vanish_and_their_entries_are_reused(run_id: str, shm_dir: Path) -> None:
    t = CellTable.create(segment_name(run_id, "cells", "c"), 2)
    try:
        t.store(t.cell("a"), 1)
        t.store(t.cell("b"), 2)
        with pytest.raises(CellTableFullError, match="full"):
            t.cell("c")
        assert t.retire("a") is True
        assert t.retire("a") is False
        assert dict(t.items()) == {"b": 2}
        k = t.cell("c")
        assert t.load(k) == 0  # a reused entry starts at zero
        assert dict(t.items()) == {"b": 2, "c": 0}
        assert t.used() == 2
    finally:
        t.close()
        t.unlink()


def test_key_limits(run_id: str, shm_dir: Path) -> None:
    t = CellTable.create(segment_name(run_id, "cells", "d"), 2)
    try:
        with pytest.raises(ValueError, match="240"):
            t.cell("x" * 241)
        with pytest.raises(ValueError, match=r"1\.\.240"):
            t.cell("")
    finally:
        t.close()
        t.unlink()
    with pytest.raises(ValueError, match="capacity"):
        CellTable.required_size(0)


def _writer(name: str, n: int) -> None:
    t = CellTable.attach(name)
    for i in range(n):
        key = f"k{i % 50}"
        t.add(t.cell(key), 1)
        if i % 7 == 0:
            t.retire(f"k{(i + 25) % 50}")
    t.close()


def test_a_reader_never_sees_a_torn_key(run_id: str, shm_dir: Path) -> None:
    t = CellTable.create(segment_name(run_id, "cells", "e"), 64)
    try:
        proc = multiprocessing.get_context("spawn").Process(target=_writer, args=(t.name, 20000))
        proc.start()
        valid = {f"k{i}" for i in range(50)}
        while proc.is_alive():
            for key, _ in t.items():
                assert key in valid, key
        proc.join(30)
        assert proc.exitcode == 0
    finally:
        t.close()
        t.unlink()
