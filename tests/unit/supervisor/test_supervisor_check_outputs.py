"""``check_outputs``: an output that cannot be written is refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from itsd.config import Config
from itsd.errors import EXIT_CONFIG, ConfigError
from itsd.supervisor.core import check_outputs


def config(jsonl: Path | None) -> Config:
    return Config.model_validate({"outputs": {"jsonl_path": None if jsonl is None else str(jsonl)}})


def refused(jsonl: Path) -> str:
    with pytest.raises(ConfigError) as ei:
        check_outputs(config(jsonl))
    assert ei.value.exit_code == EXIT_CONFIG
    msg = str(ei.value)
    assert msg.startswith("outputs.jsonl_path: ") and str(jsonl) in msg and "\n" not in msg
    return msg


def test_directory(tmp_path: Path) -> None:
    assert refused(tmp_path).endswith("is a directory; name a file")


@pytest.mark.parametrize("depth", [1, 3])
def test_parent_is_a_regular_file(tmp_path: Path, depth: int) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    out = afile.joinpath(*["sub"] * (depth - 1), "events.jsonl")
    assert refused(out).endswith(f"{afile} is not a directory")
    assert afile.read_text() == "x"


def test_missing_folders_are_made_and_the_file_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "events.jsonl"
    check_outputs(config(out))
    assert out.is_file() and out.read_bytes() == b""
    out.write_bytes(b"kept\n")
    check_outputs(config(out))
    assert out.read_bytes() == b"kept\n"


def test_no_output(tmp_path: Path) -> None:
    check_outputs(config(None))
