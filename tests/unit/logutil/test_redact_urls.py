"""itsd.redact: passwords, tokens and secret parameters out of URLs and free text."""

from __future__ import annotations

import pytest

from itsd.redact import MASK, redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://admin:secret@host/x", "rtsp://admin:***@host/x"),
        ("rtsp://token@host", "rtsp://***@host"),
        (
            "rtsp://admin:secret@10.0.0.5:554/Streaming/101",
            "rtsp://admin:***@10.0.0.5:554/Streaming/101",
        ),
        ("RTSPS://Admin:S3cret@Host:322/x", "RTSPS://Admin:***@Host:322/x"),
        ("http://u:p@example.com:8080", "http://u:***@example.com:8080"),
        # IPv6 hosts, with a zone id and a port
        ("rtsp://admin:secret@[2001:db8::1]:554/s", "rtsp://admin:***@[2001:db8::1]:554/s"),
        ("rtsp://admin:secret@[fe80::1%25eth0]/s", "rtsp://admin:***@[fe80::1%25eth0]/s"),
        ("rtsp://[2001:db8::1]:554/s", "rtsp://[2001:db8::1]:554/s"),
        ("rtsp://tok@[::1]", "rtsp://***@[::1]"),
        # '@' in the path is not a userinfo
        ("rtsp://host/live@main", "rtsp://host/live@main"),
        ("rtsp://host:554/a@b/c@d", "rtsp://host:554/a@b/c@d"),
        ("rtsp://u:p@host/a@b", "rtsp://u:***@host/a@b"),
        # colons and '@' inside the password
        ("rtsp://user:pa:ss@host", "rtsp://user:***@host"),
        ("rtsp://admin:p@ss@host/x", "rtsp://admin:***@host/x"),
        # percent-encoded passwords and users
        ("rtsp://admin:p%40ss%3Aw%2Fd@host/x", "rtsp://admin:***@host/x"),
        ("rtsp://ad%3Amin:pw@host/x", "rtsp://ad%3Amin:***@host/x"),
        ("rtsp://%61dmin@host", "rtsp://***@host"),
        # unencoded '/', '?', '#' in the password: hide up to the last '@'
        ("rtsp://admin:pa/ss@host/x", "rtsp://admin:***@host/x"),
        ("rtsp://admin:pa?ss@host/x", "rtsp://admin:***@host/x"),
        ("rtsp://admin:pa#ss@host/x", "rtsp://admin:***@host/x"),
        # a host missing: the "port" is a password
        ("rtsp://admin:secret", "rtsp://admin:***"),
        # empty password: nothing to hide
        ("rtsp://admin:@host/x", "rtsp://admin:@host/x"),
        # no scheme
        ("admin:secret@10.0.0.1:554/live", "admin:***@10.0.0.1:554/live"),
        ("//admin:secret@host/x", "//admin:***@host/x"),
        ("token@host/x", "***@host/x"),
        # nothing to hide
        ("rtsp://10.0.0.1:554/stream1", "rtsp://10.0.0.1:554/stream1"),
        ("/var/video/a@b.mp4", "/var/video/a@b.mp4"),
        ("clip.mp4", "clip.mp4"),
        ("sample:bikes", "sample:bikes"),
        ("", ""),
    ],
)
def test_userinfo(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h/x?token=abc&a=1", "http://h/x?token=***&a=1"),
        (
            "http://h/x?a=1&Password=p&PWD=q&passwd=r",
            "http://h/x?a=1&Password=***&PWD=***&passwd=***",
        ),
        ("http://h/?api_key=k&apiKey=k2&key=k3", "http://h/?api_key=***&apiKey=***&key=***"),
        ("http://h/?secret=s;auth=a", "http://h/?secret=***;auth=***"),
        (
            "https://b.s3.amazonaws.com/o?X-Amz-Credential=AK&X-Amz-Signature=ab12&X-Amz-Expires=60",
            "https://b.s3.amazonaws.com/o?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60",
        ),
        ("http://h/?sig=1&access_token=t", "http://h/?sig=***&access_token=***"),
        ("http://h/?pass%77ord=x", "http://h/?pass%77ord=***"),  # the name is decoded
        ("http://h/cb#access_token=t&state=s", "http://h/cb#access_token=***&state=s"),
        ("http://u:p@h/?token=t#frag", "http://u:***@h/?token=***#frag"),
        ("http://h/#section?token=t", "http://h/#section?token=***"),  # fragments too
        # names that merely contain a word are kept readable
        ("http://h/?keyframe=1&author=me&monkey=2", "http://h/?keyframe=1&author=me&monkey=***"),
        ("http://h/?token=", "http://h/?token="),
        ("http://h/?token", "http://h/?token"),
        ("/api/v1?token=abc", "/api/v1?token=***"),
    ],
)
def test_query_parameters(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redaction_is_idempotent() -> None:
    for url in ("rtsp://admin:secret@host/x?token=t", "rtsp://tok@host", "rtsp://a:pa/ss@h/x"):
        once = redact_url(url)
        assert redact_url(once) == once
        assert redact_text(once) == once


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[rtsp @ 0x55d] method DESCRIBE failed: rtsp://admin:secret@10.0.0.5:554/s: 401",
            "[rtsp @ 0x55d] method DESCRIBE failed: rtsp://admin:***@10.0.0.5:554/s: 401",
        ),
        (
            "ConnectionError('rtsp://admin:secret@h/x', 5)",
            "ConnectionError('rtsp://admin:***@h/x', 5)",
        ),
        (
            "['rtsp://a:b@h/x','rtsp://c:d@h2/y']",
            "['rtsp://a:***@h/x','rtsp://c:***@h2/y']",
        ),
        ('{"url": "rtsp://a:b@h/x", "n": 1}', '{"url": "rtsp://a:***@h/x", "n": 1}'),
        ("open <http://a:b@h>.", "open <http://a:***@h>."),
        ("(see rtsp://a:b@h/x).", "(see rtsp://a:***@h/x)."),
        ("see http://h/?token=t.", "see http://h/?token=***."),
        (
            "rtsp://a:b@h1 and rtsp://t@h2, rtsp://h3",
            "rtsp://a:***@h1 and rtsp://***@h2, rtsp://h3",
        ),
        (
            "connect admin:secret@10.0.0.1:554/live (try 2)",
            "connect admin:***@10.0.0.1:554/live (try 2)",
        ),
        ("rtsp://[2001:db8::1]:554/s?auth=z", "rtsp://[2001:db8::1]:554/s?auth=***"),
        # left alone: e-mail addresses, times, plain key=value text, URLs without secrets
        ("mail bob@example.com at 12:30, ratio a=b", "mail bob@example.com at 12:30, ratio a=b"),
        (
            "opened rtsp://10.0.0.1:554/stream1 in 0.2 s",
            "opened rtsp://10.0.0.1:554/stream1 in 0.2 s",
        ),
        ("no url here", "no url here"),
        ("", ""),
    ],
)
def test_free_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_secret_never_survives_in_many_shapes() -> None:
    secret = "Zq9secretX"
    shapes = [
        f"rtsp://admin:{secret}@cam/x",
        f"rtsp://{secret}@cam",
        f"http://cam/?password={secret}",
        f"error opening 'rtsp://u:{secret}@[::1]:8554/x': Connection refused",
        f"u:{secret}@cam:554",
        f"rtsp://u:{secret}:more@cam",
        f"rtsp://u:{secret}/x@cam/y",
    ]
    for text in shapes:
        out = redact_text(text)
        assert secret not in out, (text, out)
        assert MASK in out
