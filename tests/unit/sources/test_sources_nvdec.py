"""The NVDEC source's parts that run without a GPU: decoder choice, NV12 conversion, errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from itsd.config import CameraConfig
from itsd.errors import SourceError
from itsd.sources import open_source
from itsd.sources.nvdec import choose_decoder, gpu_decode_available


@pytest.mark.parametrize(
    ("setting", "in_use", "limit", "available", "expected"),
    [
        ("cpu", 0, 0, True, "cpu"),
        ("nvdec", 0, 0, False, "nvdec"),  # asked for: the open says what is missing
        ("auto", 0, 0, False, "cpu"),
        ("auto", 5, 0, True, "nvdec"),  # no limit
        ("auto", 3, 4, True, "nvdec"),
        ("auto", 4, 4, True, "cpu"),  # the split: past the limit, CPU threads decode
    ],
)
def test_choose_decoder(
    setting: str, in_use: int, limit: int, available: bool, expected: str
) -> None:
    assert choose_decoder(setting, in_use, limit, available) == expected


def test_nv12_to_rgb_matches_opencv() -> None:
    torch = pytest.importorskip("torch")
    from itsd.sources.nvdec import nv12_to_rgb

    rng = np.random.default_rng(3)
    h, w = 48, 64
    # A smooth picture, so chroma subsampling does not dominate the comparison.
    yy, xx = np.mgrid[0:h, 0:w]
    bgr = np.stack([(xx * 4) % 256, (yy * 5) % 256, ((xx + yy) * 2) % 256], -1).astype(np.uint8)
    bgr = cv2.GaussianBlur(bgr, (5, 5), 0)
    nv12 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)  # planar: Y, then U, then V
    y = nv12[:h]
    u = nv12[h : h + h // 4].reshape(h // 2, w // 2)
    v = nv12[h + h // 4 :].reshape(h // 2, w // 2)
    semi = np.concatenate([y, np.stack([u, v], -1).reshape(h // 2, w)], 0)
    want = cv2.cvtColor(semi, cv2.COLOR_YUV2RGB_NV12)
    got = nv12_to_rgb(torch.from_numpy(semi), w, h).numpy()
    assert got.shape == (h, w, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - want.astype(int)).mean() < 2.0
    scaled = nv12_to_rgb(torch.from_numpy(semi + rng.integers(0, 1, semi.shape, np.uint8)), 32, 24)
    assert scaled.shape == (24, 32, 3)


def test_nvdec_without_a_gpu_says_what_is_missing(tmp_path: object) -> None:
    if gpu_decode_available():
        pytest.skip("a GPU is present: the GPU check covers this source")
    cam = CameraConfig(id="g", source="/no/such.mp4", decoder="nvdec")
    with pytest.raises(
        SourceError, match=r"camera g: decoder nvdec (needs the gpu extra|: no CUDA)"
    ):
        open_source(cam, decoder="nvdec")
