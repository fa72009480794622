"""The JSONL sink follows its path: rotated, deleted or replaced files are noticed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from itsd.stages.publish import JsonlSink


def test_moved_away_file_is_reopened_at_the_path(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    sink = JsonlSink(path)
    sink.write([b"1"])
    path.rename(tmp_path / "e.jsonl.1")  # log rotation
    sink.write([b"2"])
    sink.close()
    assert (tmp_path / "e.jsonl.1").read_bytes() == b"1\n"
    assert path.read_bytes() == b"2\n"


def test_deleted_file_is_created_again(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    sink = JsonlSink(path)
    sink.write([b"1"])
    path.unlink()
    sink.write([b"2"])
    sink.close()
    assert path.read_bytes() == b"2\n"


def test_path_replaced_by_a_directory_fails_until_it_is_a_file_again(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    sink = JsonlSink(path)
    sink.write([b"1"])
    path.unlink()
    path.mkdir()
    with pytest.raises(IsADirectoryError):
        sink.write([b"2"])
    with pytest.raises(IsADirectoryError):
        sink.write([b"2"])  # the caller retries the same batch
    path.rmdir()
    sink.write([b"2"])
    sink.close()
    assert path.read_bytes() == b"2\n"


def test_symlinked_path_keeps_its_handle(tmp_path: Path) -> None:
    real = tmp_path / "real.jsonl"
    link = tmp_path / "e.jsonl"
    os.symlink(real, link)
    sink = JsonlSink(link)
    sink.write([b"1"])
    fh = sink._fh
    sink.write([b"2"])
    assert sink._fh is fh
    sink.close()
    assert real.read_bytes() == b"1\n2\n"
