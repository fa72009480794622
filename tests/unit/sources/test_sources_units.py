"""Units of the sources package: options, sampling, sizes, error words, WHEP URLs."""

from __future__ import annotations

import sys

import av
import pytest

from itsd.config import CameraConfig
from itsd.errors import SourceError
from itsd.sources import (
    DEFAULT_OPTIONS,
    Sampler,
    SourceOptions,
    fit_within,
    open_source,
)
from itsd.sources.pyav import describe_error
from itsd.sources.webrtc import split_whep_url


def test_fit_within_keeps_aspect_and_even_sizes() -> None:
    assert fit_within(1920, 1080, 640, 640) == (640, 360)
    assert fit_within(640, 360, 1920, 1080) == (640, 360)  # never scaled up
    assert fit_within(1280, 720, 300, 300) == (300, 168)
    assert fit_within(1000, 10, 101, 101) == (100, 2)


def test_options_output_size_and_defaults() -> None:
    assert DEFAULT_OPTIONS.output_size(1920, 1080) == (1920, 1080)
    assert SourceOptions(max_width=640).output_size(1920, 1080) == (640, 360)
    assert SourceOptions(max_width=640, max_height=640).output_size(1080, 1920) == (360, 640)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"interpolation": "NEAREST"}, "interpolation must be one of"),
        ({"fps": 0}, "fps must be in"),
        ({"max_width": 1}, "max_width must be at least 2"),
        ({"threads": -1}, "must not be negative"),
    ],
)
def test_options_refuse_bad_values(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SourceOptions(**kw)  # type: ignore[arg-type]


def test_sampler_keeps_the_target_rate_on_stream_time() -> None:
    s = Sampler(5.0)
    kept = [i for i in range(300) if s.keep(i / 30.0)]  # 10 s at 30 fps
    assert len(kept) == 50
    assert kept[:4] == [0, 6, 12, 18]


def test_sampler_without_fps_keeps_everything_and_restarts_on_a_jump() -> None:
    assert all(Sampler(None).keep(i / 30) for i in range(100))
    s = Sampler(1.0)
    assert s.keep(10.0) and not s.keep(10.5)
    assert s.keep(0.0)  # time went back (a loop): the schedule starts afresh
    assert s.keep(100.0)  # ... and jumped far ahead: again
    assert not s.keep(100.2)


def test_sampler_lag_grows_only_when_frames_arrive_late() -> None:
    s = Sampler(None)
    # A burst (stream time runs ahead of arrival), then real time: no lag.
    assert s.lag(0.0, 100.0) == 0.0
    assert s.lag(1.0, 100.01) == 0.0
    assert s.lag(2.0, 101.01) == pytest.approx(0.0)
    # The decoder falls behind: frame at stream time 3 decoded 1.5 s late.
    assert s.lag(3.0, 103.51) == pytest.approx(1.5)


def test_errors_in_words() -> None:
    refused = av.error.ConnectionRefusedError(111, "Connection refused", "rtsp://a:b@h:401/x")
    assert (
        describe_error(refused, 5) == "connection refused (nothing listens at that host and port)"
    )
    assert describe_error(av.error.HTTPNotFoundError(-1, "Server returned 404 Not Found"), 5) == (
        "wrong path (404 Not Found)"
    )
    assert "401" in describe_error(av.error.HTTPUnauthorizedError(-1, "Server returned 401"), 5)
    assert describe_error(av.error.ExitError(-1, "Immediate exit requested"), 2.5) == (
        "no answer within 2.5 s"
    )
    assert "invalid data" in describe_error(av.error.InvalidDataError(-1, "Invalid data"), 5)
    text = describe_error(OSError(5, "failed for rtsp://admin:secret@cam/x"), 5)
    assert "secret" not in text and "admin:***@" in text


def test_whep_url_credentials_become_the_authorization_header() -> None:
    assert split_whep_url("whep+http://cam:8080/whep") == ("http://cam:8080/whep", None)
    assert split_whep_url("whep+https://tok%2Fx@cam/w?s=1") == ("https://cam/w?s=1", "Bearer tok/x")
    url, auth = split_whep_url("whep+http://admin:pw@[::1]:9/w")
    assert url == "http://[::1]:9/w" and auth == "Basic YWRtaW46cHc="


def test_whep_without_aiortc_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiortc", None)  # import aiortc raises ImportError
    cam = CameraConfig(id="w1", source="whep+http://tok@127.0.0.1:9/whep")
    with pytest.raises(SourceError) as err:
        open_source(cam)
    msg = str(err.value)
    assert "camera w1: cannot open whep+http://***@127.0.0.1:9/whep" in msg
    assert "pip install 'itsd[webrtc]'" in msg


def test_pattern_source_honours_the_options() -> None:
    cam = CameraConfig(id="p1", source="pattern://moving?width=640&height=480&fps=20&frames=40")
    src = open_source(cam, SourceOptions(fps=5, max_width=320, max_height=320))
    stats: dict[str, int] = {}
    frames = list(src.frames(stats))
    assert [f.index for f in frames] == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36]
    assert stats["sampled_out"] == 30
    assert frames[0].rgb().shape == (240, 320, 3)
    assert frames[0].rgb(640, 480).shape == (480, 640, 3)
    assert frames[0].capture_ns > 0


def test_every_scheme_listed_is_one_a_source_opens() -> None:
    from itsd.sources import SCHEMES

    assert {"rtsp", "http", "https", "whep+http", "whep+https", "pattern", "file"} <= set(SCHEMES)
    assert all(s == s.lower() and "://" not in s for s in SCHEMES)
