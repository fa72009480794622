"""NVDEC on a real GPU: the shared clip decoded by NVDEC gives the frames PyAV gives.

Marked ``gpu``: skipped, saying why, where PyNvVideoCodec, a CUDA torch or a GPU is
missing (every machine without a GPU, CI's too). bench/gpu_check.sh runs it on a lent GPU.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from source_helpers import camera, looks_like_footage

from itsd.errors import SourceError
from itsd.sources import SourceOptions, open_source
from itsd.sources.nvdec import gpu_decode_available

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not gpu_decode_available(), reason="needs a GPU, PyNvVideoCodec and a CUDA torch"
    ),
]


def _pyav_frames(clip: Path, picks: set[int]) -> dict[int, np.ndarray]:
    out = {}
    with av.open(str(clip)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in picks:
                out[i] = np.asarray(frame.to_ndarray(format="rgb24"))
    return out


def test_nvdec_delivers_every_frame_with_the_pixels_pyav_gives(clip: Path) -> None:
    picks = {0, 100, 479}
    src = open_source(camera(str(clip)), SourceOptions(threads=1), "nvdec")
    got: dict[int, np.ndarray] = {}
    count = 0
    try:
        assert src.description.startswith("nvdec gpu0 640x360")
        for frame in src.frames({}):
            if frame.index in picks:
                got[frame.index] = frame.rgb(640, 360).copy()
            count += 1
    finally:
        src.close()
    assert count == 480
    ref = _pyav_frames(clip, picks)
    for i in sorted(picks):
        diff = np.abs(got[i].astype(np.int16) - ref[i].astype(np.int16))
        # Two BT.601 conversions (NVDEC NV12 on the GPU, libswscale): a few grey levels.
        assert diff.mean() < 4.0, f"frame {i}: mean difference {diff.mean():.2f}"
        assert looks_like_footage(got[i])


def test_nvdec_scales_on_the_gpu_to_the_ring_size(clip: Path) -> None:
    src = open_source(camera(str(clip)), SourceOptions(max_width=320, max_height=320), "nvdec")
    try:
        frame = next(iter(src.frames({})))
        assert frame.rgb().shape == (180, 320, 3)
    finally:
        src.close()


def test_nvdec_on_a_missing_file_says_which_camera(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"camera .*: cannot open .* on NVDEC"):
        open_source(camera(str(tmp_path / "none.mp4")), SourceOptions(), "nvdec")
