"""RTSP over TCP and over UDP against GStreamer's RTSP server (a shared clip, real time)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from source_helpers import camera, looks_like_footage, open_and_take

from itsd.errors import SourceError
from itsd.sources import SourceOptions, open_source


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_delivers_frames_over_each_transport(
    rtsp_server: Callable[[], str], transport: str
) -> None:
    host = rtsp_server()
    frames, _stats, desc = open_and_take(
        f"rtsp://{host}/stream", 10, SourceOptions(threads=1), rtsp_transport=transport
    )
    assert desc.startswith("h264 640x360 (rtsp)")
    assert len(frames) == 10
    assert all(looks_like_footage(p) and p.shape == (360, 640, 3) for _, p in frames)


def test_rtsp_wrong_path_says_so_without_the_password(rtsp_server: Callable[[], str]) -> None:
    host = rtsp_server()
    with pytest.raises(SourceError) as err:
        open_source(camera(f"rtsp://admin:s3cret@{host}/nope"))
    assert "rtsp://admin:***@" in str(err.value) and "wrong path (404" in str(err.value)
    assert "s3cret" not in str(err.value)
