"""Video sources: each opens one camera and yields decoded frames; decode only loops.

* ``pyav``: files, RTSP (over TCP), HTTP(S), through PyAV / FFmpeg on the CPU;
* ``pattern``: ``pattern://moving?width=320&height=240&fps=10``, a synthetic picture
  (a block moving over a gradient) made with numpy: a camera that costs almost nothing,
  for load tests and for trying a set-up without footage.

A source raises ``SourceError`` (message names the camera and the source, credentials
redacted by the logging filter) when it cannot be opened, and yields ``SourceFrame``s.

This package must never write to shared memory, run inference or import a stage.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np

from itsd.config import CameraConfig


class SourceFrame(Protocol):
    """One decoded frame."""

    @property
    def time(self) -> float | None:
        """Presentation time in seconds (stream clock), or None when unknown."""
        ...

    @property
    def pts(self) -> int:
        """Presentation timestamp in stream units."""
        ...

    @property
    def width(self) -> int:
        """Picture width in pixels."""
        ...

    @property
    def height(self) -> int:
        """Picture height in pixels."""
        ...

    def rgb(self, width: int, height: int) -> np.ndarray:
        """The picture as RGB24, scaled to ``width`` x ``height``."""
        ...


class Source(Protocol):
    """An opened camera."""

    #: True for network streams (paced by the camera), False for files.
    live: bool
    #: Short description for logs and health (codec, size), no credentials.
    description: str

    def frames(self, stats: dict[str, int]) -> Iterator[SourceFrame]:
        """Decoded frames until the source ends; corrupt data is counted in ``stats``."""
        ...

    def close(self) -> None:
        """Release the source."""
        ...


def open_source(camera: CameraConfig) -> Source:
    """Open the camera's source; SourceError when it cannot be opened."""
    if camera.source.startswith("pattern://"):
        from itsd.sources.pattern import PatternSource

        return PatternSource.open(camera)
    from itsd.sources.pyav import PyAVSource

    return PyAVSource.open(camera)
