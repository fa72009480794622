"""The typed configuration: defaults, validation messages, overrides, shipped examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from itsd.config import Config, apply_overrides, config_from_json, config_to_json, load_config
from itsd.errors import EXIT_CONFIG, ConfigError

REPO = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "itsd.yaml"
    p.write_text(text)
    return p


def test_defaults_match_the_design() -> None:
    c = Config()
    assert c.server.grpc_port == 50051
    assert c.server.monitoring_port == 8080
    assert c.performance.batch_size == 8
    assert c.performance.max_batch_size == 32
    assert c.performance.target_fps == 30
    assert c.kafka.enabled is False
    assert c.kafka.topics.detection_events == "detection_events"


@pytest.mark.parametrize("name", ["production.example.yaml", "demo.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    cfg = load_config(REPO / "config" / name)
    assert cfg.cameras


def test_typo_key_is_named_with_its_path(tmp_path: Path) -> None:
    p = write(tmp_path, "cameras:\n  - id: a\n    source: x.mp4\n    target_fsp: 10\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    msg = str(ei.value)
    assert str(p) in msg
    assert "cameras[0].target_fsp" in msg
    assert "unknown key" in msg
    assert ei.value.exit_code == EXIT_CONFIG


def test_negative_batch_size_is_rejected_with_key(tmp_path: Path) -> None:
    p = write(tmp_path, "performance:\n  batch_size: -4\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert "performance.batch_size" in str(ei.value)
    assert "-4" in str(ei.value)


def test_batch_larger_than_max_is_rejected(tmp_path: Path) -> None:
    p = write(tmp_path, "performance:\n  batch_size: 64\n  max_batch_size: 32\n")
    with pytest.raises(ConfigError, match="must not exceed max_batch_size"):
        load_config(p)


def test_bad_yaml_names_line(tmp_path: Path) -> None:
    p = write(tmp_path, "server:\n  grpc_port: [1,\n")
    with pytest.raises(ConfigError, match=r"invalid YAML: line \d+"):
        load_config(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_duplicate_camera_ids(tmp_path: Path) -> None:
    p = write(tmp_path, "cameras:\n  - {id: a, source: x}\n  - {id: a, source: y}\n")
    with pytest.raises(ConfigError, match="duplicate camera id 'a'"):
        load_config(p)


def test_line_points_are_normalised(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "cameras:\n  - id: a\n    source: x\n    lines:\n"
        "      - {id: l, start: [0, 0], end: [2, 1]}\n",
    )
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.lines\[0\]\.end"):
        load_config(p)


def test_overrides_apply_and_validate() -> None:
    c = apply_overrides(Config(), {"model.iou": 0.6, "performance.batch_size": None})
    assert c.model.iou == 0.6
    assert c.performance.batch_size == 8
    with pytest.raises(ConfigError, match=r"command line: model\.confidence"):
        apply_overrides(Config(), {"model.confidence": 7.0})


def test_json_round_trip() -> None:
    c = load_config(REPO / "config" / "production.example.yaml")
    assert config_from_json(config_to_json(c)) == c


def test_every_field_is_documented() -> None:
    from pydantic import BaseModel

    def walk(model: type[BaseModel]) -> None:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann)

    walk(Config)
