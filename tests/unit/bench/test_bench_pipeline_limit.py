"""The limits of bench/pipeline_bench.py: the prepared-frames loop and the one that also
decodes (``raw_all_cores(decode=True)``, the (a+d) of bench/max_cameras.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))

from pipeline_bench import _decoded_tensors, raw_all_cores

from itsd.engines.preprocess import letterbox_into, letterbox_params

CLIP = "street_overhead_dusk.mp4"


def test_decoded_tensors_are_the_letterboxed_frames_and_wrap_around(media_dir: Path) -> None:
    clip = media_dir / CLIP
    with av.open(str(clip)) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
        n = 1 + sum(1 for _ in c.decode(video=0))
    want = np.empty((1, 3, 320, 320), np.float32)
    letterbox_into(first, want[0], letterbox_params(first.shape[0], first.shape[1], 320, 320))
    tensor = np.empty((1, 3, 320, 320), np.float32)
    stream = _decoded_tensors(str(clip), tensor)
    assert next(stream) is tensor
    np.testing.assert_array_equal(tensor, want)
    for _ in range(n - 1):
        next(stream)
    np.testing.assert_array_equal(next(stream), want)  # frame n + 1 is the first again


def test_both_limits_count_frames_on_every_core(model_path: Path, media_dir: Path) -> None:
    clip = media_dir / CLIP
    assert raw_all_cores(model_path, clip, frames=4, seconds=0.5) > 0
    assert raw_all_cores(model_path, clip, frames=4, seconds=0.5, decode=True) > 0
