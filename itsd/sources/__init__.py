"""Video sources: each opens one camera and yields decoded frames; decode only loops.

* ``pyav``: files, RTSP (over TCP or UDP: ``cameras[].rtsp_transport``), HTTP(S) MJPEG
  (``multipart/x-mixed-replace``), HLS (``.m3u8``) and any other URL FFmpeg reads,
  through PyAV on the CPU;
* ``webrtc``: WebRTC WHEP pull, ``whep+http://host/path`` or ``whep+https://...`` (the
  ``whep+`` prefix is taken off and the rest is the WHEP endpoint), through aiortc (the
  optional extra ``webrtc``: imported only when such a camera is opened);
* ``pattern``: ``pattern://moving?width=320&height=240&fps=10``, a synthetic picture
  (a block moving over a gradient) made with numpy: a camera that costs almost nothing,
  for load tests and for trying a set-up without footage.

A source raises ``SourceError`` when it cannot be opened (the message names the camera,
the source with its credentials redacted, and the reason in words) and yields
``SourceFrame``s. A source that fails while streaming raises ``SourceError`` too (or the
``av.error.FFmpegError`` / ``OSError`` PyAV raised).

Optional hooks for the decode loop (:class:`SourceOptions`, all off by default so a
caller that passes nothing gets every decoded frame at its own size, as before):

* **decode-time resize**: ``max_width`` / ``max_height`` make ``frame.rgb()`` (no
  arguments) return the picture scaled to fit (aspect kept, even sizes: see
  :func:`fit_within`) in the same libswscale call that converts it to RGB, with a
  scaler kept per source (``interpolation`` picks the libswscale filter);
* **sampling**: ``fps`` delivers at most that many frames per second of stream time;
  frames above it are decoded (the codec needs its reference frames) but never converted
  or scaled, and are counted in ``stats["sampled_out"]``;
* **skip when behind**: for live sources, when decoding has fallen more than
  ``behind_s`` seconds behind the stream, the decoder skips non-reference frames
  (FFmpeg's ``skip_frame = NONREF``) until it has caught up (counted in
  ``stats["behind"]`` each time it starts);
* ``threads``: decoder threads (1 for a decode worker that hosts many cameras; 0 lets
  FFmpeg choose).

A frame may also offer its pixels as I420 (YUV 4:2:0, see :class:`I420Frame`): PyAV's
frames do, copying the decoder's planes into the caller's buffer without a colour
conversion; the decode worker uses it for cameras whose ``ring_format`` is ``i420``.

Every frame carries its presentation time (``time``, ``pts``), the wall-clock time it
came out of the decoder (``capture_ns``) and its index among the decoded frames since
the source was opened (``index``, counting frames skipped by sampling).

This package must never write to shared memory, run inference or import a stage.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, cast, runtime_checkable

import numpy as np

from itsd.config import CameraConfig

#: URL schemes the sources open (besides plain file paths and ``sample:NAME``); the
#: supervisor's check of a camera registered at run time can refuse the others.
SCHEMES = (
    "file",
    "pattern",
    "rtsp",
    "rtsps",
    "http",
    "https",
    "rtmp",
    "udp",
    "tcp",
    "whep+http",
    "whep+https",
)

#: libswscale filters accepted by ``SourceOptions.interpolation``.
INTERPOLATIONS = ("FAST_BILINEAR", "BILINEAR", "BICUBIC", "AREA", "POINT", "LANCZOS")


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
        """Picture width in pixels (as decoded)."""
        ...

    @property
    def height(self) -> int:
        """Picture height in pixels (as decoded)."""
        ...

    @property
    def capture_ns(self) -> int:
        """Wall-clock time (ns since the epoch) the frame came out of the decoder."""
        ...

    @property
    def index(self) -> int:
        """Index among the frames decoded since the source was opened (from 0)."""
        ...

    def rgb(self, width: int | None = None, height: int | None = None) -> np.ndarray:
        """The picture as RGB24, scaled to ``width`` x ``height``; without a size, at the
        source's output size (``SourceOptions.output_size``)."""
        ...


@runtime_checkable
class I420Frame(Protocol):
    """A frame that can write its picture as I420 ((H * 3 / 2, W) uint8) into a buffer."""

    def i420_size(self) -> tuple[int, int] | None:
        """(width, height) ``i420_into`` writes, or None when it cannot (an odd side)."""
        ...

    def i420_into(self, out: np.ndarray) -> None:
        """Write the picture at ``i420_size()`` into ``out``."""
        ...


_I420_TYPES: dict[type, bool] = {}


