"""Log lines name the process role; the JSON format is one object per line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from itsd.logutil import setup_logging


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


def test_text_lines_carry_the_role(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", "decode:cam1")
    logging.getLogger("itsd.decode").info("opened %s", "x.mp4")
    err = capsys.readouterr().err
    assert "decode:cam1[" in err and "itsd.decode: opened x.mp4" in err


def test_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", "supervisor", "json")
    log = logging.getLogger("itsd.supervisor")
    log.warning("restarting %s", "infer")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("crashed")
    lines = capsys.readouterr().err.strip().splitlines()
    first, second = (json.loads(x) for x in lines)
    assert first["level"] == "WARNING" and first["role"] == "supervisor"
    assert first["msg"] == "restarting infer" and first["ts"].endswith("Z")
    assert "RuntimeError: boom" in second["exc"]


def test_level_filters(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("ERROR", "x")
    logging.getLogger("itsd").warning("hidden")
    assert capsys.readouterr().err == ""
