"""The registrations file and the merge rule of configuration-file and run-time cameras."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from itsd.config import CameraConfig
from itsd.errors import ConfigError
from itsd.supervisor.registry import Registrations, RegistryStore, merge


def _cam(cam_id: str, source: str = "a.mp4") -> CameraConfig:
    return CameraConfig(id=cam_id, source=source)


def test_save_and_load_round_trip_owner_only(tmp_path: Path) -> None:
    store = RegistryStore(tmp_path / "state")
    reg = Registrations(
        registered={"r1": _cam("r1", "rtsp://u:pw@h/x").model_dump(mode="json")},
        removed={"f2"},
    )
    store.save(reg)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    back = store.load()
    assert back.registered == reg.registered and back.removed == {"f2"}
    assert not list(store.directory.glob(".*tmp"))  # no temporary file left behind


def test_missing_file_is_empty_and_a_damaged_one_is_refused(tmp_path: Path) -> None:
    store = RegistryStore(tmp_path)
    assert store.load() == Registrations()
    store.path.write_text("{not json")
    with pytest.raises(ConfigError, match="damaged"):
        store.load()
    store.path.write_text(json.dumps({"version": 1, "registered": [{"id": "x"}]}))
    with pytest.raises(ConfigError, match="registered camera x"):
        store.load()


def test_merge_rule() -> None:
    file_cams = [_cam("a"), _cam("b"), _cam("c")]
    reg = Registrations(
        registered={
            "r": _cam("r").model_dump(mode="json"),
            "a": _cam("a", "other.mp4").model_dump(mode="json"),  # shadowed: the file wins
            "c": _cam("c", "back.mp4").model_dump(mode="json"),  # removed, then registered
        },
        removed={"b", "c"},
    )
    out, notes = merge(file_cams, reg)
    got = {c.id: (c.source, origin) for c, origin in out}
    assert got == {
        "a": ("a.mp4", "file"),
        "c": ("back.mp4", "registered"),
        "r": ("a.mp4", "registered"),
    }
    assert "a" not in reg.registered
    assert len(notes) == 1 and "file wins" in notes[0]