def as_i420(frame: object) -> I420Frame | None:
    """``frame`` as an :class:`I420Frame` when its type offers I420, else None. Decided
    once per type: ``isinstance`` against a runtime protocol costs about 25 us, a twentieth
    of decoding a 640x360 frame."""
    kind = type(frame)
    ok = _I420_TYPES.get(kind)
    if ok is None:
        ok = _I420_TYPES[kind] = isinstance(frame, I420Frame)
    return cast(I420Frame, frame) if ok else None


@dataclass(frozen=True)
class SourceOptions:
    """How a source delivers frames (see the module docstring); the defaults change nothing."""

    #: Largest output size: ``rgb()`` without arguments scales to fit (None: as decoded).
    max_width: int | None = None
    max_height: int | None = None
    #: libswscale filter for scaling (one of INTERPOLATIONS).
    interpolation: str = "BILINEAR"
    #: Frames per second delivered (stream time); None delivers every frame.
    fps: float | None = None
    #: Live sources: skip non-reference frames while more than this far behind; 0: never.
    behind_s: float = 0.0
    #: Decoder threads: 1 for a worker hosting many cameras, 0 for FFmpeg's choice.
    threads: int = 0

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                f"got {self.interpolation!r}"
            )
        if self.fps is not None and not 0 < self.fps <= 240:
            raise ValueError(f"fps must be in (0, 240], got {self.fps}")
        for name in ("max_width", "max_height"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise ValueError(f"{name} must be at least 2, got {value}")
        if self.behind_s < 0 or self.threads < 0:
            raise ValueError("behind_s and threads must not be negative")

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The size ``rgb()`` delivers for a picture of ``width`` x ``height``."""
        return fit_within(
            width,
            height,
            self.max_width if self.max_width is not None else width,
            self.max_height if self.max_height is not None else height,
        )


#: Options that change nothing.
DEFAULT_OPTIONS = SourceOptions()


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


def fit_within(width: int, height: int, max_w: int, max_h: int) -> tuple[int, int]:
    """Largest even size with the same aspect ratio that fits ``max_w`` x ``max_h``
    (the size itself when it fits already)."""
    if width <= max_w and height <= max_h:
        return width, height
    scale = min(max_w / width, max_h / height)
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


class Sampler:
    """Keeps frames at a target fps by their stream time, and tells when decoding is behind.

    ``keep(t)`` is True for the first frame and then for the first frame at or after each
    period; a frame time going back (a loop, a clock reset) or jumping far ahead starts
    the schedule afresh at that frame. ``lag(t, now)`` is how far (seconds) a live
    stream's frame at stream time ``t`` arrives later than the most punctual frame so
    far: it grows while the decoder is slower than the camera.
    """

    JUMP_S = 2.0

    def __init__(self, fps: float | None) -> None:
        self.period = 1.0 / fps if fps else 0.0
        self._next: float | None = None
        self._prev: float | None = None
        self._offset: float | None = None

    def keep(self, t: float) -> bool:
        """True when the frame at stream time ``t`` is one to deliver."""
        prev, self._prev = self._prev, t
        if prev is not None and (t < prev - 0.25 or t > prev + max(self.JUMP_S, 10 * self.period)):
            self._next = None  # timestamps jumped: restart the schedule
            self._offset = None
        if self.period <= 0:
            return True
        if self._next is not None and t + 1e-6 < self._next:
            return False
        nxt = t if self._next is None else self._next
        nxt += self.period
        if nxt < t:  # fell behind (a gap in the stream): resynchronise
            nxt = t + self.period
        self._next = nxt
        return True

    def lag(self, t: float, now: float) -> float:
        """Seconds the frame at stream time ``t``, decoded at ``now``, is behind."""
        offset = now - t
        if self._offset is None or offset < self._offset:
            self._offset = offset
        return offset - self._offset


def wall_ns() -> int:
    """Wall-clock time in nanoseconds (the capture time stamped on live frames)."""
    return time.time_ns()


def open_source(
    camera: CameraConfig,
    options: SourceOptions | None = None,
    decoder: str = "cpu",
    gpu: int = 0,
) -> Source:
    """Open the camera's source; SourceError when it cannot be opened.

    ``decoder`` ``"nvdec"`` decodes files and RTSP on GPU ``gpu`` (``itsd.sources.nvdec``);
    patterns and WebRTC always decode on the CPU."""
    opts = options if options is not None else DEFAULT_OPTIONS
    if camera.source.startswith("pattern://"):
        from itsd.sources.pattern import PatternSource

        return PatternSource.open(camera, opts)
    if camera.source.startswith(("whep+http://", "whep+https://")):
        from itsd.sources.webrtc import WhepSource

        return WhepSource.open(camera, opts)
    if decoder == "nvdec":
        from itsd.sources.nvdec import NvdecSource

        return NvdecSource.open(camera, opts, gpu)
    from itsd.sources.pyav import PyAVSource

    return PyAVSource.open(camera, opts)
