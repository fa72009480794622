"""``itsd fleet`` and ``--fleet`` without a broker: everything is refused before Kafka."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from itsd.cli import main
from itsd.errors import EXIT_CONFIG


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_fleet_commands_are_listed() -> None:
    code, out = run("fleet", "--help")
    assert code == 0 and "apply" in out and "status" in out
    assert "--fleet" in run("streams", "add", "--help")[1]
    assert "--fleet" in run("streams", "remove", "--help")[1]


def test_apply_reports_every_problem_and_writes_nothing(tmp_path: Path) -> None:
    cams = tmp_path / "cams.yaml"
    cams.write_text(
        "cameras:\n"
        "  - {id: ok, source: 'pattern://moving'}\n"
        "  - {id: ok, source: 'pattern://moving'}\n"
        "  - {id: b, source: 'nope://x'}\n"
        "  - {id: c, source: 'pattern://moving', colour: red}\n"
    )
    # a broker nobody listens on: validation fails before any connection
    conf = tmp_path / "itsd.yaml"
    conf.write_text("fleet: {bootstrap_servers: '127.0.0.1:9'}\n")
    code, out = run("fleet", "apply", str(cams), "--config", str(conf))
    assert code == EXIT_CONFIG
    assert "nothing written" in out
    assert "cameras[1]: id: duplicate camera id 'ok'" in out
    assert "cameras[2]: source: unsupported scheme 'nope'" in out
    assert "cameras[3]: colour: unknown key" in out


def test_apply_refuses_a_file_without_cameras(tmp_path: Path) -> None:
    cams = tmp_path / "cams.yaml"
    cams.write_text("cameras: 3\n")
    code, out = run("fleet", "apply", str(cams))
    assert code == EXIT_CONFIG and "expected a list of cameras" in out


def test_streams_add_fleet_validates_first(tmp_path: Path) -> None:
    conf = tmp_path / "itsd.yaml"
    conf.write_text("fleet: {bootstrap_servers: '127.0.0.1:9'}\n")
    code, out = run("streams", "add", "cam", "/no/such/clip.mp4", "--fleet", "--config", str(conf))
    assert code == EXIT_CONFIG and "no such file" in out
