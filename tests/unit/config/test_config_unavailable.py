"""Keys whose feature this version does not have are refused, one line per key."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from itsd.config import (
    NOT_YET_AVAILABLE,
    Config,
    ModelConfig,
    apply_overrides,
    load_config,
    parse_config,
    unavailable_keys,
)
from itsd.errors import EXIT_CONFIG, ConfigError

REPO = Path(__file__).resolve().parents[3]
CAMERA = {"id": "a", "source": "x.mp4"}
ZONE = {"id": "z", "polygon": [[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]]}
CALIBRATION = {
    "image_points": [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]],
    "world_points": [[0, 30], [7, 30], [7, 0], [0, 0]],
}
#: Every key is available now; the machinery is checked with stand-in entries.
STAND_IN = {
    "cameras[].calibration": "stand-in reason",
    "cameras[].zones": "stand-in reason",
    "model.tensorrt": "stand-in reason",
}


@pytest.fixture
def camera_keys_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, reason in STAND_IN.items():
        monkeypatch.setitem(NOT_YET_AVAILABLE, key, reason)


def refused(data: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        parse_config(data, "f.yaml")
    assert ei.value.exit_code == EXIT_CONFIG
    return str(ei.value).splitlines()


def line(key: str) -> str:
    """The expected message line for ``key`` (``cameras[2].zones`` -> ``cameras[].zones``)."""
    generic = re.sub(r"\[\d+\]", "[]", key)
    pattern = generic if generic in NOT_YET_AVAILABLE else generic.split(".")[0] + ".*"
    reason = NOT_YET_AVAILABLE[pattern]
    return f"f.yaml: {key}: not available in this version ({reason}); remove the key"


@pytest.mark.usefixtures("camera_keys_refused")
@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"model": {"tensorrt": False}}, "model.tensorrt"),
    ],
)
def test_each_key_is_refused_with_its_reason(data: dict[str, object], key: str) -> None:
    assert refused(data) == [line(key)]


@pytest.mark.usefixtures("camera_keys_refused")
def test_camera_keys_name_the_camera_index() -> None:
    cams = [
        {**CAMERA, "id": "a"},
        {**CAMERA, "id": "b", "calibration": CALIBRATION},
        {**CAMERA, "id": "c", "zones": [ZONE]},
    ]
    assert refused({"cameras": cams}) == [line("cameras[1].calibration"), line("cameras[2].zones")]


@pytest.mark.usefixtures("camera_keys_refused")
def test_every_offending_key_gets_a_line() -> None:
    lines = refused({"model": {"tensorrt": False}, "cameras": [{**CAMERA, "zones": [ZONE]}]})
    assert sorted(lines) == sorted([line("model.tensorrt"), line("cameras[0].zones")])


def test_default_values_are_accepted() -> None:
    data = {
        "performance": {"batch_size": 8},
        "model": {"tensorrt": True, "precision": "fp16"},
        "outputs": {"spool_dir": "itsd-spool"},
        "kafka": {"enabled": False, "bootstrap_servers": "localhost:9092", "producer": {}},
        "cameras": [{**CAMERA, "zones": [], "calibration": None}],
    }
    assert parse_config(data, "f.yaml").cameras[0].id == "a"


def test_kafka_and_the_spool_are_available() -> None:
    c = parse_config(
        {
            "kafka": {"enabled": True, "topic_prefix": "city.", "producer": {"linger.ms": 5}},
            "outputs": {"spool_dir": "/var/spool/itsd", "spool_fsync": "interval"},
        }
    )
    assert c.kafka.enabled is True
    assert c.kafka.producer == {"linger.ms": 5}


def test_validation_errors_come_first() -> None:
    assert refused({"performance": {"batch_size": -1}})[0].startswith(
        "f.yaml: performance.batch_size: Input should be greater than or equal to 1"
    )


@pytest.mark.usefixtures("camera_keys_refused")
def test_load_config_refuses(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(
        "cameras:\n  - id: a\n    source: x.mp4\n    zones:\n" + "      - id: z\n"
        "        polygon: [[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]]\n"
    )
    with pytest.raises(ConfigError, match=rf"^{p}: cameras\[0\]\.zones: not available"):
        load_config(p)


@pytest.mark.usefixtures("camera_keys_refused")
def test_overrides_refuse() -> None:
    with pytest.raises(ConfigError, match=r"^command line: model\.tensorrt: not available"):
        apply_overrides(Config(), {"model.tensorrt": False})
    # performance.batch_size is available: --batch-size sets the batch the workers start with.
    assert apply_overrides(Config(), {"performance.batch_size": 2}).performance.batch_size == 2
    assert apply_overrides(Config(), {"performance.batch_size": None}).performance.batch_size == 8


@pytest.mark.usefixtures("camera_keys_refused")
def test_direct_construction_still_works() -> None:
    c = Config(model=ModelConfig(tensorrt=False))
    assert c.model.tensorrt is False
    assert unavailable_keys(c) == [("model.tensorrt", NOT_YET_AVAILABLE["model.tensorrt"])]
    assert unavailable_keys(Config()) == []


def test_every_pattern_names_real_keys() -> None:
    """Each entry matches a key of the model, so a renamed key cannot slip through."""
    from pydantic import BaseModel

    def resolve(model: type[BaseModel], parts: list[str]) -> None:
        head, rest = parts[0], parts[1:]
        if head == "*":
            assert not rest
            return
        name = head.removesuffix("[]")
        assert name in model.model_fields, f"{model.__name__} has no key {name!r}"
        if rest:
            ann = model.model_fields[name].annotation
            inner = typing.get_args(ann)[0] if head.endswith("[]") else ann
            assert isinstance(inner, type) and issubclass(inner, BaseModel), pattern
            resolve(inner, rest)

    for pattern, reason in NOT_YET_AVAILABLE.items():
        assert reason and not reason.endswith(".")
        resolve(Config, pattern.split("."))


@pytest.mark.parametrize(
    "path", ["config/production.example.yaml", "config/demo.yaml", "itsd/demo.yaml"]
)
def test_shipped_files_use_no_unavailable_key(path: str) -> None:
    assert unavailable_keys(load_config(REPO / path)) == []


@pytest.mark.usefixtures("camera_keys_refused")
def test_a_camera_registered_at_run_time_is_checked_alone() -> None:
    from itsd.config import CameraConfig, unavailable_camera_keys

    cam = CameraConfig.model_validate({**CAMERA, "zones": [ZONE], "calibration": CALIBRATION})
    reasons = (NOT_YET_AVAILABLE["cameras[].calibration"], NOT_YET_AVAILABLE["cameras[].zones"])
    assert unavailable_camera_keys(cam) == [
        f"config: calibration: not available in this version ({reasons[0]}); remove the key",
        f"config: zones: not available in this version ({reasons[1]}); remove the key",
    ]
    assert unavailable_camera_keys(CameraConfig.model_validate(CAMERA)) == []


def test_model_tensorrt_is_available() -> None:
    assert parse_config({"model": {"tensorrt": False}}).model.tensorrt is False
    assert unavailable_keys(Config(model=ModelConfig(tensorrt=False))) == []


def test_zones_and_calibration_are_available() -> None:
    cfg = parse_config({"cameras": [{**CAMERA, "zones": [ZONE], "calibration": CALIBRATION}]})
    assert cfg.cameras[0].calibration is not None
    assert unavailable_keys(cfg) == []
