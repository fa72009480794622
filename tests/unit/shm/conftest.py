"""Fixtures of the shm unit tests: a private shm directory per test and a run id.

Every test gets its own folder under /dev/shm (tmpfs, like production) through
ITSD_SHM_DIR, so sweeps and listings see only that test's segments and nothing leaks
into the real /dev/shm namespace.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from itsd.shm import new_run_id


@pytest.fixture(autouse=True)
def shm_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A private, empty shm directory (on tmpfs when /dev/shm exists)."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="pytest-itsd-shm-", dir="/dev/shm"))
    else:
        path = tmp_path / "shm"
        path.mkdir()
    monkeypatch.setenv("ITSD_SHM_DIR", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def run_id() -> str:
    """A run id of this (live, Python) process."""
    return new_run_id()
