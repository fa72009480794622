"""WebRTC source: WHEP pull (``whep+http://host/path``, ``whep+https://...``) with aiortc.

The URL without its ``whep+`` prefix is the WHEP endpoint. Opening the source makes a
receive-only offer (one video transceiver), POSTs it to the endpoint
(``Content-Type: application/sdp``; credentials in the URL become ``Authorization``:
``user:password@`` is sent as Basic, a lone ``token@`` as ``Bearer token``), applies
the answer and waits for the first decoded frame; closing sends ``DELETE`` to the
session resource the server named in ``Location``. No STUN/TURN server is configured:
the peer must be reachable directly (host candidates), as a camera or media server on
the same network is.

aiortc runs its asyncio loop in one thread per source; decoded frames (PyAV
``VideoFrame``s, aiortc decodes H.264/VP8 itself) pass to the caller through a small
queue where the newest frame wins (frames the caller did not take in time are counted
in ``stats['dropped']``). The wall-clock capture time is taken when aiortc hands the
frame over. WebRTC has no way to skip non-reference frames from here (aiortc decodes
everything); sampling (``options.fps``) still skips the RGB conversion of frames not kept.

aiortc is the optional extra ``webrtc`` (``pip install 'itsd[webrtc]'``); it is imported
only when a WHEP camera is opened, and its absence is a ``SourceError`` that says so.

This module must never write to shared memory or import a stage.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import numpy as np

from itsd.config import CameraConfig
from itsd.errors import SourceError
from itsd.redact import redact_text, redact_url
from itsd.sources import DEFAULT_OPTIONS, Sampler, SourceOptions
from itsd.sources.pyav import Converter

log = logging.getLogger("itsd.decode")

PREFIX = "whep+"
_END = object()  # queue marker: the stream ended


class WhepFrame:
    """A frame received over WebRTC; pixels are converted only when asked for."""

    __slots__ = ("_frame", "_source", "capture_ns", "height", "index", "pts", "time", "width")

    def __init__(self, frame: Any, source: WhepSource, index: int, capture_ns: int) -> None:
        self._frame = frame
        self._source = source
        self.time: float | None = None  # live: the caller uses the arrival time
        self.pts = int(frame.pts or 0)
        self.width = int(frame.width)
        self.height = int(frame.height)
        self.index = index
        self.capture_ns = capture_ns

    def rgb(self, width: int | None = None, height: int | None = None) -> np.ndarray:
        """RGB24 pixels (one libswscale pass); without a size, at the output size."""
        if width is None or height is None:
            width, height = self._source.options.output_size(self.width, self.height)
        return self._source.convert(self._frame, width, height)


def split_whep_url(url: str) -> tuple[str, str | None]:
    """``whep+http://user:pw@host/p`` -> (``http://host/p``, the Authorization header)."""
    parts = urlsplit(url.removeprefix(PREFIX))
    auth: str | None = None
    if parts.username is not None:
        user = unquote(parts.username)
        if parts.password is not None:
            pair = f"{user}:{unquote(parts.password)}".encode()
            auth = "Basic " + base64.b64encode(pair).decode("ascii")
        else:
            auth = f"Bearer {user}"
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), auth


