"""A configuration file that is not UTF-8 text gives one clear line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from itsd.config import load_config
from itsd.errors import EXIT_CONFIG, ConfigError


def load_bytes(tmp_path: Path, data: bytes) -> str:
    p = tmp_path / "itsd.yaml"
    p.write_bytes(data)
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert ei.value.exit_code == EXIT_CONFIG
    msg = str(ei.value)
    assert msg.startswith(f"{p}: ") and "\n" not in msg
    return msg[len(f"{p}: ") :]


@pytest.mark.parametrize(
    ("data", "at"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", 0),
        (b"server:\n  grpc_bind: caf\xe9\n", 24),  # Latin-1
        (b"\xff\xfes\x00e\x00", 0),  # UTF-16 with its byte order mark
        (b"a: \xe2\x82", 3),  # truncated multi-byte sequence
    ],
)
def test_invalid_utf8(tmp_path: Path, data: bytes, at: int) -> None:
    assert load_bytes(tmp_path, data) == f"not a text file (invalid UTF-8 at byte {at})"


def test_nul_bytes(tmp_path: Path) -> None:
    assert load_bytes(tmp_path, b"server:\n\x00\x00") == "not a text file (NUL byte at byte 8)"


def test_elf_like_binary(tmp_path: Path) -> None:
    assert load_bytes(tmp_path, b"\x7fELF\x02\x01\x01\x00" + bytes(range(256))).startswith(
        "not a text file ("
    )


def test_control_character_names_line_and_column(tmp_path: Path) -> None:
    msg = load_bytes(tmp_path, b"server:\n  grpc_bind: a\x07b\n")
    assert msg.startswith("invalid YAML: line 2, column 15: character #x0007 is not allowed")


def test_utf8_text_and_bom_are_fine(tmp_path: Path) -> None:
    p = tmp_path / "itsd.yaml"
    p.write_bytes("\ufeffcameras:\n  - id: a\n    source: café.mp4\n".encode())
    assert load_config(p).cameras[0].source == "café.mp4"


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_config(tmp_path)


def test_huge_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("itsd.config.MAX_CONFIG_BYTES", 64)
    assert load_bytes(tmp_path, b"#" * 65).endswith("not a configuration file")
