"""Every RPC on a running daemon with the real model; frames pushed over gRPC come out as
detection events; bad requests (random bytes, wrong shapes, unknown and huge ids,
truncated and oversized messages, hundreds at once) leave no crash, no leaked slot and
flat memory; with TLS and tokens on, calls are refused as they should be."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2_grpc

from itsd.control import client
from itsd.control._pb import (
    analytics_pb2,
    analytics_pb2_grpc,
    common_pb2,
    streaming_pb2,
    streaming_pb2_grpc,
    vision_pb2,
    vision_pb2_grpc,
)

Daemon = Any
LINE = [{"id": "mid", "start": [0.5, 0.05], "end": [0.5, 0.95]}]
ADMIN = "admin-token-for-the-tests-0001"
READER = "read-token-for-the-tests-00001"


def clip_jpegs(media_dir: Path, name: str, count: int, step: int = 3) -> list[bytes]:
    cap = cv2.VideoCapture(str(media_dir / name))
    out: list[bytes] = []
    i = 0
    while len(out) < count:
        ok, frame = cap.read()
        if not ok:
            break
        if i % step == 0:
            ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
            assert ok
            out.append(data.tobytes())
        i += 1
    cap.release()
    assert len(out) == count
    return out


def jpeg(cam: str, fid: int, data: bytes) -> common_pb2.Frame:
    return common_pb2.Frame(
        camera_id=cam,
        frame_id=fid,
        encoded=common_pb2.EncodedImage(format=common_pb2.IMAGE_ENCODING_JPEG, data=data),
    )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def serving(ch: grpc.Channel, md: list[tuple[str, str]] | None = None) -> bool:
    try:
        h = vision_pb2_grpc.VisionCoreServiceStub(ch).GetEngineHealth(
            vision_pb2.GetEngineHealthRequest(), timeout=3, metadata=md
        )
    except grpc.RpcError:
        return False
    return h.status in (vision_pb2.SERVING_STATUS_SERVING, vision_pb2.SERVING_STATUS_DEGRADED)


@pytest.fixture
def daemon(
    start_daemon: Callable[..., Daemon], media_dir: Path, wait_until: Any
) -> Iterator[Daemon]:
    d = start_daemon(
        cameras=[
            {
                "id": "street",
                "source": str(media_dir / "street_overhead_dusk.mp4"),
                "loop": True,
                "target_fps": 5,
                "lines": LINE,
            },
            {"id": "gate", "source": "push://gate", "lines": LINE},
        ],
        extra={"performance": {"target_fps": 5, "inference_workers": 1, "decode_workers": 1}},
    )
    with grpc.insecure_channel(f"127.0.0.1:{d.grpc_port}") as ch:
        wait_until(lambda: serving(ch), 90, "the daemon serving", d.log_path)
    yield d


def test_every_rpc_then_bad_requests(daemon: Daemon, media_dir: Path, wait_until: Any) -> None:
    jpegs = clip_jpegs(media_dir, "suburban_street.mp4", 24)
    with grpc.insecure_channel(f"127.0.0.1:{daemon.grpc_port}") as ch:
        vision = vision_pb2_grpc.VisionCoreServiceStub(ch)
        streaming = streaming_pb2_grpc.StreamingServiceStub(ch)
        analytics = analytics_pb2_grpc.AnalyticsServiceStub(ch)
        _every_rpc(daemon, vision, streaming, analytics, jpegs, wait_until)
        _bad_requests(daemon, ch, vision, jpegs, wait_until)
    assert "Traceback" not in daemon.log()


def _every_rpc(
    d: Daemon, vision: Any, streaming: Any, analytics: Any, jpegs: list[bytes], wait_until: Any
) -> None:
    # ProcessFrame without a camera: the ad-hoc camera, untracked.
    r = vision.ProcessFrame(vision_pb2.ProcessFrameRequest(frame=jpeg("", 7, jpegs[0])), timeout=30)
    assert (r.frame_id, r.frame_width, r.frame_height) == (7, 640, 352)
    assert r.detections and all(det.tracking_id == 0 for det in r.detections)
    assert any(det.class_name == "car" and det.is_vehicle for det in r.detections)
    assert r.result_time.seconds > 0 and r.inference_latency_ms > 0
    # ProcessCameraStream to the push camera: every frame, in order, tracked.
    frames = [jpeg("gate", 1000 + i, data) for i, data in enumerate(jpegs)]
    results = list(vision.ProcessCameraStream(iter(frames), timeout=60))
    assert [x.frame_id for x in results] == [1000 + i for i in range(len(jpegs))]
    assert all(x.camera_id == "gate" for x in results)
    assert any(det.tracking_id > 0 for x in results for det in x.detections)

    # Frames pushed over gRPC come out as detection events (the JSONL file).
    def gate_events() -> list[dict[str, Any]]:
        return [e for e in d.detections() if e["camera_id"] == "gate"]

    wait_until(lambda: len(gate_events()) >= len(jpegs), 30, "the gate's detection events")
    assert sorted(e["frame_id"] for e in gate_events()) == [1000 + i for i in range(len(jpegs))]
    # ProcessFrameBatch on both services: one outcome per frame.
    batch = common_pb2.ProcessFrameBatchRequest(
        frames=[jpeg("", 1, jpegs[1]), jpeg("nope", 2, jpegs[2]), jpeg("", 3, jpegs[3])]
    )
    for stub in (vision, streaming):
        resp = stub.ProcessFrameBatch(batch, timeout=30)
        assert [it.WhichOneof("outcome") for it in resp.items] == ["result", "error", "result"]
        assert resp.items[1].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    # StreamFrames follows the file camera.
    call = streaming.StreamFrames(streaming_pb2.StreamFramesRequest(camera_id="street"), timeout=30)
    got = []
    for x in call:
        got.append(x)
        if len(got) == 2:
            call.cancel()
            break
    assert got[0].camera_id == "street" and got[1].frame_id > got[0].frame_id
    # Metrics: real percentiles, throughput, rings.
    m = vision.GetEngineMetrics(vision_pb2.GetEngineMetricsRequest(), timeout=10)
    for lat in (m.inference_latency, m.pipeline_latency):
        assert 0 < lat.p50_ms <= lat.p95_ms <= lat.p99_ms <= lat.max_ms
    assert m.inference_fps > 0 and m.frames_inferred > 0 and m.batch_size.max >= 1
    assert {c.camera_id for c in m.cameras} >= {"street", "gate", "itsd.adhoc"}
    gate = next(c for c in m.cameras if c.camera_id == "gate")
    assert gate.frames_decoded == len(jpegs) + 0 and gate.frames_inferred == len(jpegs)
    q = streaming.GetQueueMetrics(streaming_pb2.GetQueueMetricsRequest(), timeout=10)
    ring = next(x for x in q.rings if x.camera_id == "gate")
    assert (ring.written, ring.dropped, ring.capacity) == (len(jpegs), 0, 4)
    assert any(x.name == "events" and x.written > 0 for x in q.rings)
    health = vision.GetEngineHealth(vision_pb2.GetEngineHealthRequest(), timeout=10)
    assert health.status == vision_pb2.SERVING_STATUS_SERVING, list(health.reasons)
    ch = analytics.GetCameraHealth(
        analytics_pb2.GetCameraHealthRequest(camera_id="gate"), timeout=10
    )
    assert ch.cameras[0].camera_id == "gate" and ch.cameras[0].last_frame_age_s >= 0
    tm = analytics.GetTrafficMetrics(analytics_pb2.GetTrafficMetricsRequest(), timeout=10)
    assert {c.camera_id for c in tm.cameras} >= {"street", "gate"}
    try:
        analytics.GetAggregatedMetrics(
            analytics_pb2.GetAggregatedMetricsRequest(
                start_time={"seconds": int(time.time()) - 600}
            ),
            timeout=10,
        )
    except grpc.RpcError as err:  # served by the aggregates store; never a crash
        assert err.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), err
    # A push camera registered at run time takes frames until it is removed.
    reg = streaming.RegisterStream(
        streaming_pb2.RegisterStreamRequest(
            config=streaming_pb2.StreamConfig(camera_id="dock", source_url="push://dock")
        ),
        timeout=90,
    )
    assert reg.stream.config.camera_id == "dock"
    r = vision.ProcessFrame(
        vision_pb2.ProcessFrameRequest(frame=jpeg("dock", 5, jpegs[5])), timeout=30
    )
    assert r.camera_id == "dock" and r.frame_id == 5
    listed = streaming.ListStreams(streaming_pb2.ListStreamsRequest(), timeout=10)
    assert {s.config.camera_id for s in listed.streams} >= {"street", "gate", "dock"}
    assert streaming.UnregisterStream(
        streaming_pb2.UnregisterStreamRequest(camera_id="dock"), timeout=90
    ).removed
    with pytest.raises(grpc.RpcError) as err:
        vision.ProcessFrame(
            vision_pb2.ProcessFrameRequest(frame=jpeg("dock", 6, jpegs[6])), timeout=30
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    reloaded = streaming.ReloadConfig(streaming_pb2.ReloadConfigRequest(), timeout=120)
    assert set(reloaded.kept) == {"street", "gate"} and "itsd.adhoc" not in reloaded.removed
    # The CLI over gRPC.
    out = d.cli("metrics", "--timeout", "30", "--target", f"127.0.0.1:{d.grpc_port}")
    assert out.returncode == 0, out.stderr
    assert "p95" in out.stdout and "gate" in out.stdout and "inference" in out.stdout
    out = d.cli("metrics", "--json", "--timeout", "30", "--target", f"127.0.0.1:{d.grpc_port}")
    assert json.loads(out.stdout)["engine"]["inference_latency"]["p99_ms"] > 0


def _idle_streams(ch: grpc.Channel, vision: Any) -> None:
    """Twenty idle server-reflection streams from a local process: unary calls still
    answer at once (they used to time out with eight)."""
    stop = threading.Event()

    def idle() -> Iterator[Any]:
        stop.wait(60)
        yield from ()

    stub = reflection_pb2_grpc.ServerReflectionStub(ch)
    held = [stub.ServerReflectionInfo(idle()) for _ in range(20)]
    try:
        time.sleep(1.0)
        t0 = time.monotonic()
        for _ in range(10):
            vision.GetEngineHealth(vision_pb2.GetEngineHealthRequest(), timeout=5)
        assert time.monotonic() - t0 < 5.0
        refused = [c for c in held if c.done()]
        assert refused and all(c.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for c in refused)
    finally:
        stop.set()
        for c in held:
            c.cancel()


def _bad_requests(
    d: Daemon, ch: grpc.Channel, vision: Any, jpegs: list[bytes], wait_until: Any
) -> None:
    _idle_streams(ch, vision)
    pid = int(d.pid_file.read_text().split()[0])
    rng = random.Random(20261129)
    good = vision_pb2.ProcessFrameRequest(frame=jpeg("gate", 1, jpegs[0])).SerializeToString()
    methods = [
        "/itsd.v1.VisionCoreService/ProcessFrame",
        "/itsd.v1.VisionCoreService/GetEngineMetrics",
        "/itsd.v1.StreamingService/RegisterStream",
        "/itsd.v1.StreamingService/ProcessFrameBatch",
        "/itsd.v1.AnalyticsService/GetCameraHealth",
        "/itsd.v1.AnalyticsService/GetTrafficMetrics",
    ]
    raw = {
        m: ch.unary_unary(m, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        for m in methods
    }

    def one_round(n: int) -> dict[str, int]:
        calls = []
        for i in range(n):
            kind = i % 8
            if kind == 0:  # random bytes to a random method
                data = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200)))
                calls.append(raw[rng.choice(methods)].future(data, timeout=20))
            elif kind == 1:  # a good request cut short
                calls.append(
                    raw[methods[0]].future(good[: rng.randint(1, len(good) - 1)], timeout=20)
                )
            elif kind == 2:  # raw pixels that do not match the shape
                frame = common_pb2.Frame(
                    camera_id="gate",
                    frame_id=i,
                    raw=common_pb2.RawImage(
                        width=rng.randint(1, 5000),
                        height=rng.randint(1, 5000),
                        pixel_format=rng.randint(0, 5),
                        data=b"\0" * rng.randint(0, 3000),
                    ),
                )
                calls.append(
                    vision.ProcessFrame.future(
                        vision_pb2.ProcessFrameRequest(frame=frame), timeout=20
                    )
                )
            elif kind == 3:  # unknown and huge camera ids
                cam = rng.choice(["nope", "x" * (1 << 20), "../../etc", "\u00e9" * 70])
                calls.append(
                    vision.ProcessFrame.future(
                        vision_pb2.ProcessFrameRequest(frame=jpeg(cam, i, jpegs[1])), timeout=20
                    )
                )
            elif kind == 4:  # a corrupt JPEG
                data = bytearray(jpegs[i % len(jpegs)])
                data = data[: rng.randint(10, len(data) // 2)]
                calls.append(
                    vision.ProcessFrame.future(
                        vision_pb2.ProcessFrameRequest(frame=jpeg("", i, bytes(data))), timeout=20
                    )
                )
            elif kind == 5 and i % 40 == 5:  # larger than the message limit (16 MiB)
                calls.append(raw[methods[0]].future(b"\0" * (17 << 20), timeout=20))
            elif kind == 6:  # good frames to the ad-hoc camera and to gate, at the same time
                cam = "" if i % 16 == 6 else "gate"
                calls.append(
                    vision.ProcessFrame.future(
                        vision_pb2.ProcessFrameRequest(frame=jpeg(cam, 50_000 + i, jpegs[i % 24])),
                        timeout=20,
                    )
                )
            else:  # reads
                calls.append(
                    vision.GetEngineMetrics.future(vision_pb2.GetEngineMetricsRequest(), timeout=20)
                )
        codes: dict[str, int] = {}
        for c in calls:
            try:
                c.result()
                name = "OK"
            except grpc.RpcError as err:
                name = err.code().name
            codes[name] = codes.get(name, 0) + 1
        return codes

    for _ in range(2):  # warm up: gRPC's and the allocator's pools grow to their size
        one_round(200)
    before = rss_kib(pid)
    codes: dict[str, int] = {}
    for _ in range(2):
        for k, v in one_round(200).items():
            codes[k] = codes.get(k, 0) + v
    after = rss_kib(pid)
    print(f"bad-request rounds: {codes}; supervisor RSS {before} KiB -> {after} KiB")
    assert not {"INTERNAL", "UNKNOWN", "UNAVAILABLE"} & set(codes), codes
    # Past api.max_concurrent_unary + streams calls at once, gRPC refuses the rest at once
    # (RESOURCE_EXHAUSTED); of those served, every kind got its own answer.
    assert codes.get("INVALID_ARGUMENT", 0) > 40 and codes.get("NOT_FOUND", 0) > 10
    assert codes.get("OK", 0) > 30
    assert after - before < 48 * 1024, (before, after)

    # Nothing leaked: no frame waits, no in-flight slot held; the daemon still serves.
    def idle() -> bool:
        m = vision.GetEngineMetrics(vision_pb2.GetEngineMetricsRequest(), timeout=10)
        return m.extra["push_frames_waiting"] == 0 and m.extra["push_slots_taken"] == 0

    wait_until(idle, 30, "no pushed frame waiting and no slot taken")
    assert serving(ch)
    r = vision.ProcessFrame(
        vision_pb2.ProcessFrameRequest(frame=jpeg("gate", 99_999, jpegs[2])), timeout=30
    )
    assert r.frame_id == 99_999
    # One line per bad request, never a whole camera id.
    assert max(len(line) for line in d.log().splitlines()) < 3000


def test_tls_and_tokens_on_a_running_daemon(
    start_daemon: Callable[..., Daemon],
    media_dir: Path,
    certs: dict[str, Path],
    wait_until: Any,
) -> None:
    d = start_daemon(
        cameras=[{"id": "gate", "source": "push://gate"}],
        extra={
            "performance": {"target_fps": 5, "inference_workers": 1, "decode_workers": 1},
            "security": {
                "tls_cert": str(certs["server_cert"]),
                "tls_key": str(certs["server_key"]),
                "admin_tokens": [ADMIN],
                "read_tokens": [READER],
            },
        },
    )
    addr = f"127.0.0.1:{d.grpc_port}"
    reader = client.Target(addr, tls_ca=certs["ca_cert"], token=READER)
    admin = client.Target(addr, tls_ca=certs["ca_cert"], token=ADMIN)
    anonymous = client.Target(addr, tls_ca=certs["ca_cert"])

    def up() -> bool:
        try:
            return client.get_health(reader, 10).status != vision_pb2.SERVING_STATUS_NOT_SERVING
        except client.ControlClientError:
            return False

    wait_until(up, 90, "the daemon serving over TLS", d.log_path)
    with pytest.raises(client.ControlClientError) as err:
        client.get_health(anonymous, 30)
    assert err.value.code == "UNAUTHENTICATED"
    with pytest.raises(client.ControlClientError) as err:
        client.register_stream(reader, 60, "dock", "push://dock")
    assert err.value.code == "PERMISSION_DENIED"
    with pytest.raises(client.ControlUnavailable):
        client.get_health(client.Target(addr, token=READER), 10)  # plain text to a TLS port
    jpegs = clip_jpegs(media_dir, "bikes.mp4", 1)
    with admin.channel() as ch:
        r = vision_pb2_grpc.VisionCoreServiceStub(ch).ProcessFrame(
            vision_pb2.ProcessFrameRequest(frame=jpeg("gate", 3, jpegs[0])), timeout=30
        )
        assert r.frame_id == 3
    with reader.channel() as ch:
        with pytest.raises(grpc.RpcError) as rerr:
            vision_pb2_grpc.VisionCoreServiceStub(ch).ProcessFrame(
                vision_pb2.ProcessFrameRequest(frame=jpeg("gate", 4, jpegs[0])), timeout=30
            )
        assert rerr.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # The CLI: token from ITSD_TOKEN, CA from --tls-ca.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "itsd",
            "status",
            "--timeout",
            "30",
            "--target",
            addr,
            "--tls-ca",
            str(certs["ca_cert"]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ITSD_TOKEN": READER},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("itsd 0.1.0: ")
    out = d.cli("metrics", "--timeout", "30", "--target", addr, "--tls-ca", str(certs["ca_cert"]))
    assert out.returncode != 0 and "UNAUTHENTICATED" in out.stderr
    log = d.log()
    assert ADMIN not in log and READER not in log
    assert "TLS, bearer tokens" in log
