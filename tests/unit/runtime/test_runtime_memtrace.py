"""itsd.runtime.memtrace: off unless asked for, only in the stages named, and its report."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from itsd.runtime import memtrace


def test_off_without_the_variable_and_for_stages_not_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(memtrace.ENV_DIR, raising=False)
    assert memtrace.start("analyze") is False
    monkeypatch.setenv(memtrace.ENV_DIR, str(tmp_path))
    monkeypatch.setenv(memtrace.ENV_STAGES, "publish, infer")
    assert memtrace.start("analyze") is False
    assert memtrace.start("decode:0") is False
    assert not tracemalloc.is_tracing()


def test_report_names_the_line_that_grew() -> None:
    tracemalloc.start(4)
    try:
        base = tracemalloc.take_snapshot()
        kept = [bytearray(1000) for _ in range(200)]  # this line grows by about 200 KB
        snap = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    text = memtrace.report(base, snap, 42.0)
    assert text.startswith("== t=42 s")
    first = text.splitlines()[2]
    assert "test_runtime_memtrace.py" in first and "KiB" in first
    assert len(kept) == 200
