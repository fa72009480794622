"""Analytics cost per camera beside inference cost; cameras per core at 10 fps.

One synthetic camera with 50 detections a frame: 50 vehicles drive known ground
trajectories on four lanes (both directions), drawn into 1280x720 boxes through a known
homography, with detector-like jitter (1.5 px) and a few missed detections. Each frame
goes through ``CameraAnalytics.process``, the analytics stage's own per-camera code
(tracker, counting lines, calibrated speed and heading, zones with queue, wrong-way,
speeding, no-stopping and congestion rules, blind-camera watch, interval summaries and
every event's JSON), measured in configurations taken in rotation:

* ``count``: tracker and 2 counting lines only (what the stage cost before zones);
* ``full``: the same plus calibration, speed and 3 zones with every rule;
* ``full+det``: ``full`` plus the per-frame detection event (50 items with speed and
  heading): what a camera costs with detection_events on.

Beside them, one single-threaded ONNX Runtime inference of the shared model on a 640x360
frame of a real clip (pre- and post-processing included): the inference cost per
camera-frame at batch 1. Times are CPU time of this process (``time.process_time``), so
that waiting for a core shared with other work does not count as cost; rounds are
rotated and the medians reported.

    .venv/bin/python bench/analytics_bench.py [--frames 300] [--rounds 5] [--json out.json]

``--shards 1,2``: what sharding buys (``performance.analytics_workers``). N processes,
each a shard running ``full+det`` cameras as fast as it can for ``--shard-s`` seconds of
wall time; the camera-frames per second of all of them together, for each N in rotation,
and the ratio to one shard. One process is the ceiling a daemon without shards has.

    .venv/bin/python bench/analytics_bench.py --shards 1,2 [--shard-s 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from itsd.analytics import COCO_NAMES
from itsd.config import AnalyticsConfig, CameraConfig
from itsd.records import DetectionRecord
from itsd.stages.analyze import CameraAnalytics

SHARED = Path(__file__).resolve().parents[2] / "shared"
W, H, FPS = 1280, 720, 10.0
GROUND_TO_IMAGE = np.array([[0.030, 0.0175, 0.5], [0.0, -0.004, 0.95], [0.0, 0.035, 1.0]])
WORLD = np.array([[-8.0, 5.0], [8.0, 5.0], [8.0, 60.0], [-8.0, 60.0], [0.0, 30.0]])


def project(ground: np.ndarray) -> np.ndarray:
    g = np.column_stack((ground, np.ones(len(ground))))
    p = (GROUND_TO_IMAGE @ g.T).T
    out: np.ndarray = p[:, :2] / p[:, 2:3]
    return out


def rect(x0: float, x1: float, y0: float, y1: float) -> list[list[float]]:
    return project(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])).tolist()


def camera(full: bool) -> CameraConfig:
    cfg: dict[str, object] = {
        "id": "bench",
        "source": "x.mp4",
        "lines": [
            {"id": "near", "start": [0.0, 0.6], "end": [1.0, 0.6]},
            {"id": "far", "start": [0.0, 0.35], "end": [1.0, 0.35]},
        ],
    }
    if full:
        cfg["calibration"] = {
            "image_points": project(WORLD).tolist(),
            "world_points": WORLD.tolist(),
        }
        cfg["zones"] = [
            {
                "id": "north_lanes",
                "polygon": rect(0.0, 7.0, 5.0, 60.0),
                "allowed_direction_deg": 0.0,
                "speed_limit_kmh": 60.0,
                "queue": True,
                "congestion": True,
            },
            {
                "id": "south_lanes",
                "polygon": rect(-7.0, 0.0, 5.0, 60.0),
                "allowed_direction_deg": 180.0,
                "speed_limit_kmh": 60.0,
                "queue": True,
            },
            {"id": "no_stopping", "polygon": rect(-7.0, 7.0, 20.0, 30.0), "no_stopping_s": 30.0},
        ]
    return CameraConfig.model_validate(cfg)


def traffic(frames: int, vehicles: int = 50, seed: int = 7) -> list[DetectionRecord]:
    """Records of ``vehicles`` cars looping along four lanes (they stay in view)."""
    rng = np.random.default_rng(seed)
    lanes = np.array([-5.25, -1.75, 1.75, 5.25])
    lane = lanes[np.arange(vehicles) % 4]
    sign = np.where(lane > 0, 1.0, -1.0)  # east lanes drive north, west lanes south
    speed = rng.uniform(20, 70, vehicles) / 3.6
    offset = rng.uniform(0, 55, vehicles)
    out = []
    t0 = 1_800_000_000.0
    for k in range(frames):
        t = k / FPS
        y = 5.0 + (offset + sign * speed * t) % 55.0
        g = np.column_stack((lane, y))
        p = project(g)
        size = project(g + np.array([1.8, 0.0]))[:, 0] - p[:, 0]
        w, h = size * W, size * W * 0.8
        cx, by = p[:, 0] * W, p[:, 1] * H
        boxes = np.column_stack((cx - w / 2, by - h, cx + w / 2, by))
        boxes += rng.normal(0.0, 1.5, boxes.shape)
        keep = rng.random(vehicles) > 0.03  # a few misses, as a detector has
        b = boxes[keep].astype(np.float32)
        n = len(b)
        out.append(
            DetectionRecord(
                camera_key=1,
                frame_id=k,
                pts=k,
                capture_wall_ns=round((t0 + t) * 1e9),
                acquire_mono_ns=0,
                infer_start_mono_ns=0,
                infer_end_mono_ns=0,
                width=W,
                height=H,
                batch_size=1,
                boxes=b,
                scores=rng.uniform(0.3, 0.95, n).astype(np.float32),
                class_ids=np.full(n, 2, np.int32),
                luma=80.0,
                picture_crc=k,
            )
        )
    return out


def analytics_ms(records: list[DetectionRecord], full: bool, detections: bool) -> float:
    """Mean CPU milliseconds per frame of one camera (after a warm-up of 30 frames)."""
    cam = CameraAnalytics(camera(full), COCO_NAMES, AnalyticsConfig(snapshots=False))
    for rec in records[:30]:
        cam.process(rec, detections, 0.25)
    start = time.process_time()
    for rec in records[30:]:
        cam.process(rec, detections, 0.25)
    return (time.process_time() - start) / (len(records) - 30) * 1e3


def inference_ms(repeat: int) -> float | None:
    """CPU milliseconds of one single-threaded inference of the shared model (640x360)."""
    model = SHARED / "models" / "yolo11n_int8_320.onnx"
    clip = SHARED / "media" / "street_overhead_dusk.mp4"
    if not model.is_file() or not clip.is_file():
        return None
    import av

    from itsd.engines.base import EngineOptions
    from itsd.engines.onnx_backend import OnnxEngine

    with av.open(str(clip)) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    engine = OnnxEngine(str(model), EngineOptions(intra_op_threads=1))
    for _ in range(5):
        engine.infer([frame])
    start = time.process_time()
    for _ in range(repeat):
        engine.infer([frame])
    return (time.process_time() - start) / repeat * 1e3


def _shard(frames: int, seconds: float, ready: Any, go: Any, out: Any) -> None:
    """One shard: builds its camera, says it is ready, waits for the start, then runs
    ``full+det`` camera-frames for ``seconds``; puts its camera-frames per second."""
    records = traffic(frames)
    cam = CameraAnalytics(camera(True), COCO_NAMES, AnalyticsConfig(snapshots=False))
    for rec in records[:30]:
        cam.process(rec, True, 0.25)  # warm-up
    ready.put(1)
    go.wait()
    start = time.perf_counter()
    done = 0
    while time.perf_counter() - start < seconds:
        for rec in records:
            cam.process(rec, True, 0.25)
        done += len(records)
    out.put(done / (time.perf_counter() - start))


def shards_bench(counts: list[int], frames: int, seconds: float, rounds: int) -> dict[str, object]:
    """Camera-frames/s of N shard processes together, rotated over rounds (medians)."""
    ctx = multiprocessing.get_context("spawn")
    rates: dict[int, list[float]] = {n: [] for n in counts}
    for r in range(rounds):
        for n in counts[r % len(counts) :] + counts[: r % len(counts)]:
            ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
            procs = [
                ctx.Process(target=_shard, args=(frames, seconds, ready, go, out)) for _ in range(n)
            ]
            for p in procs:
                p.start()
            for _ in procs:
                ready.get(timeout=300)  # every shard built its camera: all start together
            go.set()
            total = sum(out.get(timeout=seconds + 120) for _ in procs)
            for p in procs:
                p.join()
            rates[n].append(total)
            print(f"round {r + 1}: {n} shard(s) {total:8.1f} camera-frames/s", flush=True)
    base = statistics.median(rates[counts[0]])
    out_: dict[str, object] = {}
    for n in counts:
        med = statistics.median(rates[n])
        out_[str(n)] = {"camera_frames_per_s": round(med, 1), "ratio": round(med / base, 2)}
        print(
            f"{n} shard(s): {med:8.1f} camera-frames/s (x{med / base:.2f} of {counts[0]}) -> "
            f"{med / FPS:6.1f} cameras at {FPS:g} fps"
        )
    return out_


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--shards", default="", help="e.g. 1,2: measure shard processes instead")
    ap.add_argument("--shard-s", type=float, default=10.0)
    args = ap.parse_args()
    if args.shards:
        counts = [int(x) for x in args.shards.split(",")]
        res = shards_bench(counts, args.frames, args.shard_s, args.rounds)
        if args.json:
            args.json.write_text(json.dumps(res, indent=2))
        return
    records = traffic(args.frames)
    dets = statistics.mean(len(r.scores) for r in records)
    configs = {"count": (False, False), "full": (True, False), "full+det": (True, True)}
    times: dict[str, list[float]] = {k: [] for k in configs}
    infer: list[float] = []
    for r in range(args.rounds):
        order = list(configs)[r % 3 :] + list(configs)[: r % 3]
        for name in order:
            times[name].append(analytics_ms(records, *configs[name]))
        ms = inference_ms(20)
        if ms is not None:
            infer.append(ms)
    result: dict[str, object] = {"detections_per_frame": round(dets, 1), "fps": FPS}
    print(f"{dets:.1f} detections a frame, {args.frames} frames, {args.rounds} rounds (medians)")
    for name, ts in times.items():
        med = statistics.median(ts)
        per_core = 1000.0 / (med * FPS)
        result[name] = {"ms_per_frame": round(med, 3), "cameras_per_core_at_10fps": int(per_core)}
        print(
            f"analytics {name:<9} {med:7.3f} ms/frame  (rounds {', '.join(f'{t:.2f}' for t in ts)})"
            f"  -> {per_core:5.0f} cameras per core at {FPS:g} fps"
        )
    if infer:
        med = statistics.median(infer)
        result["inference_ms_per_frame"] = round(med, 2)
        full = statistics.median(times["full+det"])
        print(
            f"inference (ONNX Runtime, 1 thread, 320x320 int8 model, 640x360 frame) {med:.2f} "
            f"ms/frame -> {1000 / (med * FPS):.1f} cameras per core at {FPS:g} fps; analytics "
            f"(full+det) is {full / med * 100:.1f}% of it"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
