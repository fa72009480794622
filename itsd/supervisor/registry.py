"""Cameras registered at run time, kept on disk, and how they merge with the config file.

The state file (``<state_dir>/cameras.json``) holds two things:

* ``registered``: cameras added at run time (gRPC ``RegisterStream``, ``itsd streams
  add``), each a full ``cameras:`` entry;
* ``removed``: ids of cameras of the configuration file removed at run time.

The merge rule, applied at start and on every reload:

    cameras in effect = (cameras of the file, minus ``removed``) + ``registered``

A camera registered at run time whose id the file also names is dropped from
``registered`` with a warning: the file wins, so an edited file is never silently
shadowed. Registering an id listed in ``removed`` takes it off that list. Removing a
registered camera deletes its entry; removing a file camera adds its id to ``removed``
(put it back by registering it again, or by deleting the state file).

The file is written atomically (a temporary file in the same directory, fsync, rename,
fsync of the directory), so a crash leaves the old or the new state, never half of one.
It is readable by its owner only (mode 0600): a camera URL may carry a password.

This module must never import a stage; it reads and writes only the state file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from itsd.config import CameraConfig, format_validation_error
from itsd.errors import ConfigError

log = logging.getLogger("itsd.supervisor")

STATE_VERSION = 1


@dataclass
class Registrations:
    """What the state file holds."""

    registered: dict[str, dict[str, Any]] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)


class RegistryStore:
    """Reads and atomically writes the state file of run-time registrations."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "cameras.json"

    def load(self) -> Registrations:
        """The saved registrations; empty when there is no file.

        ConfigError (with the path) when the file is unreadable or not valid: the daemon
        must not start with cameras silently missing.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Registrations()
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{self.path}: cannot read the camera state file: {err}") from None
        try:
            obj = json.loads(text)
            if not isinstance(obj, dict) or obj.get("version") != STATE_VERSION:
                raise ValueError(f"expected an object with version {STATE_VERSION}")
            reg = Registrations(
                registered={str(c["id"]): dict(c) for c in obj.get("registered", [])},
                removed={str(x) for x in obj.get("removed", [])},
            )
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(
                f"{self.path}: the camera state file is damaged ({err}); fix or delete it"
            ) from None
        for cam_id, entry in reg.registered.items():
            try:
                CameraConfig.model_validate(entry)
            except ValidationError as err:
                raise ConfigError(
                    format_validation_error(err, f"{self.path}: registered camera {cam_id}")
                ) from None
        return reg

    def save(self, reg: Registrations) -> None:
        """Write the file atomically (OSError when the directory is not writable)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        body = json.dumps(
            {
                "version": STATE_VERSION,
                "registered": [reg.registered[k] for k in sorted(reg.registered)],
                "removed": sorted(reg.removed),
            },
            indent=2,
        ).encode()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            # Owner-only: a camera URL may carry a password.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def merge(
    file_cameras: list[CameraConfig], reg: Registrations
) -> tuple[list[tuple[CameraConfig, str]], list[str]]:
    """Apply the merge rule; returns ((camera, origin) in order, notes for the log).

    ``origin`` is ``"file"`` or ``"registered"``. Registrations shadowed by the file are
    removed from ``reg`` (the caller saves it).
    """
    notes: list[str] = []
    file_ids = {c.id for c in file_cameras}
    for cam_id in sorted(set(reg.registered) & file_ids):
        if cam_id in reg.removed:
            continue  # the file camera was removed and registered again: keep that
        del reg.registered[cam_id]
        notes.append(
            f"camera {cam_id}: the configuration file now defines it; the run-time "
            "registration is dropped (the file wins)"
        )
    out: list[tuple[CameraConfig, str]] = [
        (c, "file") for c in file_cameras if c.id not in reg.removed
    ]
    taken = {c.id for c, _ in out}
    for cam_id in sorted(reg.registered):
        if cam_id in taken:
            continue
        out.append((CameraConfig.model_validate(reg.registered[cam_id]), "registered"))
    return out, notes
