"""Generate the README's configuration table from the field descriptions of itsd.config.

    python tools/config_table.py          # rewrite the table between the markers in README.md
    python tools/config_table.py --check  # exit 1 if README.md is out of date

The table is never edited by hand: change the description in itsd/config.py instead.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

from itsd.config import Config, GroundPoint, Point, not_yet_available_reason

README = Path(__file__).resolve().parent.parent / "README.md"
START = "<!-- config-table:start -->"
END = "<!-- config-table:end -->"


#: Types shown by what one writes in YAML rather than by their Python spelling.
_KNOWN: list[tuple[Any, str]] = [
    (Point, "[x, y]"),
    (GroundPoint, "[x, y] in metres"),
]
_SCALARS: dict[Any, str] = {
    str: "str",
    int: "int",
    float: "float",
    bool: "bool",
    Path: "path",
    SecretStr: "str (secret)",
    type(None): "null",
}


def _type_name(ann: Any) -> str:
    """The YAML shape of a field type: ``[x, y]``, ``[int, ...]``, ``path | null``, ``{str: int}``.

    Raises TypeError for a type it has no words for, so the table never shows a Python repr.
    """
    for known, text in _KNOWN:
        if ann == known:
            return text
    if ann in _SCALARS:
        return _SCALARS[ann]
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann.__name__
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is typing.Literal:
        return " / ".join(str(a) for a in args)
    if origin is list:
        return f"[{_type_name(args[0])}, ...]"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"[{_type_name(args[0])}, ...]"
        return "[" + ", ".join(_type_name(a) for a in args) + "]"
    if origin is dict:
        return f"{{{_type_name(args[0])}: {_type_name(args[1])}}}"
    raise TypeError(f"tools/config_table.py: no YAML rendering for type {ann!r}; add one")


def _default(field: Any) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return ""
    else:
        return "required"
    if value is None:
        return "null"
    if value == "":
        return '`""`'
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)) and not value:
        return "[]" if isinstance(value, list) else "{}"
    return f"`{value}`"


def _nested(ann: Any) -> tuple[type[BaseModel], str] | None:
    """The model inside ``ann`` and the key suffix: ``X`` -> "", ``list[X]`` -> "[]"."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann, ""
    origin = typing.get_origin(ann)
    for arg in typing.get_args(ann):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg, "[]" if origin is list else ""
    return None


def rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        key = f"{prefix}{name}"
        nested = _nested(ann)
        if nested is not None and nested[1] == "" and field.default is PydanticUndefined:
            out.extend(rows(nested[0], f"{key}."))  # a section that always exists
            continue
        desc = field.description or ""
        reason = not_yet_available_reason(key)
        if reason is not None:
            desc = f"{desc} *Not available in this version ({reason}); refused when set.*"
        desc = desc.replace("|", "\\|")
        kind = _type_name(ann).replace("|", "\\|")
        out.append(f"| `{key}` | {kind} | {_default(field)} | {desc} |")
        if nested is not None:
            out.extend(rows(nested[0], f"{key}{nested[1]}."))
    return out


def table() -> str:
    head = "| key | type | default | description |\n| --- | --- | --- | --- |"
    return "\n".join([head, *rows(Config)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = README.read_text()
    if START not in text or END not in text:
        print(f"{README}: markers {START} / {END} missing", file=sys.stderr)
        return 1
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    new = f"{before}{START}\n{table()}\n{END}{after}"
    if args.check:
        if new != text:
            print("README.md configuration table is out of date: run tools/config_table.py")
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
