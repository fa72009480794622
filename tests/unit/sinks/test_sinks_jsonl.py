"""The JSONL sink follows its path: rotated, deleted or replaced files are noticed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from itsd.sinks.jsonl import JsonlSink


def test_moved_away_file_is_reopened_at_the_path(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    sink = JsonlSink(path)
    sink.write_payloads([b"1"])
    path.rename(tmp_path / "e.jsonl.1")  # log rotation
    sink.write_payloads([b"2"])
    sink.close()
    assert (tmp_path / "e.jsonl.1").read_bytes() == b"1\n"
    assert path.read_bytes() == b"2\n"


def test_deleted_file_is_created_again(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    sink = JsonlSink(path)
    sink.write_payloads([b"1"])
    path.unlink()
    sink.write_payloads([b"2"])
    sink.close()
    assert path.read_bytes() == b"2\n"


def test_path_replaced_by_a_directory_fails_until_it_is_a_file_again(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    sink = JsonlSink(path)
    sink.write_payloads([b"1"])
    path.unlink()
    path.mkdir()
    with pytest.raises(IsADirectoryError):
        sink.write_payloads([b"2"])
    with pytest.raises(IsADirectoryError):
        sink.write_payloads([b"2"])  # the caller retries the same batch
    path.rmdir()
    sink.write_payloads([b"2"])
    sink.close()
    assert path.read_bytes() == b"2\n"


def test_symlinked_path_keeps_its_handle(tmp_path: Path) -> None:
    real = tmp_path / "real.jsonl"
    link = tmp_path / "e.jsonl"
    os.symlink(real, link)
    sink = JsonlSink(link)
    sink.write_payloads([b"1"])
    fh = sink._fh
    sink.write_payloads([b"2"])
    assert sink._fh is fh
    sink.close()
    assert real.read_bytes() == b"1\n2\n"


def test_rotation_by_size_keeps_batches_whole(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    rotations: list[int] = []
    sink = JsonlSink(path, max_bytes=20, backups=2, on_rotate=lambda: rotations.append(1))
    for i in range(10):
        sink.write_payloads([f"{i:04d}".encode(), f"{i:04d}".encode()])  # 10 bytes a batch
    sink.close()
    assert path.read_bytes() == b"0008\n0008\n0009\n0009\n"
    assert (tmp_path / "e.jsonl.1").read_bytes() == b"0006\n0006\n0007\n0007\n"
    assert (tmp_path / "e.jsonl.2").read_bytes() == b"0004\n0004\n0005\n0005\n"
    assert not (tmp_path / "e.jsonl.3").exists()
    assert len(rotations) == 4
