"""PyAV source: files, RTSP (TCP or UDP), HTTP(S) MJPEG, HLS, decoded by FFmpeg on the CPU.

What each kind of URL gets:

* ``rtsp://`` / ``rtsps://``: ``rtsp_transport`` from ``cameras[].rtsp_transport``
  (``tcp``: one connection, no loss; ``udp``: lower latency, loses packets on a busy
  network, and needs UDP to pass firewalls), with a larger UDP buffer and reorder queue;
* ``http://`` / ``https://``: FFmpeg finds the format from the answer: an MJPEG camera
  (``multipart/x-mixed-replace``, FFmpeg's ``mpjpeg`` demuxer), an HLS playlist
  (``.m3u8``, the ``hls`` demuxer, segments fetched as the playlist grows) or any
  container FFmpeg reads over HTTP;
* anything else: a file (``file://`` taken off, ``sample:NAME`` resolved).

A network source is opened with a timeout for the open and for each read (a dead
camera never blocks the open, a stalled one ends the stream after ``open_timeout_s``
without data; the decode loop reopens it). The open also decodes the first frame, so
"opened" means "a picture came out": a server that answers with garbage, a corrupt
file or a playlist without video fails the open with ``SourceError``. Its message names
the camera and the source (credentials redacted) and says what went wrong in words:
no such file, a directory, not a video, unknown host, connection refused, no answer,
bad credentials (HTTP 401/403, RTSP 401), wrong path (HTTP or RTSP 404).

Frames are converted to RGB (and scaled, see ``Converter``) by libswscale contexts kept
per source, only for frames the caller asks pixels of: sampled-out frames are decoded,
never converted. ``PyAVFrame.i420_into`` instead copies the decoder's YUV 4:2:0 planes
straight into a caller's buffer (a frame ring slot): no colour conversion and no
intermediate array, with streaming stores (``_planecopy.c``) that leave the decoder's
reference frames in the caches. See
``itsd.sources`` for the options (resize, fps, skip when behind, threads).

This module must never open or map shared memory (it writes only into buffers its
caller hands it) or import a stage.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from itsd.config import CameraConfig
from itsd.errors import SourceError
from itsd.redact import redact_text, redact_url
from itsd.samples import resolve_source
from itsd.sources import DEFAULT_OPTIONS, Sampler, SourceOptions

try:  # streaming-store plane copy (setup.py builds it); numpy's copy otherwise
    from itsd.sources import _planecopy
except ImportError:  # pragma: no cover - a checkout whose extensions are not built
    _planecopy = None  # type: ignore[assignment]

log = logging.getLogger("itsd.decode")

#: Packets read at open without a decodable frame before the source is called unreadable.
PEEK_PACKETS = 300
#: Demux errors in a row while streaming before the stream is given up.
MAX_DEMUX_ERRORS = 20
_NETWORK = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")


class Converter:
    """RGB24 pixels of decoded frames, scaled when asked, with libswscale contexts kept
    between frames (PyAV's ``frame.reformat`` builds a new context every call).

    Scaling goes in two passes: first in the frame's own YUV format (libswscale's fast
    vector paths), then YUV to RGB at the small size. Asking libswscale for RGB24 and a
    new size in one call takes its slow generic path: measured 4.0 ms against 1.6 ms for
    1920x1080 to 640x360 with the same bilinear filter (``bench/decode_bench.py``).
    """

    def __init__(self, interpolation: str = "BILINEAR") -> None:
        self.interpolation = interpolation
        self._scale = VideoReformatter()
        self._rgb = VideoReformatter()

    def rgb(self, frame: Any, width: int, height: int) -> np.ndarray:
        """``frame`` as an RGB24 array of ``height`` x ``width`` x 3."""
        if (width, height) != (frame.width, frame.height):
            frame = self._scale.reformat(
                frame,
                width=width,
                height=height,
                format=frame.format.name,
                interpolation=self.interpolation,
            )
        out: np.ndarray = self._rgb.reformat(frame, format="rgb24").to_ndarray()
        return out

    def i420_into(self, frame: Any, out: np.ndarray, width: int, height: int) -> None:
        """Write ``frame`` at ``width`` x ``height`` (even) as I420 into ``out``, an
        (height * 3 / 2, width) uint8 array: the decoder's planes copied row by row (a
        frame in another format or at another size goes through libswscale first)."""
        if (width, height) != (frame.width, frame.height) or frame.format.name != "yuv420p":
            frame = self._scale.reformat(
                frame,
                width=width,
                height=height,
                format="yuv420p",
                interpolation=self.interpolation,
                dst_color_range="MPEG",  # limited range, what readers convert from
            )
        planes = frame.planes  # a new tuple of plane objects on every access: take it once
        cw, ch = width // 2, height // 2
        parts = ((planes[0], width, height), (planes[1], cw, ch), (planes[2], cw, ch))
        pos = 0
        if _planecopy is not None and out.flags.c_contiguous:
            dst = out.data  # a memoryview on the slot
            for plane, w, h in parts:
                pos = _planecopy.copy_rows(dst, pos, plane, w, h, plane.line_size)
            return
        flat = out.reshape(-1)
        for plane, w, h in parts:
            n = w * h
            stride = plane.line_size
            if stride == w:  # packed rows (the usual case): one memcpy
                flat[pos : pos + n] = np.frombuffer(plane, np.uint8, count=n)
            else:  # rows padded for SIMD: copy the visible part of each
                src = np.frombuffer(plane, np.uint8, count=stride * h).reshape(h, stride)
                np.copyto(flat[pos : pos + n].reshape(h, w), src[:, :w])
            pos += n


class PyAVFrame:
    """A decoded PyAV frame; pixels are converted only when asked for."""

    __slots__ = ("_frame", "_source", "capture_ns", "height", "index", "pts", "time", "width")

    def __init__(
        self, frame: Any, source: PyAVSource, index: int, capture_ns: int, live: bool
    ) -> None:
        self._frame = frame
        self._source = source
        self.time: float | None = frame.time if not live else None
        self.pts = int(frame.pts or 0)
        self.width = int(frame.width)
        self.height = int(frame.height)
        self.index = index
        self.capture_ns = capture_ns

    def rgb(self, width: int | None = None, height: int | None = None) -> np.ndarray:
        """RGB24 pixels, scaled by libswscale in the same pass when the size differs;
        without a size, at the source's output size."""
        if width is None or height is None:
            width, height = self._source.options.output_size(self.width, self.height)
        return self._source.convert(self._frame, width, height)

    def i420_size(self) -> tuple[int, int] | None:
        """The size ``i420_into`` writes (the source's output size), or None when that
        size is odd (I420 needs even sides: ask ``rgb()`` then)."""
        width, height = self._source.options.output_size(self.width, self.height)
        if width % 2 or height % 2:
            return None
        return width, height

    def i420_into(self, out: np.ndarray) -> None:
        """Write the picture at ``i420_size()`` as I420 into ``out`` ((H * 3 / 2, W) uint8,
        e.g. a frame ring slot begun as I420)."""
        size = self.i420_size()
        if size is None:
            raise ValueError(f"{self.width}x{self.height} has an odd side: no I420 for it")
        self._source._converter.i420_into(self._frame, out, *size)


