"""Every message, field, enum, enum value, oneof, service and rpc of proto/itsd/v1 has a comment."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from itsd.control._pb import analytics_pb2, streaming_pb2, vision_pb2

REPO = Path(__file__).resolve().parents[3]
PROTO_ROOT = REPO / "proto"

# Field numbers of descriptor.proto used in SourceCodeInfo paths.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MSG_FIELD, _MSG_NESTED, _MSG_ENUM, _MSG_ONEOF = 2, 3, 4, 8
_ENUM_VALUE, _SERVICE_METHOD = 2, 2


def _well_known_protos() -> Path:
    spec = importlib.util.find_spec("grpc_tools")
    assert spec is not None
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "_proto"


def _descriptor_set(tmp_path: Path) -> descriptor_pb2.FileDescriptorSet:
    out = tmp_path / "set.pb"
    protos = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in PROTO_ROOT.rglob("*.proto"))
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={_well_known_protos()}",
        "--include_source_info",
        f"--descriptor_set_out={out}",
        *protos,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(out.read_bytes())
    return fds


def _enum_paths(
    enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], name: str
) -> Iterator[tuple[tuple[int, ...], str]]:
    yield path, name
    for i, value in enumerate(enum.value):
        yield (*path, _ENUM_VALUE, i), f"{name}.{value.name}"


def _message_paths(
    msg: descriptor_pb2.DescriptorProto, path: tuple[int, ...], name: str
) -> Iterator[tuple[tuple[int, ...], str]]:
    if msg.options.map_entry:
        return  # synthesized by protoc for map<> fields
    yield path, name
    for i, field in enumerate(msg.field):
        yield (*path, _MSG_FIELD, i), f"{name}.{field.name}"
    for i, oneof in enumerate(msg.oneof_decl):
        if not oneof.name.startswith("_"):  # synthetic oneofs of proto3 `optional`
            yield (*path, _MSG_ONEOF, i), f"{name}.{oneof.name}"
    for i, nested in enumerate(msg.nested_type):
        yield from _message_paths(nested, (*path, _MSG_NESTED, i), f"{name}.{nested.name}")
    for i, enum in enumerate(msg.enum_type):
        yield from _enum_paths(enum, (*path, _MSG_ENUM, i), f"{name}.{enum.name}")


def test_every_element_is_documented(tmp_path: Path) -> None:
    fds = _descriptor_set(tmp_path)
    files = [f for f in fds.file if f.name.startswith("itsd/v1/")]
    assert sorted(f.name for f in files) == [
        "itsd/v1/analytics.proto",
        "itsd/v1/common.proto",
        "itsd/v1/events.proto",
        "itsd/v1/streaming.proto",
        "itsd/v1/vision.proto",
    ]
    undocumented = []
    for f in files:
        assert f.package == "itsd.v1"
        documented = {
            tuple(loc.path) for loc in f.source_code_info.location if loc.leading_comments.strip()
        }
        elements: list[tuple[tuple[int, ...], str]] = []
        for i, msg in enumerate(f.message_type):
            elements.extend(_message_paths(msg, (_FILE_MESSAGE, i), msg.name))
        for i, enum in enumerate(f.enum_type):
            elements.extend(_enum_paths(enum, (_FILE_ENUM, i), enum.name))
        for i, service in enumerate(f.service):
            elements.append(((_FILE_SERVICE, i), service.name))
            for j, method in enumerate(service.method):
                elements.append(
                    ((_FILE_SERVICE, i, _SERVICE_METHOD, j), f"{service.name}.{method.name}")
                )
        undocumented += [f"{f.name}: {name}" for path, name in elements if path not in documented]
    assert not undocumented, "elements without a comment:\n" + "\n".join(undocumented)


@pytest.mark.parametrize(
    ("service", "methods"),
    [
        (
            "itsd.v1.VisionCoreService",
            {
                "ProcessFrame": (False, False),
                "ProcessFrameBatch": (False, False),
                "ProcessCameraStream": (True, True),
                "GetEngineHealth": (False, False),
                "GetEngineMetrics": (False, False),
            },
        ),
        (
            "itsd.v1.StreamingService",
            {
                "StreamFrames": (False, True),
                "ProcessFrameBatch": (False, False),
                "GetQueueMetrics": (False, False),
                "RegisterStream": (False, False),
                "UnregisterStream": (False, False),
                "ListStreams": (False, False),
                "ReloadConfig": (False, False),
            },
        ),
        (
            "itsd.v1.AnalyticsService",
            {
                "GetTrafficMetrics": (False, False),
                "GetAggregatedMetrics": (False, False),
                "GetCameraHealth": (False, False),
            },
        ),
    ],
)
def test_service_shapes(service: str, methods: dict[str, tuple[bool, bool]]) -> None:
    # Importing the generated modules registers their files in the default pool.
    assert {analytics_pb2.DESCRIPTOR.package, streaming_pb2.DESCRIPTOR.package} == {"itsd.v1"}
    assert vision_pb2.DESCRIPTOR.package == "itsd.v1"
    desc = descriptor_pool.Default().FindServiceByName(service)
    shapes = {}
    for m in desc.methods:
        proto = descriptor_pb2.MethodDescriptorProto()
        m.CopyToProto(proto)
        shapes[m.name] = (proto.client_streaming, proto.server_streaming)
    assert shapes == methods
