"""HTTP MJPEG cameras (multipart/x-mixed-replace) against a real test server."""

from __future__ import annotations

import time
from collections.abc import Callable

import av
import pytest
from source_helpers import camera, free_port, looks_like_footage, open_and_take

from itsd.errors import SourceError
from itsd.sources import SourceOptions, open_source


def test_mjpeg_camera_delivers_scaled_frames_of_the_clip(mjpeg_server: Callable[..., str]) -> None:
    host = mjpeg_server(user="admin", password="s3cret")
    opts = SourceOptions(max_width=320, max_height=320)
    frames, _stats, desc = open_and_take(f"http://admin:s3cret@{host}/video", 15, opts)
    assert "mjpeg 640x360" in desc
    assert len(frames) == 15
    for frame, pixels in frames:
        assert (frame.width, frame.height) == (640, 360)
        assert pixels.shape == (180, 320, 3)
        assert looks_like_footage(pixels)
        assert abs(frame.capture_ns / 1e9 - time.time()) < 60
    assert [f.index for f, _ in frames] == list(range(15))


def test_mjpeg_sampling_keeps_the_target_fps(mjpeg_server: Callable[..., str]) -> None:
    host = mjpeg_server(fps=25)
    frames, stats, _ = open_and_take(f"http://{host}/video", 6, SourceOptions(fps=5))
    assert len(frames) == 6
    assert stats["sampled_out"] >= 15  # about 4 of every 5 frames are never converted
    span = (frames[-1][0].capture_ns - frames[1][0].capture_ns) / 1e9
    assert 0.6 < span < 1.6  # 4 periods of 0.2 s


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://admin:wrong@{host}/video", "bad or missing credentials (401 Unauthorized)"),
        ("http://admin:s3cret@{host}/nope", "wrong path (404 Not Found)"),
        ("http://admin:s3cret@no-such-camera.invalid/video", "unknown host 'no-such-camera"),
        ("http://admin:s3cret@127.0.0.1:{closed}/video", "connection refused"),
    ],
)
def test_mjpeg_open_failures_say_why_without_the_password(
    mjpeg_server: Callable[..., str], url: str, reason: str
) -> None:
    host = mjpeg_server(user="admin", password="s3cret")
    with pytest.raises(SourceError) as err:
        open_source(camera(url.format(host=host, closed=free_port())))
    msg = str(err.value)
    assert reason in msg
    assert "camera cam1: cannot open http://admin:***@" in msg
    assert "s3cret" not in msg
    assert "admin:wrong" not in msg


def test_mjpeg_server_sending_garbage_fails_the_open(mjpeg_server: Callable[..., str]) -> None:
    host = mjpeg_server(mode="garbage")
    with pytest.raises(SourceError, match="not a video FFmpeg can read"):
        open_source(camera(f"http://{host}/video"))


def test_mjpeg_server_that_stalls_ends_the_stream_after_the_read_timeout(
    mjpeg_server: Callable[..., str],
) -> None:
    host = mjpeg_server(mode="stall")
    src = open_source(camera(f"http://{host}/video", open_timeout_s=1.5))
    got = 0
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"no data for 1.5 s \(stalled\)"):
        for _ in src.frames({}):
            got += 1
    src.close()
    assert 1 <= got <= 10
    assert time.monotonic() - t0 < 10


def test_mjpeg_server_that_turns_to_garbage_ends_the_stream_without_hanging(
    mjpeg_server: Callable[..., str],
) -> None:
    host = mjpeg_server(mode="turns-garbage")
    src = open_source(camera(f"http://{host}/video", open_timeout_s=2.0))
    stats: dict[str, int] = {}
    got = 0
    t0 = time.monotonic()
    try:
        for _ in src.frames(stats):
            got += 1
    except (OSError, av.error.FFmpegError):
        pass  # ending with an error is as good as ending: the decode loop reopens either way
    finally:
        src.close()
    assert got == 10
    assert stats.get("corrupt", 0) >= 1
    assert time.monotonic() - t0 < 10
