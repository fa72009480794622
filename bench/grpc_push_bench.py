"""Frames pushed over gRPC: what the push path costs beside the bare engine.

Starts a daemon (one inference worker, one ``push://`` camera ``gate``, no other camera)
and, in rounds whose order rotates, times:

  unary     ProcessFrame one frame at a time (JPEG), the client waiting for each answer
  stream    ProcessCameraStream, the client sending as fast as flow control lets it
  engine    OnnxEngine.infer in this process on the same frames, decoded (the ceiling:
            one core, no JPEG decode, no rings, no tracker, no events)

and reports per contender the median frames/s over rounds, plus the median and p95
latency of the unary calls. stream/engine is the share of the bare engine's rate the
push path keeps (the push path also decodes each JPEG, tracks, counts and publishes).

Usage: .venv/bin/python bench/grpc_push_bench.py [--model PATH] [--clip PATH] [--rounds N]

This script must never be imported by the package or the tests.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import grpc
import numpy as np
import yaml

from itsd.control._pb import common_pb2, vision_pb2, vision_pb2_grpc
from itsd.engines.base import EngineOptions
from itsd.engines.onnx_backend import OnnxEngine

SHARED = Path(__file__).resolve().parents[2] / "shared"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def frames_of(clip: Path, count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(clip))
    out = []
    while len(out) < count:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    cap.release()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(SHARED / "models" / "yolo11n_int8_320.onnx"))
    ap.add_argument("--clip", default=str(SHARED / "media" / "suburban_street.mp4"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--frames", type=int, default=60)
    args = ap.parse_args()

    bgr = frames_of(Path(args.clip), args.frames)
    jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes() for f in bgr]
    rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in bgr]
    work = Path(tempfile.mkdtemp(prefix="itsd-push-bench-"))
    port = free_port()
    cfg = {
        "model": {"path": args.model},
        "performance": {"inference_workers": 1, "decode_workers": 1},
        "outputs": {"jsonl_path": str(work / "events.jsonl")},
        "server": {"grpc_port": port, "monitoring_port": 0},
        "pid_file": str(work / "itsd.pid"),
        "state_dir": str(work / "state"),
        "cameras": [{"id": "gate", "source": "push://gate"}],
    }
    (work / "itsd.yaml").write_text(yaml.safe_dump(cfg))
    log = open(work / "itsd.log", "wb")  # noqa: SIM115 - closed below
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "itsd",
            "start",
            "--foreground",
            "--config",
            str(work / "itsd.yaml"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=work,
    )
    engine = OnnxEngine(args.model, EngineOptions(intra_op_threads=1))
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = vision_pb2_grpc.VisionCoreServiceStub(channel)
        fid = [0]

        def frame(i: int) -> common_pb2.Frame:
            fid[0] += 1
            return common_pb2.Frame(
                camera_id="gate",
                frame_id=fid[0],
                encoded=common_pb2.EncodedImage(
                    format=common_pb2.IMAGE_ENCODING_JPEG, data=jpegs[i]
                ),
            )

        deadline = time.monotonic() + 120
        while True:
            try:
                stub.ProcessFrame(vision_pb2.ProcessFrameRequest(frame=frame(0)), timeout=5)
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"the daemon did not answer; see {work / 'itsd.log'}"
                    ) from None
                time.sleep(1)
        latencies: list[float] = []

        def unary() -> float:
            t0 = time.perf_counter()
            for i in range(len(jpegs)):
                t = time.perf_counter()
                stub.ProcessFrame(vision_pb2.ProcessFrameRequest(frame=frame(i)), timeout=30)
                latencies.append(time.perf_counter() - t)
            return len(jpegs) / (time.perf_counter() - t0)

        def stream() -> float:
            t0 = time.perf_counter()
            n = sum(
                1
                for _ in stub.ProcessCameraStream(
                    (frame(i) for i in range(len(jpegs))), timeout=120
                )
            )
            assert n == len(jpegs)
            return n / (time.perf_counter() - t0)

        def bare() -> float:
            t0 = time.perf_counter()
            for f in rgb:
                engine.infer([f])
            return len(rgb) / (time.perf_counter() - t0)

        contenders = {"unary": unary, "stream": stream, "engine": bare}
        rates: dict[str, list[float]] = {k: [] for k in contenders}
        names = list(contenders)
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                rates[name].append(contenders[name]())
        print(f"{len(jpegs)} frames of {Path(args.clip).name} per contender, {args.rounds} rounds")
        for name in names:
            print(f"  {name:<7} {statistics.median(rates[name]):7.1f} frames/s  {rates[name]}")
        ms = sorted(x * 1000 for x in latencies)
        p95 = ms[int(0.95 * len(ms))]
        print(f"  unary latency: median {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms")
        ratio = statistics.median(rates["stream"]) / statistics.median(rates["engine"])
        print(f"  stream/engine: {ratio:.2f}")
    finally:
        engine.close()
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            os.kill(daemon.pid, signal.SIGKILL)
        log.close()


if __name__ == "__main__":
    main()
