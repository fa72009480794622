"""The frame RPCs over real shared-memory rings, with a small fake pipeline standing in for
inference and analytics (it reads the frame rings and answers each frame with a detection
event on the results ring). What the daemon's own pipeline does with pushed frames is
tested in tests/integration/control."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import cv2
import grpc
import numpy as np
import pytest
from control_fakes import FakeBackend

from itsd.config import ApiConfig
from itsd.control._pb import (
    common_pb2,
    streaming_pb2,
    streaming_pb2_grpc,
    vision_pb2,
    vision_pb2_grpc,
)
from itsd.control.backend import ADHOC_CAMERA_ID, CameraHealth, NotSupportedError, PushTarget
from itsd.control.server import ControlServer, start_control_server
from itsd.events.builders import detection_event, detection_item
from itsd.shm import FrameRing, RecordRing, new_run_id, segment_name


class PushFakeBackend(FakeBackend):
    """FakeBackend plus the PushBackend methods over rings made here."""

    def __init__(self, slots: int = 4) -> None:
        super().__init__()
        self.run = new_run_id()
        self.rings: dict[str, FrameRing] = {}
        self.keys: dict[str, int] = {}
        self.results = RecordRing.create(segment_name(self.run, "records", "results"), 1 << 20)
        self.slots = slots
        self.add("gate", 640, 480)

    def add(self, cid: str, w: int, h: int) -> None:
        key = len(self.keys) + 1
        self.rings[cid] = FrameRing.create(
            segment_name(self.run, "frames", f"k{key}"),
            camera_key=key,
            slot_count=self.slots,
            max_width=w,
            max_height=h,
        )
        self.keys[cid] = key

    def push_target(self, camera_id: str) -> PushTarget:
        if camera_id in self.streams:
            raise NotSupportedError(f"camera {camera_id!r} decodes its own source")
        if camera_id not in self.rings:
            raise KeyError(f"camera {camera_id!r} is not registered")
        return PushTarget(camera_id, self.keys[camera_id], self.rings[camera_id].name)

    def adhoc_target(self) -> PushTarget:
        if ADHOC_CAMERA_ID not in self.rings:
            self.add(ADHOC_CAMERA_ID, 320, 240)
        ring = self.rings[ADHOC_CAMERA_ID]
        return PushTarget(ADHOC_CAMERA_ID, self.keys[ADHOC_CAMERA_ID], ring.name, adhoc=True)

    def results_ring(self) -> str:
        return self.results.name

    def camera_health(self, camera_id: str | None) -> list[CameraHealth]:
        if camera_id in self.rings:
            return [CameraHealth(camera_id, True, 1.0, 1.0, 0.1, 0)]
        return super().camera_health(camera_id)

    def close(self) -> None:
        for r in [*self.rings.values(), self.results]:
            r.close()
            r.unlink()


class FakePipeline:
    """Reads every frame ring (oldest first) and answers with one box per frame: the
    bright square the tests draw, found by thresholding."""

    def __init__(self, backend: PushFakeBackend, delay_s: float = 0.0) -> None:
        self.backend = backend
        self.delay_s = delay_s
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.seen: list[tuple[str, int, int, int]] = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            busy = False
            for cid, ring in list(self.backend.rings.items()):
                if self.paused.is_set():
                    break
                slot = ring.acquire_oldest()
                if slot is None:
                    continue
                busy = True
                with slot:
                    px = slot.pixels
                    ys, xs = np.nonzero(px[:, :, 0] > 200)
                    box = (
                        [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]
                        if len(xs)
                        else None
                    )
                    w, h, fid = slot.width, slot.height, slot.frame_id
                    ts = slot.capture_ts_ns
                self.seen.append((cid, fid, w, h))
                time.sleep(self.delay_s)
                dets = [detection_item("car", 0.9, box, 7, True)] if box else []
                ev = detection_event(cid, fid, ts, dets, w, h, 3.0, 5.0, 1)
                assert self.backend.results.try_put(ev.pack())
            if not busy:
                time.sleep(0.001)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def push_backend() -> Iterator[PushFakeBackend]:
    b = PushFakeBackend()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def pipeline(push_backend: PushFakeBackend) -> Iterator[FakePipeline]:
    p = FakePipeline(push_backend)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def push_server(push_backend: PushFakeBackend) -> Iterator[ControlServer]:
    api = ApiConfig(max_inflight_frames=2, result_timeout_s=3.0)
    srv = start_control_server(push_backend, "127.0.0.1", 0, api=api)
    try:
        yield srv
    finally:
        srv.stop(grace=0)


@pytest.fixture
def vision(push_server: ControlServer) -> Iterator[Any]:
    with grpc.insecure_channel(f"127.0.0.1:{push_server.port}") as ch:
        yield vision_pb2_grpc.VisionCoreServiceStub(ch)


def picture(
    w: int = 640, h: int = 480, box: tuple[int, int, int, int] = (100, 50, 200, 150)
) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    x0, y0, x1, y1 = box
    img[y0 : y1 + 1, x0 : x1 + 1] = 255
    return img


def jpeg_frame(cam: str, fid: int, img: np.ndarray | None = None) -> common_pb2.Frame:
    ok, data = cv2.imencode(".png", picture() if img is None else img)
    assert ok
    return common_pb2.Frame(
        camera_id=cam,
        frame_id=fid,
        encoded=common_pb2.EncodedImage(format=common_pb2.IMAGE_ENCODING_PNG, data=data.tobytes()),
    )


def no_leaks(server: ControlServer) -> None:
    hub = server.hub
    assert hub is not None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (hub.pending() or hub.slots_taken()):
        time.sleep(0.05)
    assert (hub.pending(), hub.slots_taken()) == (0, 0)


def test_process_frame_on_a_push_camera(
    vision: Any, pipeline: FakePipeline, push_server: ControlServer
) -> None:
    r = vision.ProcessFrame(vision_pb2.ProcessFrameRequest(frame=jpeg_frame("gate", 41)), timeout=5)
    assert (r.camera_id, r.frame_id, r.frame_width, r.frame_height) == ("gate", 41, 640, 480)
    assert len(r.detections) == 1 and r.vehicle_count == 1
    d = r.detections[0]
    assert (d.class_name, d.tracking_id, d.vehicle_type) == ("car", 7, common_pb2.VEHICLE_TYPE_CAR)
    assert (d.bbox.x_min, d.bbox.y_min, d.bbox.x_max, d.bbox.y_max) == (100, 50, 200, 150)
    assert r.inference_latency_ms == 3.0 and r.batch_size == 1 and r.pipeline_latency_ms > 0
    assert pipeline.seen[-1] == ("gate", 41, 640, 480)
    no_leaks(push_server)


def test_adhoc_frames_are_scaled_to_the_ring_and_boxes_back(
    vision: Any, pipeline: FakePipeline, push_server: ControlServer
) -> None:
    img = picture(1280, 960, (200, 100, 401, 301))
    raw = common_pb2.RawImage(
        width=1280,
        height=960,
        pixel_format=common_pb2.PIXEL_FORMAT_BGR24,
        data=img.tobytes(),
    )
    frame = common_pb2.Frame(frame_id=5, raw=raw)
    r = vision.ProcessFrame(
        vision_pb2.ProcessFrameRequest(
            frame=frame, options=common_pb2.InferenceOptions(class_names=["car"])
        ),
        timeout=5,
    )
    assert (r.frame_id, r.frame_width, r.frame_height, r.camera_id) == (5, 1280, 960, "")
    assert pipeline.seen[-1][2:] == (320, 240)  # the ad-hoc ring's size
    b = r.detections[0].bbox
    assert abs(b.x_min - 200) <= 8 and abs(b.y_max - 301) <= 8  # 4x scale: one ring pixel
    assert r.detections[0].tracking_id == 0  # ad-hoc frames are not tracked
    r2 = vision.ProcessFrame(
        vision_pb2.ProcessFrameRequest(
            frame=frame, options=common_pb2.InferenceOptions(confidence_threshold=0.95)
        ),
        timeout=5,
    )
    assert len(r2.detections) == 0
    no_leaks(push_server)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (common_pb2.Frame(camera_id="gate"), grpc.StatusCode.INVALID_ARGUMENT),
        (
            common_pb2.Frame(
                camera_id="gate",
                encoded=common_pb2.EncodedImage(
                    format=common_pb2.IMAGE_ENCODING_JPEG, data=b"junk"
                ),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            common_pb2.Frame(
                camera_id="gate",
                raw=common_pb2.RawImage(
                    width=10, height=10, pixel_format=common_pb2.PIXEL_FORMAT_RGB24, data=b"x" * 299
                ),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (jpeg_frame("nope", 1), grpc.StatusCode.NOT_FOUND),
        (jpeg_frame("z" * 100_000, 1), grpc.StatusCode.NOT_FOUND),
        (jpeg_frame("cam-a", 1), grpc.StatusCode.FAILED_PRECONDITION),
    ],
    ids=["no-pixels", "corrupt-jpeg", "short-raw", "unknown", "huge-id", "decoding-camera"],
)
def test_bad_frames(vision: Any, push_server: ControlServer, frame: Any, code: Any) -> None:
    with pytest.raises(grpc.RpcError) as err:
        vision.ProcessFrame(vision_pb2.ProcessFrameRequest(frame=frame), timeout=5)
    assert err.value.code() == code
    assert len(err.value.details()) < 400
    no_leaks(push_server)


def test_busy_camera_is_resource_exhausted_with_a_retry_hint(
    vision: Any, pipeline: FakePipeline, push_server: ControlServer
) -> None:
    pipeline.paused.set()
    calls = [
        vision.ProcessFrame.future(
            vision_pb2.ProcessFrameRequest(frame=jpeg_frame("gate", i)), timeout=3
        )
        for i in range(6)
    ]
    codes = []
    for c in calls:
        try:
            c.result()
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as err:
            codes.append(err.code())
            if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                assert dict(err.trailing_metadata())["grpc-retry-pushback-ms"] == "50"
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 4  # 2 in flight at most
    assert codes.count(grpc.StatusCode.DEADLINE_EXCEEDED) == 2  # nobody read them
    pipeline.paused.clear()
    no_leaks(push_server)
    r = vision.ProcessFrame(
        vision_pb2.ProcessFrameRequest(frame=jpeg_frame("gate", 100)), timeout=5
    )
    assert r.frame_id == 100


def test_batch_gives_each_frame_its_outcome(
    push_server: ControlServer, pipeline: FakePipeline
) -> None:
    frames = [jpeg_frame("gate", i) for i in range(10)]
    frames[3] = jpeg_frame("missing", 3)
    frames[6] = common_pb2.Frame(camera_id="gate", frame_id=6)
    with grpc.insecure_channel(f"127.0.0.1:{push_server.port}") as ch:
        for stub in (
            vision_pb2_grpc.VisionCoreServiceStub(ch),
            streaming_pb2_grpc.StreamingServiceStub(ch),
        ):
            resp = stub.ProcessFrameBatch(
                common_pb2.ProcessFrameBatchRequest(frames=frames), timeout=10
            )
            assert [it.index for it in resp.items] == list(range(10))
            outcome = [it.WhichOneof("outcome") for it in resp.items]
            assert outcome.count("result") == 8
            assert resp.items[3].error.code == grpc.StatusCode.NOT_FOUND.value[0]
            assert resp.items[6].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert [it.result.frame_id for it in resp.items if it.HasField("result")] == [
                0,
                1,
                2,
                4,
                5,
                7,
                8,
                9,
            ]
            big = common_pb2.ProcessFrameBatchRequest(frames=[jpeg_frame("gate", 1)] * 65)
            with pytest.raises(grpc.RpcError) as err:
                stub.ProcessFrameBatch(big, timeout=5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    no_leaks(push_server)


def test_camera_stream_backpressure_keeps_order_and_memory_bounded(
    push_backend: PushFakeBackend, push_server: ControlServer
) -> None:
    """A client that pushes 60 frames as fast as it can: the server reads no further than
    the in-flight limit allows (the client blocks), every frame gets its result, in order."""
    slow = FakePipeline(push_backend, delay_s=0.01)
    produced: list[float] = []
    try:
        data = jpeg_frame("gate", 0).encoded.data

        def frames() -> Iterator[common_pb2.Frame]:
            for i in range(60):
                produced.append(time.monotonic())
                yield common_pb2.Frame(
                    camera_id="gate",
                    frame_id=i,
                    encoded=common_pb2.EncodedImage(
                        format=common_pb2.IMAGE_ENCODING_PNG, data=data
                    ),
                )

        with grpc.insecure_channel(f"127.0.0.1:{push_server.port}") as ch:
            stub = vision_pb2_grpc.VisionCoreServiceStub(ch)
            results = list(stub.ProcessCameraStream(frames(), timeout=30))
        assert [r.frame_id for r in results] == list(range(60))
        assert all(len(r.detections) == 1 for r in results)
        assert len({s[1] for s in slow.seen}) == 60  # none dropped
    finally:
        slow.close()
    no_leaks(push_server)


def test_camera_stream_bad_frame_ends_it_and_cancel_frees_slots(
    vision: Any, pipeline: FakePipeline, push_server: ControlServer
) -> None:
    def frames() -> Iterator[common_pb2.Frame]:
        yield jpeg_frame("gate", 1)
        yield common_pb2.Frame(camera_id="gate", frame_id=2)

    call = vision.ProcessCameraStream(frames(), timeout=5)
    got = []
    with pytest.raises(grpc.RpcError) as err:
        for r in call:
            got.append(r.frame_id)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "frame has no pixels" in err.value.details()
    pipeline.paused.set()
    gen_stop = threading.Event()

    def endless() -> Iterator[common_pb2.Frame]:
        i = 100
        while not gen_stop.is_set():
            yield jpeg_frame("gate", i)
            i += 1

    call = vision.ProcessCameraStream(endless(), timeout=10)
    time.sleep(0.5)
    call.cancel()
    gen_stop.set()
    pipeline.paused.clear()
    no_leaks(push_server)


def test_stream_frames_follows_a_camera(
    push_server: ControlServer, pipeline: FakePipeline, vision: Any
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{push_server.port}") as ch:
        stub = streaming_pb2_grpc.StreamingServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            next(
                iter(
                    stub.StreamFrames(
                        streaming_pb2.StreamFramesRequest(camera_id="nope"), timeout=5
                    )
                )
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        call = stub.StreamFrames(streaming_pb2.StreamFramesRequest(camera_id="gate"), timeout=10)
        got: list[int] = []

        def read() -> None:
            for r in call:
                got.append(r.frame_id)
                if len(got) == 3:
                    return

        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(0.3)
        for i in range(5):
            vision.ProcessFrame(
                vision_pb2.ProcessFrameRequest(frame=jpeg_frame("gate", 200 + i)), timeout=5
            )
            if not reader.is_alive():
                break
        reader.join(5)
        call.cancel()
        assert got[:3] == [200, 201, 202]


def test_engine_metrics_have_percentiles_from_results(vision: Any, pipeline: FakePipeline) -> None:
    for i in range(5):
        vision.ProcessFrame(vision_pb2.ProcessFrameRequest(frame=jpeg_frame("gate", i)), timeout=5)
    m = vision.GetEngineMetrics(vision_pb2.GetEngineMetricsRequest(), timeout=5)
    assert m.inference_latency.p50_ms == 3.0 and m.inference_latency.p95_ms == 3.0
    assert m.pipeline_latency.p99_ms == 5.0
    assert m.batch_size.max == 1 and m.batch_size.last == 1
    assert m.extra["push_frames_waiting"] == 0
    assert m.extra["push_result_latency_p50_ms"] > 0


def test_removed_camera_is_unmapped_and_not_found(
    vision: Any, pipeline: FakePipeline, push_backend: PushFakeBackend, push_server: ControlServer
) -> None:
    vision.ProcessFrame(vision_pb2.ProcessFrameRequest(frame=jpeg_frame("gate", 1)), timeout=5)
    hub = push_server.hub
    assert hub is not None
    cam = hub.camera("gate")
    pipeline.paused.set()
    ring = push_backend.rings.pop("gate")
    ring.close()
    ring.unlink()
    assert hub.prune() == ["gate"] and cam.closed
    with pytest.raises(grpc.RpcError) as err:
        vision.ProcessFrame(vision_pb2.ProcessFrameRequest(frame=jpeg_frame("gate", 2)), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    pipeline.paused.clear()


def test_queue_metrics_show_the_results_ring(
    push_server: ControlServer, pipeline: FakePipeline
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{push_server.port}") as ch:
        vision = vision_pb2_grpc.VisionCoreServiceStub(ch)
        vision.ProcessFrame(vision_pb2.ProcessFrameRequest(frame=jpeg_frame("gate", 1)), timeout=5)
        time.sleep(2.5)  # the reader refreshes the ring's numbers every 2 s
        q = streaming_pb2_grpc.StreamingServiceStub(ch).GetQueueMetrics(
            streaming_pb2.GetQueueMetricsRequest(), timeout=5
        )
    names = [r.name for r in q.rings]
    assert names == sorted(names)
    results = next(r for r in q.rings if r.name == "results")
    assert results.capacity == 1 << 20 and results.written >= 1


def test_camera_stream_message_that_does_not_parse(
    push_server: ControlServer, pipeline: FakePipeline
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{push_server.port}") as ch:
        call = ch.stream_stream(
            "/itsd.v1.VisionCoreService/ProcessCameraStream",
            request_serializer=lambda b: b,
            response_deserializer=common_pb2.FrameResult.FromString,
        )
        good = jpeg_frame("gate", 1).SerializeToString()
        with pytest.raises(grpc.RpcError) as err:
            list(call(iter([good, good[: len(good) // 2]]), timeout=10))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "message 1 of the stream" in err.value.details()
    no_leaks(push_server)


def test_camera_stream_without_results_ends_with_deadline_exceeded(
    vision: Any,
    pipeline: FakePipeline,
    push_server: ControlServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    pipeline.paused.set()
    with pytest.raises(grpc.RpcError) as err:
        list(vision.ProcessCameraStream(iter([jpeg_frame("gate", 1)]), timeout=20))
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "Traceback" not in caplog.text
    pipeline.paused.clear()
    no_leaks(push_server)
