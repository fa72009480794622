"""RTSP over TCP and over UDP against GStreamer's RTSP server (a shared clip, real time)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from source_helpers import camera, looks_like_footage, open_and_take

from itsd.errors import SourceError
from itsd.sources import SourceOptions, open_source


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_delivers_frames_over_each_transport(
    rtsp_server: Callable[..., str], transport: str
) -> None:
    host = rtsp_server()
    frames, _stats, desc = open_and_take(
        f"rtsp://{host}/stream", 10, SourceOptions(threads=1), rtsp_transport=transport
    )
    assert desc.startswith("h264 640x360 (rtsp)")
    assert len(frames) == 10
    assert all(looks_like_footage(p) and p.shape == (360, 640, 3) for _, p in frames)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("rtsp://admin:s3cret@{host}/nope", "wrong path (404 Not Found)"),
        ("rtsp://admin:wrong@{host}/stream", "bad or missing credentials (401 Unauthorized)"),
        ("rtsp://{host}/stream", "bad or missing credentials (401 Unauthorized)"),
    ],
)
def test_rtsp_open_failures_say_why_without_the_password(
    rtsp_server: Callable[..., str], url: str, reason: str
) -> None:
    host = rtsp_server(user="admin", password="s3cret")
    with pytest.raises(SourceError) as err:
        open_source(camera(url.format(host=host)))
    msg = str(err.value)
    assert reason in msg, msg
    assert "s3cret" not in msg and "admin:wrong" not in msg


def test_rtsp_with_the_right_login_delivers_frames(rtsp_server: Callable[..., str]) -> None:
    host = rtsp_server(user="admin", password="s3cret")
    frames, _, _ = open_and_take(f"rtsp://admin:s3cret@{host}/stream", 3)
    assert len(frames) == 3 and looks_like_footage(frames[-1][1])
