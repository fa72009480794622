"""The registry's record format, placement, validation (like a local camera) and plans."""

from __future__ import annotations

import json
import zlib

import pytest

from itsd.config import CameraConfig, parse_config
from itsd.fleet.registry import (
    Registry,
    decode,
    encode,
    partition_of,
    plan,
    validate_camera,
    validate_cameras,
)

PATTERN = "pattern://moving?width=160&height=120&fps=2"


def cam(cid: str, **kw: object) -> CameraConfig:
    return CameraConfig.model_validate({"id": cid, "source": PATTERN, **kw})


def test_partition_is_crc32_of_the_id() -> None:
    assert partition_of("cam-1", 64) == zlib.crc32(b"cam-1") % 64
    assert all(0 <= partition_of(f"c{i}", 7) < 7 for i in range(100))
    # spread: 640 ids over 64 partitions leave none empty
    assert len({partition_of(f"cam-{i}", 64) for i in range(640)}) == 64


def test_record_round_trip_and_tombstone() -> None:
    c = cam("north", target_fps=2.0, lines=[{"id": "l", "start": [0, 0.5], "end": [1, 0.5]}])
    cid, back = decode(b"north", encode(c))
    assert cid == "north" and back == c
    assert json.loads(encode(c))["id"] == "north"
    assert decode(b"north", None) == ("north", None)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        (None, b"{}", "without a key"),
        (b"a", b"not json", "not JSON"),
        (b"a", b"[1]", "not a JSON object"),
        (b"a", b'{"id": "b", "source": "x"}', "names camera 'b'"),
        (b"a", b'{"source": "x", "priority": 12}', "priority"),
    ],
)
def test_bad_records_are_named(key: bytes | None, value: bytes, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        decode(key, value)


def test_validation_is_the_local_cameras(tmp_path: object) -> None:
    assert validate_camera({"id": "a", "source": PATTERN}).id == "a"
    with pytest.raises(ValueError, match=r"^f: source: unsupported scheme 'nope'"):
        validate_camera({"id": "a", "source": "nope://x"}, "f")
    with pytest.raises(ValueError, match="no such file"):
        validate_camera({"id": "a", "source": "/no/such/clip.mp4"}, "f")
    with pytest.raises(ValueError, match=r"f: lines\[0\]\.start\[1\]"):
        validate_camera(
            {"id": "a", "source": PATTERN, "lines": [{"id": "x", "start": [0, 2], "end": [1, 1]}]},
            "f",
        )
    with pytest.raises(ValueError, match="must be a mapping"):
        validate_camera(["a"], "f")


def test_every_problem_of_a_batch_at_once() -> None:
    with pytest.raises(ValueError) as err:
        validate_cameras(
            [
                {"id": "a", "source": PATTERN},
                {"id": "bad id", "source": PATTERN},
                {"id": "a", "source": PATTERN},
                {"id": "c", "source": "nope://x"},
            ],
            "cams.yaml",
        )
    lines = str(err.value).splitlines()
    assert lines == [
        "cams.yaml: cameras[1]: id: String should match pattern "
        "'^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$' (got 'bad id')",
        "cams.yaml: cameras[2]: id: duplicate camera id 'a'",
        "cams.yaml: cameras[3]: source: unsupported scheme 'nope'",
    ]


def test_plan_puts_only_what_changed_and_prunes_on_request() -> None:
    reg = Registry(8, {"a": (1, cam("a")), "b": (2, cam("b")), "old": (3, cam("old"))})
    wanted = [cam("a"), cam("b", priority=9), cam("new")]
    p = plan(reg, wanted, prune=False)
    assert (p.added, p.changed, p.unchanged, p.removed) == (["new"], ["b"], ["a"], [])
    assert plan(reg, wanted, prune=True).removed == ["old"]


def test_fleet_section_is_validated() -> None:
    cfg = parse_config({"fleet": {"enabled": True, "capacity": 10, "node_id": "edge-1"}})
    assert cfg.fleet_capacity() == 10 and cfg.fleet.resolved_node_id() == "edge-1"
    assert cfg.fleet_bootstrap() == cfg.kafka.bootstrap_servers
    cams = [{"id": f"c{i}", "source": PATTERN} for i in range(6)]
    cfg = parse_config({"supervisor": {"max_cameras": 16}, "cameras": cams})
    assert cfg.fleet_capacity() == 10  # what max_cameras leaves
    with pytest.raises(Exception, match=r"fleet.capacity \(20\) plus the 0 file camera"):
        parse_config({"supervisor": {"max_cameras": 16}, "fleet": {"capacity": 20}})
    with pytest.raises(Exception, match=r"fleet\.assignor"):
        parse_config({"fleet": {"assignor": "sticky"}})
    with pytest.raises(Exception, match=r"fleet\.session_timeout_ms"):
        parse_config({"fleet": {"session_timeout_ms": 10}})
