"""One-problem configuration errors are one line; the demo keeps out of a daemon's files."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from itsd.cli import main
from itsd.config import default_pid_file
from itsd.demo import build_demo_config
from itsd.errors import EXIT_CONFIG


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n\x00", b"a: caf\xe9\n", b"x: [1,\n"])
def test_config_check_single_problem_is_one_line(tmp_path: Path, data: bytes) -> None:
    p = tmp_path / "c.yaml"
    p.write_bytes(data)
    result = CliRunner().invoke(main, ["config", "check", str(p)])
    assert result.exit_code == EXIT_CONFIG
    out = result.output.strip()
    assert out.startswith(f"itsd: invalid configuration: {p}: ")
    assert "\n" not in out
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_config_check_several_problems_are_listed(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("modle: 1\nservr: 2\n")
    result = CliRunner().invoke(main, ["config", "check", str(p)])
    assert result.exit_code == EXIT_CONFIG
    lines = result.output.strip().splitlines()
    assert lines[0] == "itsd: invalid configuration:"
    assert any("modle" in ln for ln in lines[1:]) and any("servr" in ln for ln in lines[1:])


def test_demo_has_its_own_pid_file(tmp_path: Path) -> None:
    cfg = build_demo_config(str(tmp_path / "clip.mp4"), "m.onnx", tmp_path / "e.jsonl", False, 0, 0)
    assert cfg.resolved_pid_file() != default_pid_file()
    other = build_demo_config(str(tmp_path / "b.mp4"), "m.onnx", tmp_path / "f.jsonl", True, 0, 0)
    assert other.resolved_pid_file() == cfg.resolved_pid_file()  # one per process