class PyAVSource:
    """One opened PyAV container."""

    def __init__(
        self,
        camera: CameraConfig,
        container: Any,
        live: bool,
        options: SourceOptions = DEFAULT_OPTIONS,
    ) -> None:
        self.camera = camera
        self.container = container
        self.live = live
        self.options = options
        self.where = redact_url(camera.source)
        self.stream = container.streams.video[0]
        ctx = self.stream.codec_context
        if options.threads == 1:
            self.stream.thread_type = "SLICE"
            ctx.thread_count = 1
        else:
            self.stream.thread_type = "AUTO"
            ctx.thread_count = options.threads
        fmt = getattr(container.format, "name", "?").split(",")[0]
        self.description = f"{ctx.name} {ctx.width}x{ctx.height} ({fmt})"
        self._converter = Converter(options.interpolation)
        self._packets: Iterator[Any] = container.demux(self.stream)
        self._pending: list[Any] = []  # frames decoded at open, delivered first

    # -- opening ------------------------------------------------------------------------

    @classmethod
    def open(cls, camera: CameraConfig, options: SourceOptions = DEFAULT_OPTIONS) -> PyAVSource:
        """Open the camera and decode its first frame; SourceError with a plain reason."""
        where = redact_url(camera.source)

        def fail(reason: str) -> SourceError:
            return SourceError(f"camera {camera.id}: cannot open {where}: {reason}")

        try:
            source = resolve_source(camera.source).removeprefix("file://")
        except SourceError as err:
            raise fail(str(err)) from None
        live = source.startswith(_NETWORK)
        if not live:
            if os.path.isdir(source):
                raise fail("it is a directory")
            if not os.path.exists(source):
                raise fail("no such file")
        else:
            _check_host(source, fail)
        options_av: dict[str, str] = {}
        kwargs: dict[str, Any] = {}
        if source.startswith(("rtsp://", "rtsps://")):
            transport = camera.rtsp_transport
            options_av["rtsp_transport"] = transport
            if transport == "udp":
                options_av["buffer_size"] = str(4 << 20)
                options_av["reorder_queue_size"] = "64"
        if live:
            kwargs["timeout"] = (camera.open_timeout_s, camera.open_timeout_s)
        try:
            container = av.open(source, options=options_av, **kwargs)
        except (av.error.FFmpegError, OSError) as err:
            raise fail(describe_error(err, camera.open_timeout_s)) from None
        if not container.streams.video:
            container.close()
            raise fail("it has no video stream")
        src = cls(camera, container, live, options)
        try:
            src._peek()
        except SourceError as err:
            src.close()
            raise fail(str(err)) from None
        except (av.error.FFmpegError, OSError) as err:
            src.close()
            raise fail(describe_error(err, camera.open_timeout_s)) from None
        return src

    def _peek(self) -> None:
        """Decode until the first frame (kept for ``frames``); SourceError when none comes."""
        bad = 0
        for n, packet in enumerate(self._packets):
            if n >= PEEK_PACKETS:
                break
            try:
                self._pending = list(packet.decode())
            except av.error.InvalidDataError:
                bad += 1
                continue
            if self._pending:
                return
        if bad:
            raise SourceError(f"corrupt: no frame could be decoded ({bad} bad packet(s))")
        raise SourceError("no video frame in it")

    # -- streaming ----------------------------------------------------------------------

    def convert(self, frame: Any, width: int, height: int) -> np.ndarray:
        """``frame`` as RGB24 at ``width`` x ``height`` (one libswscale pass)."""
        return self._converter.rgb(frame, width, height)

    def _decoded(self, stats: dict[str, int]) -> Iterator[Any]:
        """Every decoded frame: the ones kept at open, then the rest of the stream.

        Corrupt packets are counted in ``stats['corrupt']`` and skipped; demux errors too,
        until MAX_DEMUX_ERRORS come in a row (then the error is raised).
        """
        yield from self._pending
        self._pending = []
        errors_in_row = 0
        while True:
            try:
                packet = next(self._packets)
            except StopIteration:
                return
            except av.error.InvalidDataError as err:
                errors_in_row += 1
                self._count_corrupt(stats, err)
                if errors_in_row >= MAX_DEMUX_ERRORS:
                    raise
                continue
            except (av.error.ExitError, TimeoutError):
                raise TimeoutError(
                    f"no data for {self.camera.open_timeout_s:g} s (stalled)"
                ) from None
            errors_in_row = 0
            try:
                frames = packet.decode()
            except av.error.InvalidDataError as err:
                self._count_corrupt(stats, err)
                continue
            yield from frames

    def _count_corrupt(self, stats: dict[str, int], err: Exception) -> None:
        stats["corrupt"] = stats.get("corrupt", 0) + 1
        n = stats["corrupt"]
        if n <= 3 or n % 100 == 0:
            log.warning(
                "camera %s: corrupt data skipped (%d so far): %s",
                self.camera.id,
                n,
                redact_text(str(err)),
            )

    def frames(self, stats: dict[str, int]) -> Iterator[PyAVFrame]:
        """Decoded frames (at most ``options.fps``); counts in ``stats``: ``corrupt``
        packets skipped, ``sampled_out`` frames above the fps, ``behind`` times the
        decoder started skipping non-reference frames."""
        opts = self.options
        sampler = Sampler(opts.fps)
        watch_lag = self.live and opts.behind_s > 0
        ctx = self.stream.codec_context
        skipping = False
        clock = _Clock()
        for index, frame in enumerate(self._decoded(stats)):
            capture_ns = time.time_ns()
            t = clock.time(frame.time, capture_ns)
            if t is None:  # no timestamp yet (an RTSP stream's first frame): deliver it
                yield PyAVFrame(frame, self, index, capture_ns, self.live)
                continue
            if watch_lag:
                lag = sampler.lag(t, capture_ns / 1e9)
                if not skipping and lag > opts.behind_s:
                    skipping = True
                    ctx.skip_frame = "NONREF"
                    stats["behind"] = stats.get("behind", 0) + 1
                    log.info(
                        "camera %s: %.1f s behind the stream; skipping non-reference frames",
                        self.camera.id,
                        lag,
                    )
                elif skipping and lag < opts.behind_s / 2:
                    skipping = False
                    ctx.skip_frame = "DEFAULT"
            if not sampler.keep(t):
                stats["sampled_out"] = stats.get("sampled_out", 0) + 1
                continue
            yield PyAVFrame(frame, self, index, capture_ns, self.live)

    def close(self) -> None:
        """Close the container."""
        self.container.close()


