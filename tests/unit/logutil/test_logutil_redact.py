"""No log line carries a credential, in either format, whatever the record holds."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from itsd.logutil import setup_logging

URL = "rtsp://admin:s3cr3t@10.0.0.5:554/Streaming/101?token=tok123"
SECRETS = ("s3cr3t", "tok123")


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def emit_all(log: logging.Logger) -> None:
    log.info("opening %s", URL)  # in the arguments
    log.warning(f"camera failed: {URL}: 401 Unauthorized")  # in the message itself
    log.error("%s", ConnectionError(f"error opening '{URL}'"))  # an object's str()
    try:
        raise OSError(f"[rtsp @ 0x55] {URL}: Connection refused")
    except OSError:
        log.exception("decode crashed")  # in the traceback
    log.info("stack", stack_info=True, extra={"u": URL})
    log.info("bad args %d", URL)  # arguments that do not fit the format


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_secret_in_any_line(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", "decode:cam1", fmt)
    emit_all(logging.getLogger("itsd.decode"))
    err = capsys.readouterr().err
    for secret in SECRETS:
        assert secret not in err
    assert err.count("rtsp://admin:***@10.0.0.5:554/Streaming/101?token=***") >= 5
    if fmt == "json":
        objs = [json.loads(line) for line in err.strip().splitlines()]
        assert objs[0]["msg"] == "opening rtsp://admin:***@10.0.0.5:554/Streaming/101?token=***"
        assert any("OSError: [rtsp @ 0x55]" in o.get("exc", "") for o in objs)
        assert any("stack" in o for o in objs)


def test_plain_messages_are_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", "x")
    logging.getLogger("itsd").info("100%% done: %d frames, a=b, mail bob@example.com", 5)
    assert "itsd: 100% done: 5 frames, a=b, mail bob@example.com" in capsys.readouterr().err


def test_other_handlers_see_the_redacted_record(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", "x")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    keep = Keep()
    logging.getLogger().addHandler(keep)
    logging.getLogger("itsd").info("opening %s", URL)
    assert seen and "s3cr3t" not in seen[0]
    capsys.readouterr()
