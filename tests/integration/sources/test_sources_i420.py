"""I420 out of the PyAV source on real footage: the planes written into a real frame ring
slot give, once converted by the readers' helper, the picture ``rgb()`` gives."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from source_helpers import camera

from itsd.shm import FrameRing, new_run_id, segment_name
from itsd.shm.frame_pixels import to_rgb
from itsd.shm.frame_ring import PIXEL_FORMAT_I420
from itsd.sources import I420Frame, SourceOptions, open_source


@pytest.fixture
def ring() -> Iterator[FrameRing]:
    r = FrameRing.create(
        segment_name(new_run_id(), "frame", "i420"),
        camera_key=1,
        slot_count=3,
        max_width=640,
        max_height=360,
    )
    yield r
    r.close()
    r.unlink()


def _close(a: np.ndarray, b: np.ndarray, mean: float, worst: int) -> None:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.mean() < mean and diff.max() <= worst, (diff.mean(), diff.max())


@pytest.mark.parametrize(
    ("opts", "size"),
    [
        (SourceOptions(threads=1), (640, 360)),
        (SourceOptions(threads=1, max_width=320, max_height=320), (320, 180)),
    ],
)
def test_i420_into_a_ring_slot_matches_rgb(
    clip: Path, ring: FrameRing, opts: SourceOptions, size: tuple[int, int]
) -> None:
    src = open_source(camera(str(clip)), opts)
    try:
        n = 0
        for frame in src.frames({}):
            assert isinstance(frame, I420Frame)
            assert frame.i420_size() == size
            ws = ring.begin_write(*size, PIXEL_FORMAT_I420)
            assert ws is not None
            frame.i420_into(ws.pixels)
            ws.commit(frame_id=n, capture_ts_ns=frame.capture_ns, pts=frame.pts)
            with ring.acquire_newest() as slot:  # type: ignore[union-attr]
                assert slot.pixel_format == PIXEL_FORMAT_I420
                assert (slot.width, slot.height) == size
                # libswscale's RGB and OpenCV's from the same planes: BT.601 both.
                _close(to_rgb(slot.pixels, slot.pixel_format), frame.rgb(), 1.5, 6)
            n += 1
            if n == 5:
                break
        assert n == 5
    finally:
        src.close()


def test_full_range_mjpeg_goes_through_libswscale_to_i420(clip: Path, tmp_path: Path) -> None:
    mjpeg = tmp_path / "cam.avi"
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-y", "-i", str(clip), "-frames:v", "3"),
            *("-c:v", "mjpeg", "-pix_fmt", "yuvj420p", "-q:v", "3", str(mjpeg)),
        ],
        check=True,
    )
    src = open_source(camera(str(mjpeg)), SourceOptions(threads=1))
    try:
        frame = next(iter(src.frames({})))
        assert isinstance(frame, I420Frame) and frame.i420_size() == (640, 360)
        out = np.empty((540, 640), np.uint8)
        frame.i420_into(out)  # yuvj420p (full range) -> yuv420p (limited) by libswscale
        _close(to_rgb(out, PIXEL_FORMAT_I420), frame.rgb(), 2.0, 12)
    finally:
        src.close()
