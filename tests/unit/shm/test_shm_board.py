"""The seqlock board: consistent snapshots, size limits, lifetime."""

from __future__ import annotations

import threading

import pytest

from itsd.shm import segment_name
from itsd.shm.board import Board


def test_empty_then_published(run_id: str) -> None:
    board = Board.create(segment_name(run_id, "board", "t"), 64)
    try:
        assert board.read() is None
        board.publish(b"hello")
        reader = Board.attach(board.name)
        assert reader.read() == b"hello"
        board.publish(b"")
        assert reader.read() == b""
        reader.close()
        assert reader.closed
    finally:
        board.close()
        board.unlink()


def test_too_large_blob_is_refused(run_id: str) -> None:
    with Board.create(segment_name(run_id, "board", "t"), 8) as board:
        with pytest.raises(ValueError, match="8"):
            board.publish(b"123456789")
        board.unlink()


def test_reader_never_sees_a_torn_blob(run_id: str) -> None:
    board = Board.create(segment_name(run_id, "board", "t"), 4096)
    reader = Board.attach(board.name)
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            board.publish(bytes([i % 251]) * (1 + i % 4000))

    t = threading.Thread(target=write)
    t.start()
    try:
        seen = 0
        for _ in range(3000):
            blob = reader.read()
            if blob:
                assert blob == bytes([blob[0]]) * len(blob)  # one publication, whole
                seen += 1
        assert seen > 0
    finally:
        stop.set()
        t.join()
        reader.close()
        board.close()
        board.unlink()
