"""The configuration table shows types as one writes them in YAML, never Python reprs."""

from __future__ import annotations

import importlib.util
import typing
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal

import pytest
from pydantic import Field

from itsd.config import CameraConfig, GroundPoint, Point

REPO = Path(__file__).resolve().parents[3]


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("config_table", REPO / "tools/config_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


def readme_table() -> str:
    text = (REPO / "README.md").read_text()
    return text.split(tool.START, 1)[1].split(tool.END, 1)[0]


def row(key: str) -> list[str]:
    for line in readme_table().splitlines():
        if line.startswith(f"| `{key}` |"):
            return [c.strip() for c in line.replace("\\|", "\0").split("|")[1:-1]]
    raise AssertionError(f"no row for {key}")


@pytest.mark.parametrize(
    "text", ["Annotated", "FieldInfo", "typing.", "metadata=", "NoneType", "tuple[", "<class"]
)
def test_no_python_reprs(text: str) -> None:
    assert text not in readme_table()
    assert text not in tool.table()


@pytest.mark.parametrize(
    ("ann", "expected"),
    [
        (Point, "[x, y]"),
        (GroundPoint, "[x, y] in metres"),
        (list[Point], "[[x, y], ...]"),
        (list[GroundPoint], "[[x, y] in metres, ...]"),
        (Path | None, "path | null"),
        (list[int] | None, "[int, ...] | null"),
        (dict[str, str | int], "{str: str | int}"),
        (dict[str, list[int]], "{str: [int, ...]}"),
        (CameraConfig | None, "CameraConfig | null"),
        (list[CameraConfig], "[CameraConfig, ...]"),
        (Literal["a", "b"], "a / b"),
        (Annotated[int, Field(ge=0)], "int"),
        (tuple[int, str], "[int, str]"),
        (tuple[int, ...], "[int, ...]"),
        (typing.Optional[int], "int | null"),  # noqa: UP045 (the old spelling must work too)
    ],
)
def test_type_names(ann: Any, expected: str) -> None:
    assert tool._type_name(ann) == expected


def test_unknown_type_is_an_error_not_a_repr() -> None:
    with pytest.raises(TypeError, match="no YAML rendering"):
        tool._type_name(set[int])


def test_rows_in_the_readme() -> None:
    assert row("cameras[].lines[].start")[1] == "[x, y]"
    assert row("cameras[].zones[].polygon")[1] == "[[x, y], ...]"
    assert row("cameras[].calibration.world_points")[1] == "[[x, y] in metres, ...]"
    assert row("pid_file")[1] == "path \0 null"
    assert row("kafka.producer")[1] == "{str: str \0 int \0 float \0 bool}"
    assert row("cameras")[1] == "[CameraConfig, ...]"
    assert row("supervisor.max_cameras")[2] == "`256`"


def test_unavailable_keys_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from itsd.config import NOT_YET_AVAILABLE

    monkeypatch.setitem(NOT_YET_AVAILABLE, "model.tensorrt", "stand-in reason")
    line = next(x for x in tool.table().splitlines() if x.startswith("| `model.tensorrt` |"))
    assert "Not available in this version (stand-in reason); refused when set." in line
    assert "Not available" not in row("model.tensorrt")[3]  # every key is available now
    assert "Not available" not in row("kafka.topic_prefix")[3]
    assert "Not available" not in row("kafka.enabled")[3]
    assert "Not available" not in row("performance.max_batch_size")[3]