class WhepSource:
    """One WHEP session."""

    live = True

    def __init__(self, camera: CameraConfig, options: SourceOptions) -> None:
        self.camera = camera
        self.options = options
        self.where = redact_url(camera.source)
        self.description = "webrtc (whep)"
        self.endpoint, self._auth = split_whep_url(camera.source)
        self._converter = Converter(options.interpolation)
        self._frames: queue.Queue[Any] = queue.Queue(maxsize=2)
        self._dropped = 0
        self._error: str | None = None
        self._resource: str | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"whep-{camera.id}", daemon=True
        )
        self._pc: Any = None
        self._tasks: list[asyncio.Future[None]] = []
        self._closed = False

    @classmethod
    def open(cls, camera: CameraConfig, options: SourceOptions = DEFAULT_OPTIONS) -> WhepSource:
        """Negotiate the session and wait for the first frame; SourceError when that fails."""
        where = redact_url(camera.source)
        try:
            import aiortc  # noqa: F401
        except ImportError:
            raise SourceError(
                f"camera {camera.id}: cannot open {where}: WebRTC (WHEP) sources need "
                "aiortc, which is not installed: pip install 'itsd[webrtc]'"
            ) from None
        src = cls(camera, options)
        src._thread.start()
        timeout = camera.open_timeout_s
        try:
            fut = asyncio.run_coroutine_threadsafe(src._connect(), src._loop)
            try:
                fut.result(timeout)
            except TimeoutError:
                fut.cancel()
                raise SourceError(f"no answer within {timeout:g} s") from None
            first = src._take(timeout)
            if first is _END:
                raise SourceError(src._error or "the peer closed the session before any frame")
            src._pending = first
        except SourceError as err:
            src.close()
            raise SourceError(
                f"camera {camera.id}: cannot open {where}: {redact_text(str(err))}"
            ) from None
        except Exception as err:  # aiortc's own errors: the session could not be set up
            src.close()
            raise SourceError(
                f"camera {camera.id}: cannot open {where}: WebRTC session failed: "
                f"{type(err).__name__}: {redact_text(str(err))}"
            ) from None
        return src

    _pending: Any = None

    # -- the asyncio side (runs in the source's thread) ---------------------------------

    async def _connect(self) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._pc = pc
        pc.addTransceiver("video", direction="recvonly")

        @pc.on("track")
        def _on_track(track: Any) -> None:
            if track.kind == "video":
                self._tasks.append(asyncio.ensure_future(self._receive(track)))

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._finish(f"WebRTC connection {pc.connectionState}")

        await pc.setLocalDescription(await pc.createOffer())
        answer, location = await asyncio.to_thread(self._post_offer, pc.localDescription.sdp)
        if location:
            self._resource = urljoin(self.endpoint, location)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        except ValueError as err:
            raise SourceError(f"the server's answer is not usable SDP ({err})") from None

    def _post_offer(self, sdp: str) -> tuple[str, str | None]:
        """POST the offer; the answer SDP and the session's Location (SourceError in words)."""
        headers = {"Content-Type": "application/sdp", "Accept": "application/sdp"}
        if self._auth:
            headers["Authorization"] = self._auth
        req = urllib.request.Request(self.endpoint, data=sdp.encode(), headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.camera.open_timeout_s) as resp:
                body = resp.read().decode("utf-8", "replace")
                location = resp.headers.get("Location")
        except urllib.error.HTTPError as err:
            reasons = {
                401: "bad or missing credentials (401 Unauthorized)",
                403: "access refused (403 Forbidden): bad credentials or no permission",
                404: "wrong path (404 Not Found)",
            }
            raise SourceError(
                reasons.get(err.code, f"the WHEP server answered {err.code} {err.reason}")
            ) from None
        except urllib.error.URLError as err:
            reason = err.reason
            if isinstance(reason, ConnectionRefusedError):
                text = "connection refused (nothing listens at that host and port)"
            elif isinstance(reason, OSError) and "Name or service" in str(reason):
                text = f"unknown host {urlsplit(self.endpoint).hostname!r}"
            else:
                text = str(reason)
            raise SourceError(text) from None
        except (TimeoutError, OSError) as err:
            raise SourceError(f"no answer ({err})") from None
        if not body.lstrip().startswith("v=0"):
            raise SourceError("the server's answer is not SDP (is this a WHEP endpoint?)")
        return body, location

    async def _receive(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                frame = await track.recv()
                self._put((frame, time.time_ns()))
        except MediaStreamError:
            self._finish("the peer ended the video track")

    def _put(self, item: Any) -> None:
        """Newest wins: a full queue loses its oldest frame."""
        while True:
            try:
                self._frames.put_nowait(item)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._frames.get_nowait()
                    self._dropped += 1

    def _finish(self, reason: str) -> None:
        if self._error is None:
            self._error = reason
        self._put(_END)

    # -- the caller's side --------------------------------------------------------------

    def _take(self, timeout: float) -> Any:
        try:
            return self._frames.get(timeout=timeout)
        except queue.Empty:
            raise SourceError(f"no frame within {timeout:g} s") from None

    def convert(self, frame: Any, width: int, height: int) -> np.ndarray:
        """``frame`` as RGB24 at ``width`` x ``height`` (one libswscale pass)."""
        return self._converter.rgb(frame, width, height)

    def frames(self, stats: dict[str, int]) -> Iterator[WhepFrame]:
        """Frames until the peer ends the session; TimeoutError when none comes for
        ``open_timeout_s`` (a stalled peer)."""
        sampler = Sampler(self.options.fps)
        index = -1
        item, self._pending = self._pending, None
        while True:
            if item is None:
                try:
                    item = self._frames.get(timeout=self.camera.open_timeout_s)
                except queue.Empty:
                    raise TimeoutError(
                        f"no frame for {self.camera.open_timeout_s:g} s (stalled)"
                    ) from None
            if item is _END:
                if self._error:
                    log.info("camera %s: %s", self.camera.id, self._error)
                return
            frame, capture_ns = item
            item = None
            index += 1
            stats["dropped"] = self._dropped
            t = frame.time if frame.time is not None else capture_ns / 1e9
            if not sampler.keep(t):
                stats["sampled_out"] = stats.get("sampled_out", 0) + 1
                continue
            yield WhepFrame(frame, self, index, capture_ns)

    def close(self) -> None:
        """Close the peer connection, end the session on the server, stop the thread."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            if self._pc is not None:
                fut = asyncio.run_coroutine_threadsafe(self._pc.close(), self._loop)
                with contextlib.suppress(Exception):
                    fut.result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()
        if self._resource:
            headers = {"Authorization": self._auth} if self._auth else {}
            req = urllib.request.Request(self._resource, method="DELETE", headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=2):
                    pass
            except (OSError, ValueError) as err:
                log.debug(
                    "camera %s: WHEP DELETE failed: %s", self.camera.id, redact_text(str(err))
                )
