"""A synthetic camera: ``pattern://moving?width=W&height=H&fps=F[&frames=N]``.

Frames are made with numpy (a bright block moving over a dark gradient), so a camera
costs almost nothing to "decode": the source for load tests of many cameras and for
trying a configuration without footage. Without ``frames`` it never ends (like a live
camera, but paced by its own clock and never dropping a connection).

This module must never import PyAV or anything heavy.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import numpy as np

from itsd.config import CameraConfig
from itsd.errors import SourceError
from itsd.sources import DEFAULT_OPTIONS, Sampler, SourceOptions


@dataclass
class PatternFrame:
    """One synthetic frame."""

    index: int
    fps: float
    width: int
    height: int
    base: np.ndarray
    options: SourceOptions = DEFAULT_OPTIONS
    capture_ns: int = field(default_factory=time.time_ns)

    @property
    def time(self) -> float:
        """Seconds since the pattern started."""
        return self.index / self.fps

    @property
    def pts(self) -> int:
        """The frame index."""
        return self.index

    def rgb(self, width: int | None = None, height: int | None = None) -> np.ndarray:
        """The frame at the requested size (block position moves with the index); without
        a size, at the options' output size."""
        if width is None or height is None:
            width, height = self.options.output_size(self.width, self.height)
        img = (
            self.base
            if (width, height) == (self.width, self.height)
            else self.base[:height, :width]
        )
        img = img.copy()
        bw, bh = max(2, width // 8), max(2, height // 6)
        x = (self.index * 4) % max(1, width - bw)
        y = height // 3
        img[y : y + bh, x : x + bw] = 230
        return img


class PatternSource:
    """The synthetic source."""

    live = False

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        frames: int | None,
        options: SourceOptions = DEFAULT_OPTIONS,
    ) -> None:
        self.width, self.height, self.fps, self.n_frames = width, height, fps, frames
        self.options = options
        self.description = f"pattern {width}x{height} at {fps:g} fps"
        ramp = np.linspace(20, 90, width, dtype=np.uint8)
        self._base = np.repeat(np.repeat(ramp[None, :, None], height, axis=0), 3, axis=2)

    @classmethod
    def open(cls, camera: CameraConfig, options: SourceOptions = DEFAULT_OPTIONS) -> PatternSource:
        """Parse the URL; SourceError names what is wrong."""
        url = urlsplit(camera.source)
        if url.netloc not in ("moving", ""):
            raise SourceError(
                f"camera {camera.id}: unknown pattern {url.netloc!r} in {camera.source} "
                "(known: moving)"
            )
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            width = int(q.pop("width", "320"))
            height = int(q.pop("height", "240"))
            fps = float(q.pop("fps", "10"))
            frames = int(q["frames"]) if "frames" in q else None
            q.pop("frames", None)
        except ValueError as err:
            raise SourceError(f"camera {camera.id}: bad pattern parameter: {err}") from None
        if q:
            raise SourceError(
                f"camera {camera.id}: unknown pattern parameter(s) {sorted(q)} "
                "(known: width, height, fps, frames)"
            )
        if not (16 <= width <= 8192 and 16 <= height <= 8192 and 0 < fps <= 240):
            raise SourceError(
                f"camera {camera.id}: pattern size must be 16..8192 and fps 0..240, "
                f"got {width}x{height} at {fps}"
            )
        return cls(width, height, fps, frames, options)

    def frames(self, stats: dict[str, int]) -> Iterator[PatternFrame]:
        """Frames until ``frames`` is reached (or forever), at most ``options.fps``."""
        sampler = Sampler(self.options.fps)
        i = 0
        while self.n_frames is None or i < self.n_frames:
            if sampler.keep(i / self.fps):
                yield PatternFrame(i, self.fps, self.width, self.height, self._base, self.options)
            else:
                stats["sampled_out"] = stats.get("sampled_out", 0) + 1
            i += 1

    def close(self) -> None:
        """Nothing to release."""