class _Clock:
    """The time a frame is sampled by: its stream time; a frame without one takes the
    previous frame's; a stream whose first frames have none (some MJPEG cameras) is timed
    by arrival from then on."""

    UNTIMED = 5  # frames without a timestamp before the arrival clock takes over

    def __init__(self) -> None:
        self.last: float | None = None
        self.untimed = 0
        self.by_arrival = False

    def time(self, t: float | None, capture_ns: int) -> float | None:
        if self.by_arrival:
            return capture_ns / 1e9
        if t is None:
            if self.last is None:
                self.untimed += 1
                if self.untimed < self.UNTIMED:
                    return None
                self.by_arrival = True
                return capture_ns / 1e9
            return self.last
        self.last = t
        return t


def _check_host(url: str, fail: Any) -> None:
    """Raise ``fail(reason)`` when the URL's host name does not resolve (FFmpeg only says
    "Input/output error" then)."""
    try:
        host = urlsplit(url).hostname
    except ValueError as err:
        raise fail(f"not a valid URL ({err})") from None
    if not host:
        raise fail("no host in the URL")
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        raise fail(f"unknown host {host!r} (the name does not resolve)") from None


def describe_error(err: BaseException, timeout_s: float) -> str:
    """FFmpeg's error in words an operator can act on (credentials redacted)."""
    name = type(err).__name__
    code = getattr(err, "errno", None)
    text = getattr(err, "strerror", None) or str(err)  # strerror: without the URL

    def says(status: str) -> bool:
        return re.search(rf"\b{status}\b", text) is not None

    if name == "HTTPUnauthorizedError" or says("401"):
        return "bad or missing credentials (401 Unauthorized)"
    if name == "HTTPForbiddenError" or says("403"):
        return "access refused (403 Forbidden): bad credentials or no permission"
    if name == "HTTPNotFoundError" or says("404"):
        return "wrong path (404 Not Found)"
    if name == "HTTPBadRequestError" or name.startswith("HTTP"):
        return f"the server refused the request ({redact_text(text)})"
    if isinstance(err, ConnectionRefusedError) or code == errno.ECONNREFUSED:
        return "connection refused (nothing listens at that host and port)"
    if isinstance(err, av.error.ExitError | TimeoutError) or code == errno.ETIMEDOUT:
        return f"no answer within {timeout_s:g} s"
    if isinstance(err, av.error.InvalidDataError):
        return "not a video FFmpeg can read (invalid data)"
    if isinstance(err, av.error.PermissionError) or code in (errno.EACCES, errno.EPERM):
        return "permission denied (bad credentials, or a file that cannot be read)"
    return redact_text(text)
