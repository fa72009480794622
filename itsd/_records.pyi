"""Typed stub of the C extension ``itsd._records`` (see _records.c).

Only ``itsd.records`` imports this module.
"""

from typing import Any

def unpack_events(
    cls: type[Any], records: list[bytes], topics: tuple[Any, ...], kinds: tuple[Any, ...], /
) -> list[Any]: ...
