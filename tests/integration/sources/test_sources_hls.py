"""HLS sources: segments made with ffmpeg from a shared clip, served over HTTP."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import pytest
from source_helpers import camera, looks_like_footage, open_and_take

from itsd.errors import SourceError
from itsd.sources import SourceOptions, open_source


def test_hls_playlist_delivers_every_frame_sampled_to_the_target_fps(
    hls_server: Callable[[], str],
) -> None:
    host = hls_server()
    frames, stats, desc = open_and_take(
        f"http://{host}/index.m3u8", 1000, SourceOptions(fps=5, max_width=320, max_height=240)
    )
    assert "(hls)" in desc and "640x360" in desc
    # 480 frames at 23.976 fps are 20 s of video: 5 fps keeps 100, the rest are decoded only.
    assert 98 <= len(frames) <= 102, len(frames)
    assert len(frames) + stats["sampled_out"] == 480
    for _frame, pixels in frames[::10]:
        assert pixels.shape == (180, 320, 3)
        assert looks_like_footage(pixels)


def test_hls_wrong_playlist_path_says_so(hls_server: Callable[[], str]) -> None:
    host = hls_server()
    with pytest.raises(SourceError, match=r"cannot open http://127.0.0.1:\d+/nope.m3u8: wrong"):
        open_source(camera(f"http://{host}/nope.m3u8"))


def _pts_steps(url: str, behind_s: float, seconds: float = 3.0) -> tuple[set[int], dict[str, int]]:
    """Read ``url`` while spending 60 ms per frame (slower than its 24 fps) for ``seconds``;
    the pts steps between delivered frames and the source's counts."""
    src = open_source(camera(url), SourceOptions(behind_s=behind_s, threads=1))
    stats: dict[str, int] = {}
    pts: list[int] = []
    t0 = time.monotonic()
    for frame in src.frames(stats):
        pts.append(frame.pts)
        time.sleep(0.06)
        if time.monotonic() - t0 > seconds:
            break
    src.close()
    return {b - a for a, b in itertools.pairwise(pts)}, stats


def test_a_source_far_behind_skips_non_reference_frames(hls_server: Callable[[], str]) -> None:
    # The clip is H.264 High profile with B-frames; one frame is 3753.75 ticks of 90 kHz.
    url = f"http://{hls_server()}/index.m3u8"
    steps, stats = _pts_steps(url, behind_s=0.5)
    assert stats.get("behind", 0) >= 1
    assert max(steps) >= 7507  # non-reference frames were not decoded
    steps, stats = _pts_steps(url, behind_s=0.0)  # off: every frame decoded, however late
    assert "behind" not in stats
    assert max(steps) <= 3754
