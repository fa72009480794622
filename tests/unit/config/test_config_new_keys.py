"""state_dir, supervisor.max_cameras and the camera source check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from itsd.config import Config, parse_config
from itsd.errors import ConfigError

CAMERA = {"id": "a", "source": "x.mp4"}


def test_state_dir_given() -> None:
    assert Config(state_dir=Path("/srv/itsd")).resolved_state_dir() == Path("/srv/itsd")


def test_state_dir_beside_the_pid_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    c = Config(pid_file=Path("/run/user/1000/itsd.pid"))
    assert c.resolved_state_dir() == Path("/run/user/1000/itsd.state")
    assert Config().resolved_pid_file() == Path("/tmp/itsd-1000.pid")
    assert Config().resolved_state_dir() == Path("/tmp/itsd-1000.state")


def test_state_dir_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert Config().resolved_state_dir() == Path("/var/lib/itsd")


def test_state_dir_from_yaml() -> None:
    assert parse_config({"state_dir": "/tmp/s"}).state_dir == Path("/tmp/s")


def test_max_cameras_bounds() -> None:
    assert Config().supervisor.max_cameras == 256
    for bad in (0, 4097):
        with pytest.raises(ConfigError, match=r"supervisor\.max_cameras"):
            parse_config({"supervisor": {"max_cameras": bad}})


def test_more_cameras_than_max_cameras() -> None:
    cams = [{**CAMERA, "id": f"c{i}"} for i in range(3)]
    with pytest.raises(ConfigError, match=r"3 cameras configured but supervisor\.max_cameras is 2"):
        parse_config({"supervisor": {"max_cameras": 2}, "cameras": cams})


@pytest.mark.parametrize("source", ["", "   ", "\t\n"])
def test_blank_source_is_refused(source: str) -> None:
    with pytest.raises(ConfigError, match=r"f\.yaml: cameras\[0\]\.source: "):
        parse_config({"cameras": [{**CAMERA, "source": source}]}, "f.yaml")
