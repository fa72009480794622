"""Helpers of the source tests: open a camera by URL and take frames from it."""

from __future__ import annotations

import socket
import time
from typing import Any

import numpy as np

from itsd.config import CameraConfig
from itsd.sources import Source, SourceOptions, open_source


def camera(source: str, **kw: Any) -> CameraConfig:
    return CameraConfig(
        id="cam1", source=source, open_timeout_s=kw.pop("open_timeout_s", 5.0), **kw
    )


def take(
    source: Source, n: int, stats: dict[str, int] | None = None, timeout: float = 30.0
) -> list[tuple[Any, np.ndarray]]:
    """The first ``n`` frames (fewer if the source ends) with their default-size pixels."""
    out: list[tuple[Any, np.ndarray]] = []
    deadline = time.monotonic() + timeout
    for frame in source.frames(stats if stats is not None else {}):
        out.append((frame, frame.rgb()))
        if len(out) >= n or time.monotonic() > deadline:
            break
    return out


def open_and_take(
    url: str, n: int, options: SourceOptions | None = None, **kw: Any
) -> tuple[list[tuple[Any, np.ndarray]], dict[str, int], str]:
    src = open_source(camera(url, **kw), options)
    stats: dict[str, int] = {}
    try:
        return take(src, n, stats), stats, src.description
    finally:
        src.close()


def looks_like_footage(pixels: np.ndarray) -> bool:
    """A real street picture: not one flat colour, not noise-free."""
    return bool(pixels.std() > 10 and pixels.mean() > 5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
