"""NVDEC source: files and RTSP decoded on an NVIDIA GPU through PyNvVideoCodec.

Used for a camera whose ``decoder`` is ``nvdec`` (or ``auto`` on a machine with the
``gpu`` extra and a GPU; see ``choose_decoder``). PyNvVideoCodec's demuxer (FFmpeg inside)
reads the container or stream, NVDEC decodes to NV12 in device memory, and the frame is
converted to RGB and scaled to the ring's size on the GPU (torch, from the DLPack view of
the decoded surface), then copied once into a pinned host buffer that the decode loop
writes into the camera's ring.

Where frames go, and why: into the same shared-memory ring as CPU-decoded frames, from
pinned host memory. A device pointer cannot be handed to another process without CUDA
IPC handles whose lifetime would tie the inference process to the decode process (a
decoder restart would invalidate memory inference is reading), and one ring format keeps
every backend and the CPU decoders interchangeable. The cost is one device-to-host copy
of the scaled frame (0.7 MB at 640x360, about 15 us at pinned bandwidth), small beside
decoding; inference copies it back in its batch through its own pinned staging.

Everything here is imported lazily: without PyNvVideoCodec or torch (the ``gpu`` extra)
opening an NVDEC camera raises ``SourceError`` saying what to install, and nothing else
changes. Not run on the machines this was written on (no GPU there): ``nv12_to_rgb`` and
``choose_decoder`` are unit-tested on the CPU; the decode path runs only with a GPU.

This module must never write to shared memory or import a stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from itsd.config import CameraConfig
from itsd.errors import SourceError
from itsd.redact import redact_text, redact_url
from itsd.samples import resolve_source
from itsd.sources import DEFAULT_OPTIONS, SourceOptions

log = logging.getLogger("itsd.decode")

#: Demux errors in a row while streaming before the stream is given up.
MAX_DEMUX_ERRORS = 20


def gpu_decode_available() -> bool:
    """True when PyNvVideoCodec and torch import and torch sees a CUDA device."""
    try:
        import PyNvVideoCodec  # noqa: F401
        import torch
    except Exception:  # not installed, or a broken CUDA install: CPU decoding
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:
        return False


def choose_decoder(setting: str, nvdec_in_use: int, nvdec_limit: int, available: bool) -> str:
    """``"cpu"`` or ``"nvdec"`` for a camera.

    ``setting`` is the camera's ``decoder`` (``auto``, ``cpu``, ``nvdec``); ``auto`` takes
    NVDEC while it is available and fewer than ``nvdec_limit`` cameras use it (0: no
    limit), else the CPU, so CPU and NVDEC decoders run side by side. ``nvdec`` without a
    GPU is the caller's error to report (``SourceError`` at open).
    """
    if setting == "cpu":
        return "cpu"
    if setting == "nvdec":
        return "nvdec"
    if not available:
        return "cpu"
    if nvdec_limit and nvdec_in_use >= nvdec_limit:
        return "cpu"
    return "nvdec"


def nv12_to_rgb(nv12: Any, width: int, height: int) -> Any:
    """BT.601 limited-range NV12 (a torch uint8 tensor of shape (H*3/2, W)) to RGB
    (H, W, 3) uint8, scaled to ``width`` x ``height`` (bilinear). Runs on the tensor's
    device (GPU in production, CPU in tests)."""
    import torch
    from torch.nn import functional

    h2, w = int(nv12.shape[0]), int(nv12.shape[1])
    h = h2 * 2 // 3
    y = nv12[:h].float()
    uv = nv12[h : h + h // 2].reshape(h // 2, w // 2, 2).float()
    # Chroma up to full resolution (nearest, as the 2x2 block shares it).
    u = uv[..., 0].repeat_interleave(2, 0).repeat_interleave(2, 1)[:h, :w] - 128.0
    v = uv[..., 1].repeat_interleave(2, 0).repeat_interleave(2, 1)[:h, :w] - 128.0
    c = (y - 16.0) * 1.164
    r = c + 1.596 * v
    g = c - 0.392 * u - 0.813 * v
    b = c + 2.017 * u
    rgb = torch.stack((r, g, b), 0)  # (3, H, W)
    if (width, height) != (w, h):
        rgb = functional.interpolate(
            rgb[None], size=(height, width), mode="bilinear", align_corners=False
        )[0]
    return rgb.clamp_(0, 255).round_().to(torch.uint8).permute(1, 2, 0).contiguous()


class NvdecFrame:
    """A frame decoded by NVDEC; converted and copied to host memory when asked for."""

    __slots__ = ("_source", "_surface", "capture_ns", "height", "index", "pts", "time", "width")

    def __init__(self, source: NvdecSource, surface: Any, index: int, pts: int) -> None:
        self._source = source
        self._surface = surface
        self.width = source.width
        self.height = source.height
        self.index = index
        self.pts = pts
        self.time: float | None = None if source.live else pts * source.time_base
        self.capture_ns = time.time_ns()

    def rgb(self, width: int | None = None, height: int | None = None) -> np.ndarray:
        """RGB24 pixels scaled on the GPU, in a pinned host buffer reused per size: valid
        until the next call."""
        if width is None or height is None:
            width, height = self._source.options.output_size(self.width, self.height)
        return self._source.to_host(self._surface, width, height)


class NvdecSource:
    """One camera decoded by NVDEC."""

    def __init__(
        self,
        camera: CameraConfig,
        demuxer: Any,
        decoder: Any,
        live: bool,
        gpu: int,
        options: SourceOptions,
    ) -> None:
        import torch

        self.camera = camera
        self.demuxer = demuxer
        self.decoder = decoder
        self.live = live
        self.gpu = gpu
        self.options = options
        self.width = int(demuxer.Width())
        self.height = int(demuxer.Height())
        fps = float(demuxer.FrameRate() or 0.0)
        self.time_base = 1.0 / fps if fps > 0 else 1.0 / 30.0
        self.description = f"nvdec gpu{gpu} {self.width}x{self.height}"
        self.where = redact_url(camera.source)
        self._torch = torch
        self._device = torch.device("cuda", gpu)
        stream_type: Any = torch.cuda.Stream  # untyped in some torch builds
        self._stream = stream_type(device=self._device)
        self._pinned: dict[tuple[int, int], Any] = {}

    @classmethod
    def open(
        cls, camera: CameraConfig, options: SourceOptions = DEFAULT_OPTIONS, gpu: int = 0
    ) -> NvdecSource:
        """Open the camera on GPU ``gpu``; SourceError with a plain reason."""
        where = redact_url(camera.source)
        try:
            import PyNvVideoCodec as nvc  # noqa: N813
            import torch  # noqa: F401
        except ImportError as err:
            raise SourceError(
                f"camera {camera.id}: decoder nvdec needs the gpu extra "
                f"(pip install 'itsd[gpu]'): {err}"
            ) from None
        if not gpu_decode_available():
            raise SourceError(f"camera {camera.id}: decoder nvdec: no CUDA device is visible")
        url = resolve_source(camera.source).removeprefix("file://")
        live = camera.live
        try:
            demuxer = nvc.CreateDemuxer(filename=url)
            decoder = nvc.CreateDecoder(
                gpuid=gpu, codec=demuxer.GetNvCodecId(), usedevicememory=True
            )
        except Exception as err:  # PyNvVideoCodec raises plain exceptions
            reason = redact_text(str(err)) or type(err).__name__
            raise SourceError(
                f"camera {camera.id}: cannot open {where} on NVDEC: {reason}"
            ) from None
        return cls(camera, demuxer, decoder, live, gpu, options)

    def to_host(self, surface: Any, width: int, height: int) -> np.ndarray:
        """Convert and scale ``surface`` on the GPU, copy it to pinned host memory."""
        torch = self._torch
        with torch.cuda.stream(self._stream):
            nv12 = torch.from_dlpack(surface)
            if nv12.dim() == 3:  # (H*3/2, W, 1)
                nv12 = nv12[..., 0]
            rgb = nv12_to_rgb(nv12, width, height)
            out = self._pinned.get((width, height))
            if out is None:
                out = torch.empty((height, width, 3), dtype=torch.uint8, pin_memory=True)
                self._pinned[(width, height)] = out
            out.copy_(rgb, non_blocking=True)
        self._stream.synchronize()
        # A view of the pinned buffer: valid until the next frame's rgb() (the decode
        # loop copies it into the ring before asking for the next one).
        return out.numpy()  # type: ignore[no-any-return]

    def frames(self, stats: dict[str, int]) -> Iterator[NvdecFrame]:
        """Decoded frames until the stream ends; failed packets counted in ``stats``."""
        index = 0
        errors = 0
        for packet in self.demuxer:
            try:
                surfaces = self.decoder.Decode(packet)
                errors = 0
            except Exception as err:
                errors += 1
                stats["corrupt"] = stats.get("corrupt", 0) + 1
                if errors >= MAX_DEMUX_ERRORS:
                    raise OSError(f"NVDEC failed {errors} times in a row: {err}") from None
                continue
            for surface in surfaces:
                pts = int(getattr(surface, "timestamp", 0) or 0)
                yield NvdecFrame(self, surface, index, pts)
                index += 1

    def close(self) -> None:
        """Release the decoder and the pinned buffers."""
        self.decoder = None
        self.demuxer = None
        self._pinned.clear()
