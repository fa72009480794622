"""Line totals and track ids that survive a restart: one small JSON file per camera.

``<state_dir>/totals/<camera id>.json`` holds, per counting line, the line's geometry and
its totals, and the end of the block of track ids the camera may hand out. On start the
analytics stage adds the saved totals to the lines whose geometry is unchanged (a moved
line counts afresh) and lets new tracks start after the reserved block, so a tracking
id is never given to another object after a restart or a crash. A block is reserved
(written to disk) before any id of it is used, so a crash never reuses one.

Files are written atomically (temporary file, fsync, rename). Totals are saved every
``SAVE_PERIOD_S`` while they change and when a camera stops, so a crash loses at most
that much counting; a daemon restart or a stage restart after a clean stop loses none.

``<state_dir>/scene/<camera id>.json`` holds the camera's open interval and raised
alerts (``Scene.to_state``), written every ``SAVE_PERIOD_S`` while they change (atomic
rename, no fsync: it guards against a crash of the stage, not of the machine), so a
restarted analytics process continues the interval (missing at most that much) and
clears the alerts it had raised.

This module reads and writes only these files; it must never import a stage, an
engine or a GPU library, and never draw.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("itsd.analyze")

VERSION = 1
ID_BLOCK = 1000  # track ids reserved per write
SAVE_PERIOD_S = 1.0
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")

#: One line's totals: direction -> class name -> count.
LineTotals = dict[str, dict[str, int]]


def line_signature(line: Any) -> list[Any]:
    """What must be unchanged for a line's saved totals to still apply."""
    classes = sorted(line.classes) if line.classes is not None else None
    return [list(line.start), list(line.end), getattr(line, "anchor", "center"), classes]


class TotalsStore:
    """The totals file of one camera."""

    def __init__(self, directory: Path, camera_id: str) -> None:
        self.path = directory / "totals" / f"{_SAFE.sub('_', camera_id)}.json"
        self.camera_id = camera_id
        self.reserved_until = 1
        self._last: str = ""

    def load(self) -> tuple[dict[str, tuple[list[Any], LineTotals]], int]:
        """Saved (signature, totals) per line id, and the first track id free to use."""
        try:
            obj = json.loads(self.path.read_text(encoding="utf-8"))
            if obj.get("version") != VERSION:
                raise ValueError(f"version {obj.get('version')!r}")
            lines = {
                str(k): (list(v["signature"]), dict(v["totals"]))
                for k, v in obj.get("lines", {}).items()
            }
            first = int(obj.get("track_ids_reserved_until", 1))
        except FileNotFoundError:
            return {}, 1
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            log.error(
                "camera %s: totals file %s unreadable (%s); counting starts from zero",
                self.camera_id,
                self.path,
                err,
            )
            return {}, 1
        return lines, first

    def save(self, lines: dict[str, tuple[list[Any], LineTotals]], reserved_until: int) -> None:
        """Write atomically when something changed; errors are logged, never raised."""
        self.reserved_until = reserved_until
        body = json.dumps(
            {
                "version": VERSION,
                "camera": self.camera_id,
                "track_ids_reserved_until": reserved_until,
                "lines": {k: {"signature": sig, "totals": tot} for k, (sig, tot) in lines.items()},
            },
            sort_keys=True,
        )
        if body == self._last:
            return
        try:
            _replace(self.path, body, durable=True)
            self._last = body
        except OSError as err:
            log.error("camera %s: cannot save totals to %s: %s", self.camera_id, self.path, err)

    def delete(self) -> None:
        """Forget the camera's totals (it was removed)."""
        with contextlib.suppress(OSError):
            self.path.unlink()


class SceneStore:
    """The scene file of one camera (open interval, raised alerts)."""

    def __init__(self, directory: Path, camera_id: str) -> None:
        self.path = directory / "scene" / f"{_SAFE.sub('_', camera_id)}.json"
        self.camera_id = camera_id
        self._last = ""
        self._warned = False

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None (none saved, or unreadable: logged)."""
        try:
            obj = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(obj, dict) or obj.get("version") != VERSION:
                raise ValueError("not a scene file of this version")
            state = obj.get("scene")
            return state if isinstance(state, dict) else None
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            log.error(
                "camera %s: scene file %s unreadable (%s); the interval starts afresh",
                self.camera_id,
                self.path,
                err,
            )
            return None

    def save(self, state: dict[str, Any]) -> None:
        """Write atomically when it changed; errors are logged once, never raised."""
        try:
            body = json.dumps(
                {"version": VERSION, "camera": self.camera_id, "scene": state},
                separators=(",", ":"),
                allow_nan=False,
            )
            if body == self._last:
                return
            _replace(self.path, body, durable=False)
            self._last = body
            self._warned = False
        except (OSError, ValueError, TypeError) as err:
            if not self._warned:
                self._warned = True
                log.error(
                    "camera %s: cannot save its scene to %s: %s", self.camera_id, self.path, err
                )

    def delete(self) -> None:
        """Forget the camera's scene (it was removed, or closed cleanly)."""
        with contextlib.suppress(OSError):
            self.path.unlink()
        self._last = ""


def _replace(path: Path, body: str, durable: bool) -> None:
    """Write ``body`` to ``path`` atomically (temporary file, rename); ``durable``: fsync
    first, so the file survives the machine's crash, not only the process's."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(body)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
