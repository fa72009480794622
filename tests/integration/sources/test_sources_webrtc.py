"""WebRTC WHEP pull against a real aiortc peer sending a shared clip."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import pytest
from source_helpers import camera, looks_like_footage, open_and_take

from itsd.errors import SourceError
from itsd.sources import SourceOptions, open_source


def test_whep_source_delivers_frames_of_the_clip(whep_server: Callable[..., str]) -> None:
    host = whep_server(token="tok123")
    frames, _stats, desc = open_and_take(
        f"whep+http://tok123@{host}/whep", 20, SourceOptions(max_width=320, max_height=320)
    )
    assert desc == "webrtc (whep)"
    assert len(frames) == 20
    for frame, pixels in frames:
        assert (frame.width, frame.height) == (640, 360)
        assert pixels.shape == (180, 320, 3)
    assert looks_like_footage(frames[-1][1])
    assert frames[-1][0].capture_ns > frames[0][0].capture_ns
    assert frames[-1][0].pts > frames[0][0].pts


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("whep+http://bad@{host}/whep", "bad or missing credentials (401 Unauthorized)"),
        ("whep+http://tok123@{host}/nope", "wrong path (404 Not Found)"),
        ("whep+http://tok123@no-such-camera.invalid/whep", "unknown host"),
    ],
)
def test_whep_open_failures_say_why_without_the_token(
    whep_server: Callable[..., str], url: str, reason: str
) -> None:
    host = whep_server(token="tok123")
    with pytest.raises(SourceError) as err:
        open_source(camera(url.format(host=host)))
    msg = str(err.value)
    assert reason in msg, msg
    assert "cannot open whep+http://***@" in msg
    assert "tok123" not in msg


def test_whep_peer_that_goes_away_ends_the_stream_within_the_read_timeout(
    whep_server: Callable[..., str], servers: list[subprocess.Popen[str]]
) -> None:
    host = whep_server()
    src = open_source(camera(f"whep+http://{host}/whep", open_timeout_s=2.0))
    got = 0
    t_kill = 0.0
    with pytest.raises(TimeoutError, match=r"no frame for 2 s \(stalled\)"):
        for _ in src.frames({}):
            got += 1
            if got == 5:
                servers[-1].kill()  # the peer vanishes without a goodbye
                t_kill = time.monotonic()
    src.close()
    assert got >= 5
    assert time.monotonic() - t_kill < 8
