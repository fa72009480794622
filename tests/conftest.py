"""Shared pytest fixtures: where the real model and the real footage live.

The model is found through ITSD_TEST_MODEL (set by the test command when the shared
model exists). When that variable is set and the file is missing, tests that need the
model fail instead of skipping, so CI cannot go green without running them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def model_path() -> Path:
    """Path of the real YOLO11n ONNX model used by tests."""
    env = os.environ.get("ITSD_TEST_MODEL")
    if env:
        path = Path(env)
        if not path.is_file():
            pytest.fail(f"ITSD_TEST_MODEL={env} is set but the file does not exist")
        return path
    default = SHARED / "models" / "yolo11n_int8_320.onnx"
    if default.is_file():
        return default
    pytest.skip("no test model: set ITSD_TEST_MODEL to a YOLO11 ONNX file")


@pytest.fixture(scope="session")
def media_dir() -> Path:
    """Folder of the real traffic clips (../shared/media)."""
    env = os.environ.get("ITSD_TEST_MEDIA")
    path = Path(env) if env else SHARED / "media"
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"test media folder {path} is missing")
        pytest.skip(f"no test media at {path}")
    return path


@pytest.fixture(scope="session")
def clip_frames(media_dir: Path) -> Callable[[str, int, int], list[np.ndarray]]:
    """``clip_frames(name, every, count)``: `count` RGB frames of a clip of the media
    folder, one in `every` from the first (decoded once per session and arguments)."""
    cache: dict[tuple[str, int, int], list[np.ndarray]] = {}

    def frames(name: str, every: int, count: int) -> list[np.ndarray]:
        key = (name, every, count)
        if key not in cache:
            out: list[np.ndarray] = []
            with av.open(str(media_dir / name)) as container:
                for i, frame in enumerate(container.decode(video=0)):
                    if i % every == 0:
                        out.append(np.asarray(frame.to_ndarray(format="rgb24")))
                    if len(out) == count:
                        break
            cache[key] = out
        return [f.copy() for f in cache[key]]

    return frames
