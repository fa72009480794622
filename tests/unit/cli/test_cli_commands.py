"""The command line without a running daemon: help, config check, stop/status refusals."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from itsd.cli import EXIT_NOT_RUNNING, main
from itsd.errors import EXIT_CONFIG

REPO = Path(__file__).resolve().parents[3]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_help_lists_commands() -> None:
    code, out = run("--help")
    assert code == 0
    for cmd in ("start", "stop", "status", "demo", "config", "streams", "models"):
        assert cmd in out


def test_start_help_has_the_launcher_flags() -> None:
    code, out = run("start", "--help")
    assert code == 0
    for flag in (
        "--config", "--model", "--gpus", "--port", "--kafka / --no-kafka", "--kafka-servers",
        "--prod", "--monitoring-port", "--confidence", "--iou", "--batch-size",
        "--max-batch-size", "--target-fps", "--no-tensorrt", "--precision", "--log-level",
        "--foreground / --daemon", "--pid-file",
    ):  # fmt: skip
        assert flag in out, flag


def test_config_check_ok() -> None:
    code, out = run("config", "check", str(REPO / "config" / "production.example.yaml"))
    assert code == 0
    assert "OK (2 camera(s)" in out


def test_config_check_names_the_typo(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("modle:\n  path: x.onnx\n")
    code, out = run("config", "check", str(p))
    assert code == EXIT_CONFIG
    assert "modle" in out and "unknown key" in out


def test_start_rejects_bad_flag_value(tmp_path: Path) -> None:
    code, out = run("start", "--batch-size", "-3", "--pid-file", str(tmp_path / "p"))
    assert code == EXIT_CONFIG
    assert "performance.batch_size" in out


def test_start_rejects_bad_gpus() -> None:
    code, out = run("start", "--gpus", "zero")
    assert code == 2
    assert "--gpus" in out


def test_stop_with_nothing_running(tmp_path: Path) -> None:
    code, out = run("stop", "--pid-file", str(tmp_path / "itsd.pid"))
    assert code == EXIT_NOT_RUNNING
    assert "not running" in out


def test_stop_with_stale_pid_file(tmp_path: Path) -> None:
    pid_file = tmp_path / "itsd.pid"
    pid_file.write_text("999999\n")
    code, _ = run("stop", "--pid-file", str(pid_file))
    assert code == EXIT_NOT_RUNNING


def test_status_with_nothing_running() -> None:
    code, out = run("status", "--target", "127.0.0.1:1", "--timeout", "0.5")
    assert code == EXIT_NOT_RUNNING
    assert "127.0.0.1:1" in out


def test_show_defaults_is_valid_yaml() -> None:
    import yaml

    from itsd.config import parse_config

    code, out = run("config", "show-defaults")
    assert code == 0
    parse_config(yaml.safe_load(out))
