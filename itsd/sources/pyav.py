"""PyAV source: files, RTSP over TCP, HTTP(S), decoded by FFmpeg on the CPU.

A network source is opened with a timeout (a dead camera never blocks the open for
long). Corrupt packets are counted and skipped. An open that fails raises
``SourceError`` with the reason in words: no such file, a directory, not a video, a
connection refused.

This module must never write to shared memory or import a stage.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import av
import numpy as np

from itsd.config import CameraConfig, is_live_source
from itsd.errors import SourceError
from itsd.samples import resolve_source

log = logging.getLogger("itsd.decode")


class PyAVFrame:
    """A decoded PyAV frame."""

    __slots__ = ("_frame", "height", "pts", "time", "width")

    def __init__(self, frame: Any, live: bool) -> None:
        self._frame = frame
        self.time: float | None = frame.time if not live else None
        self.pts = int(frame.pts or 0)
        self.width = int(frame.width)
        self.height = int(frame.height)

    def rgb(self, width: int, height: int) -> np.ndarray:
        """RGB24 pixels scaled by libswscale when the size differs."""
        if (width, height) != (self.width, self.height):
            out: np.ndarray = self._frame.reformat(
                width=width, height=height, format="rgb24"
            ).to_ndarray()
            return out
        pixels: np.ndarray = self._frame.to_ndarray(format="rgb24")
        return pixels


class PyAVSource:
    """One opened PyAV container."""

    def __init__(self, camera: CameraConfig, container: Any, live: bool) -> None:
        self.camera = camera
        self.container = container
        self.live = live
        stream = container.streams.video[0]
        ctx = stream.codec_context
        self.description = f"{ctx.name} {ctx.width}x{ctx.height}"

    @classmethod
    def open(cls, camera: CameraConfig) -> PyAVSource:
        """Open the camera; SourceError with a plain reason when that fails."""
        source = resolve_source(camera.source).removeprefix("file://")
        live = is_live_source(source)
        if not live:
            if os.path.isdir(source):
                raise SourceError(
                    f"camera {camera.id}: cannot open {camera.source}: it is a directory"
                )
            if not os.path.exists(source):
                raise SourceError(f"camera {camera.id}: cannot open {camera.source}: no such file")
        options: dict[str, str] = {}
        kwargs: dict[str, Any] = {}
        if source.startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = "tcp"
        if live:
            kwargs["timeout"] = (camera.open_timeout_s, camera.open_timeout_s)
        try:
            container = av.open(source, options=options, **kwargs)
        except (av.error.FFmpegError, OSError) as err:
            reason = str(err)
            if isinstance(err, av.error.InvalidDataError):
                reason = "not a video FFmpeg can read (invalid data)"
            raise SourceError(
                f"camera {camera.id}: cannot open {camera.source}: {reason}"
            ) from None
        if not container.streams.video:
            container.close()
            raise SourceError(f"camera {camera.id}: {camera.source} has no video stream")
        return cls(camera, container, live)

    def frames(self, stats: dict[str, int]) -> Iterator[PyAVFrame]:
        """Decoded frames; corrupt packets are counted in ``stats['corrupt']`` and skipped."""
        stream = self.container.streams.video[0]
        stream.thread_type = "AUTO"
        for packet in self.container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError as err:
                stats["corrupt"] = stats.get("corrupt", 0) + 1
                n = stats["corrupt"]
                if n <= 3 or n % 100 == 0:
                    log.warning(
                        "camera %s: corrupt data skipped (%d so far): %s", self.camera.id, n, err
                    )
                continue
            for frame in frames:
                yield PyAVFrame(frame, self.live)

    def close(self) -> None:
        """Close the container."""
        self.container.close()
