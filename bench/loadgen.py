"""Load generator: N cameras (RTSP or gRPC push) against a running itsd, latency measured.

    .venv/bin/python bench/loadgen.py --cameras 16 --fps 5 --duration 60 \\
        --target-server localhost:50051 --events /var/lib/itsd/events.jsonl [--mode push]

What it does:

1. Starts one real GStreamer RTSP server (``tools/rtsp_server.py --mounts N``, Debian's
   python3) serving the clip at ``/cam0`` ... ``/cam<N-1>``; ``--resolution WxH`` first
   makes a scaled H.264 copy of the clip with ffmpeg, ``--source-fps F`` one re-timed to
   F frames a second (cached under ``~/.cache/itsd``).
2. Registers the N cameras (``loadgen-000`` ...) with the daemon's ``RegisterStream`` at
   ``--fps``, runs for ``--duration`` seconds, then removes them again.
3. Reads the daemon's detection events as they are published (tailing the JSONL file of
   ``--events``, or the ``detection_events`` topic of ``--kafka``) and measures for each
   frame the time from capture (the event's ``timestamp``) to the moment the event was
   readable: frame-to-event latency, p50/p95/p99, and events per second per camera.
4. Samples the daemon's processes (CPU seconds and PSS memory, from /proc, by the pids
   health reports) and the GPU (``nvidia-smi``) when present; prints a progress line
   every 5 s and a JSON report at the end (``--json`` writes it to a file).

``--mode push`` sends the frames over gRPC instead (``push://`` cameras): the clip is
decoded once (scaled to ``--resolution`` if given) and each frame JPEG-encoded once
(``--push-frames`` of them, cached under ``~/.cache/itsd/loadgen``); each camera is
registered as ``push://loadgen-NNN`` and gets its own ``ProcessCameraStream``, a thread
that sends the cached frames in a loop at ``--fps`` with their capture time. A camera
keeps at most ``--push-inflight`` frames waiting for their result (as the daemon's
``api.max_inflight_frames``, default 2); a tick that comes while it has that many out
is a frame not sent (a dropped frame, counted as ``skipped``), as a camera's frame is
lost when nobody takes it. Besides the frame-to-event latency from the events (as in
RTSP mode) the report has the round trip of each result on its stream, and frames sent,
answered and skipped.

Bounded on purpose: at most 512 cameras, 3600 s and 60 fps, and only a daemon on this
machine (``localhost``/``127.0.0.1``): it is a test tool, not a traffic source for
someone else's server.

This tool must never change the daemon beyond registering and removing its own cameras.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


from itsd.control import client  # noqa: E402

DEFAULT_CLIP = REPO.parent / "shared" / "media" / "street_overhead_dusk.mp4"
MAX_CAMERAS, MAX_DURATION_S, MAX_FPS = 512, 3600.0, 60.0
LOCAL = ("localhost", "127.0.0.1", "[::1]", "::1")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scaled_clip(clip: Path, resolution: str | None, fps: float | None = None) -> Path:
    """The clip itself, or an H.264 copy scaled to ``WxH`` and/or re-timed to ``fps``
    frames a second (a camera whose stream runs at the analysis rate), made once and
    cached."""
    if not resolution and not fps:
        return clip
    filters, tags = [], []
    if resolution:
        w, h = (int(x) for x in resolution.lower().split("x"))
        filters.append(f"scale={w}:{h}")
        tags.append(f"{w}x{h}")
    if fps:
        filters.append(f"fps={fps:g}")
        tags.append(f"{fps:g}fps")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "itsd" / "loadgen"
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"{clip.stem}_{'_'.join(tags)}.mp4"
    if not out.exists():
        if shutil.which("ffmpeg") is None:
            raise SystemExit("loadgen: --resolution and --source-fps need ffmpeg on PATH")
        tmp = out.with_suffix(".tmp.mp4")
        gop = str(max(1, round(2 * fps))) if fps else "50"  # a key frame every 2 s
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-y",
                "-i",
                str(clip),
                "-vf",
                ",".join(filters),
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-g",
                gop,
                "-an",
                str(tmp),
            ],
            check=True,
        )
        tmp.rename(out)
    return out


def start_rtsp(clip: Path, mounts: int, port: int) -> subprocess.Popen[str]:
    """One GStreamer RTSP server with ``mounts`` cameras; waits until it listens."""
    proc = subprocess.Popen(
        [
            "/usr/bin/python3",
            str(REPO / "tools" / "rtsp_server.py"),
            "--file",
            str(clip),
            "--port",
            str(port),
            "--mounts",
            str(mounts),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        raise SystemExit(f"loadgen: the RTSP server did not start: {line.strip()}")
    return proc


def push_frames(clip: Path, resolution: str | None, count: int, quality: int = 85) -> list[bytes]:
    """The first ``count`` frames of the clip, decoded once, scaled to ``WxH`` if given
    and JPEG-encoded once; cached on disk (length-prefixed JPEGs) for the next run."""
    size = resolution.lower() if resolution else "native"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "itsd" / "loadgen"
    path = cache / f"{clip.stem}_{size}_q{quality}_{count}.jpegs"
    if path.exists():
        data, out, pos = path.read_bytes(), [], 0
        while pos + 4 <= len(data):
            n = int.from_bytes(data[pos : pos + 4], "little")
            out.append(data[pos + 4 : pos + 4 + n])
            pos += 4 + n
        if out:
            return out
    import av
    import cv2

    out = []
    wh = tuple(int(x) for x in size.split("x")) if resolution else None
    with av.open(str(clip)) as container:
        for frame in container.decode(video=0):
            img = frame.to_ndarray(format="bgr24")
            if wh is not None:
                img = cv2.resize(img, wh, interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise SystemExit(f"loadgen: frame {len(out)} of {clip} could not be encoded")
            out.append(buf.tobytes())
            if len(out) >= count:
                break
    if not out:
        raise SystemExit(f"loadgen: no frame decoded from {clip}")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"".join(len(j).to_bytes(4, "little") + j for j in out))
    tmp.rename(path)
    return out


class PushCamera(threading.Thread):
    """One ``push://`` camera: its frames sent on a ``ProcessCameraStream`` at ``fps``.

    The request iterator is paced by the clock. A frame is sent only while fewer than
    ``inflight`` of this camera's frames wait for their result (gRPC's transport would
    otherwise buffer megabytes of frames and the latency would grow without bound);
    otherwise that tick's frame is not sent (``skipped``), and neither are the ticks
    missed while the stream was held back: a real camera's frames do not wait either.
    Every result read back counts, with its round trip (result read - capture, ms)."""

    def __init__(
        self,
        channel: Any,
        camera_id: str,
        jpegs: list[bytes],
        fps: float,
        offset: int,
        inflight: int = 2,
    ) -> None:
        super().__init__(name=f"push-{camera_id}", daemon=True)
        self.channel = channel
        self.camera_id = camera_id
        self.jpegs = jpegs
        self.period = 1.0 / fps
        self.offset = offset  # cameras start at different frames of the clip
        self.inflight = inflight
        self.stop = threading.Event()
        self.sent = self.skipped = self.results = 0
        self.round_trips: list[float] = []  # ms
        self.error = ""

    def _requests(self) -> Any:
        from google.protobuf import timestamp_pb2

        from itsd.control._pb import common_pb2

        jpeg = common_pb2.IMAGE_ENCODING_JPEG
        n = len(self.jpegs)
        next_t = time.monotonic()
        fid = 0
        while not self.stop.is_set():
            now = time.monotonic()
            if now < next_t:
                if self.stop.wait(next_t - now):
                    return
            elif now - next_t >= self.period:
                missed = int((now - next_t) / self.period)
                self.skipped += missed
                next_t += missed * self.period
            if self.sent - self.results >= self.inflight:
                self.skipped += 1  # the daemon has not answered enough yet: dropped
                next_t += self.period
                continue
            ts = timestamp_pb2.Timestamp()
            ts.FromNanoseconds(time.time_ns())
            fid += 1
            yield common_pb2.Frame(
                camera_id=self.camera_id,
                frame_id=fid,
                capture_time=ts,
                encoded=common_pb2.EncodedImage(
                    format=jpeg, data=self.jpegs[(self.offset + fid) % n]
                ),
            )
            self.sent += 1
            next_t += self.period

    def run(self) -> None:
        import grpc

        from itsd.control._pb import vision_pb2_grpc

        stub = vision_pb2_grpc.VisionCoreServiceStub(self.channel)
        try:
            for res in stub.ProcessCameraStream(self._requests()):
                self.results += 1
                cap = res.capture_time.ToNanoseconds()
                self.round_trips.append((time.time_ns() - cap) / 1e6)
        except grpc.RpcError as err:
            if not self.stop.is_set():
                self.error = f"{err.code().name}: {err.details()}"


class Latencies:
    """Frame-to-event latencies of the cameras under test, filled by a reader thread."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.lock = threading.Lock()
        self.samples: list[float] = []  # seconds
        self.per_camera: dict[str, int] = {}
        self.stop = threading.Event()

    def add(self, event: dict[str, Any], seen: float) -> None:
        cam = str(event.get("camera_id", ""))
        if event.get("event_type") != "detection" or not cam.startswith(self.prefix):
            return
        ts = datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00"))
        with self.lock:
            self.samples.append(seen - ts.timestamp())
            self.per_camera[cam] = self.per_camera.get(cam, 0) + 1

    def snapshot(self) -> tuple[list[float], dict[str, int]]:
        with self.lock:
            return list(self.samples), dict(self.per_camera)


def tail_jsonl(path: Path, lat: Latencies) -> None:
    """Read events appended to ``path`` (from its end when started) until stopped."""
    while not path.exists() and not lat.stop.is_set():
        time.sleep(0.1)
    fh = open(path, "rb")  # noqa: SIM115 - reopened when the file is rotated
    try:
        fh.seek(0, os.SEEK_END)
        buf = b""
        while not lat.stop.is_set():
            chunk = fh.read(1 << 20)
            if not chunk:
                if os.stat(path).st_ino != os.fstat(fh.fileno()).st_ino:  # rotated
                    fh.close()
                    fh = open(path, "rb")  # noqa: SIM115
                time.sleep(0.01)
                continue
            seen = time.time()
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.strip():
                    lat.add(json.loads(line), seen)
    finally:
        fh.close()


def tail_kafka(bootstrap: str, topic: str, lat: Latencies) -> None:
    """Read the detection topic (new messages only) until stopped."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"itsd-loadgen-{os.getpid()}",
            "auto.offset.reset": "latest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    try:
        while not lat.stop.is_set():
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            lat.add(json.loads(msg.value() or b"{}"), time.time())
    finally:
        consumer.close()


def _pss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def stat_cpu_s(stat: Path) -> float:
    """User + system CPU seconds from a ``/proc/<pid>/stat`` (or a thread's
    ``/proc/<pid>/task/<tid>/stat``) file; OSError once the process is gone."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    try:
        return stat_cpu_s(Path(f"/proc/{pid}/stat"))
    except OSError:
        return 0.0


def daemon_pids(target: str) -> list[int]:
    """The daemon's stage pids (from health) and their parent, the supervisor."""
    health = client.get_health(target, 5)
    pids = {st.pid for st in health.stages if st.pid}
    parents = set()
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents.add(int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]))
    return sorted(pids | parents)


def gpu_sample() -> dict[str, float] | None:
    """GPU utilisation (%) and memory used (MiB) from nvidia-smi, or None."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=utilization.gpu,memory.used",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return None
    if not out:
        return None
    util, mem = (float(x) for x in out[0].split(","))
    return {"util_pct": util, "mem_mib": mem}


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of ``values`` (nearest rank); NaN when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    ap.add_argument("--target-server", default="localhost:50051", help="itsd gRPC address")
    ap.add_argument("--events", type=Path, help="the daemon's JSONL event file (outputs)")
    ap.add_argument("--kafka", help="bootstrap servers: read detection_events there instead")
    ap.add_argument("--topic", default="detection_events")
    ap.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    ap.add_argument("--resolution", help="WxH: serve an ffmpeg-scaled copy of the clip")
    ap.add_argument(
        "--source-fps",
        type=float,
        help="rtsp: serve a copy of the clip re-timed to this rate (a camera sending at "
        "the analysis rate; default: the clip's own rate)",
    )
    ap.add_argument(
        "--mode",
        choices=("rtsp", "push"),
        default="rtsp",
        help="rtsp: cameras on a local RTSP server; push: frames sent over gRPC",
    )
    ap.add_argument("--push-frames", type=int, default=150, help="push: JPEGs cached and looped")
    ap.add_argument(
        "--push-inflight",
        type=int,
        default=2,
        help="push: frames per camera awaiting their result before new ones are dropped",
    )
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds not measured at start")
    ap.add_argument("--json", type=Path, help="write the report here")
    args = ap.parse_args(argv)

    if not 1 <= args.cameras <= MAX_CAMERAS:
        ap.error(f"--cameras must be 1..{MAX_CAMERAS}")
    if not 0 < args.duration <= MAX_DURATION_S or not 0 < args.fps <= MAX_FPS:
        ap.error(f"--duration must be in (0, {MAX_DURATION_S:g}] and --fps in (0, {MAX_FPS:g}]")
    host = args.target_server.rsplit(":", 1)[0]
    if host not in LOCAL:
        ap.error("--target-server must be on this machine (localhost)")
    if args.events is None and args.kafka is None:
        ap.error("name where the events go: --events FILE or --kafka BOOTSTRAP")
    target = args.target_server

    if not 1 <= args.push_frames <= 10_000 or not 1 <= args.push_inflight <= 64:
        ap.error("--push-frames must be 1..10000 and --push-inflight 1..64")
    push = args.mode == "push"
    server: subprocess.Popen[str] | None = None
    if push:
        clip = args.clip
        jpegs = push_frames(args.clip, args.resolution, args.push_frames)
    else:
        clip = scaled_clip(args.clip, args.resolution, args.source_fps)
        port = _free_port()
        server = start_rtsp(clip, args.cameras, port)
    pushers: list[PushCamera] = []
    channels: list[Any] = []
    prefix = "loadgen-"
    lat = Latencies(prefix)
    reader = threading.Thread(
        target=tail_jsonl if args.events else tail_kafka,
        args=(args.events, lat) if args.events else (args.kafka, args.topic, lat),
        daemon=True,
    )
    reader.start()
    ids = [f"{prefix}{i:03d}" for i in range(args.cameras)]
    registered: list[str] = []
    report: dict[str, Any] = {
        "cameras": args.cameras,
        "fps": args.fps,
        "duration_s": args.duration,
        "clip": clip.name,
        "mode": args.mode,
        "resolution": args.resolution or "native",
        "source_fps": args.source_fps or "native",
        "machine": {"cores": os.cpu_count()},
        "date": datetime.now().isoformat(timespec="seconds"),
    }
    try:
        t_reg = time.monotonic()
        for i, cid in enumerate(ids):
            if push:
                client.register_stream(target, 60, cid, f"push://{cid}", args.fps, 0)
            else:
                url = f"rtsp://127.0.0.1:{port}/cam{i}"
                opts = {"open_timeout_s": 5.0}
                client.register_stream(target, 60, cid, url, args.fps, 0, opts)
            registered.append(cid)
        report["registration_s"] = round(time.monotonic() - t_reg, 2)
        if push:
            import grpc

            # A few channels (HTTP/2 connections) shared by the cameras' streams.
            channels = [grpc.insecure_channel(target) for _ in range(min(8, args.cameras))]
            for i, cid in enumerate(ids):
                ch = channels[i % len(channels)]
                cam = PushCamera(ch, cid, jpegs, args.fps, i * 7, args.push_inflight)
                pushers.append(cam)
                cam.start()
        pids = daemon_pids(target)
        time.sleep(min(args.warmup, args.duration))
        base_n = len(lat.snapshot()[0])
        push0 = [(c.sent, c.skipped, c.results, len(c.round_trips)) for c in pushers]
        cpu0 = sum(_cpu_s(p) for p in pids)
        t0 = time.monotonic()
        mem: list[float] = []
        gpus: list[dict[str, float]] = []
        end = t0 + max(0.0, args.duration - args.warmup)
        next_line = t0 + 5.0
        while time.monotonic() < end:
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            mem.append(sum(_pss_kib(p) for p in pids) / 1024)
            g = gpu_sample()
            if g is not None:
                gpus.append(g)
            if time.monotonic() >= next_line:
                next_line += 5.0
                samples, _ = lat.snapshot()
                run = samples[base_n:]
                el = time.monotonic() - t0
                sent = ""
                if pushers:
                    n_sent = sum(c.sent for c in pushers)
                    n_skip = sum(c.skipped for c in pushers)
                    sent = f"  pushed {n_sent} skipped {n_skip}"
                print(
                    f"[{el:5.0f} s] events {len(run) / el:7.1f}/s "
                    f"(target {args.cameras * args.fps:.0f}/s)  latency p50 "
                    f"{pct(run, 50) * 1000:6.1f} ms  p99 {pct(run, 99) * 1000:6.1f} ms  "
                    f"memory {mem[-1]:.0f} MiB{sent}",
                    flush=True,
                )
        dt = time.monotonic() - t0
        cpu = sum(_cpu_s(p) for p in pids) - cpu0
        samples, per_cam = lat.snapshot()
        run = samples[base_n:]
        report.update(
            {
                "measured_s": round(dt, 1),
                "events_per_s": round(len(run) / dt, 1) if dt else 0.0,
                "events_per_s_per_camera_min": round(
                    min((per_cam.get(c, 0) for c in ids), default=0) / args.duration, 2
                ),
                "offered_fps": args.cameras * args.fps,
                "latency_ms": {
                    "p50": round(pct(run, 50) * 1000, 1),
                    "p95": round(pct(run, 95) * 1000, 1),
                    "p99": round(pct(run, 99) * 1000, 1),
                    "mean": round(statistics.fmean(run) * 1000, 1) if run else None,
                },
                "daemon_cpu_cores": round(cpu / dt, 2) if dt else 0.0,
                "daemon_pss_mib": {"start": round(mem[0], 1), "end": round(mem[-1], 1)}
                if mem
                else None,
                "gpu": {
                    "util_pct_mean": round(statistics.fmean(g["util_pct"] for g in gpus), 1),
                    "mem_mib_max": max(g["mem_mib"] for g in gpus),
                }
                if gpus
                else None,
            }
        )
        if push:
            sent = sum(c.sent - p[0] for c, p in zip(pushers, push0, strict=True))
            skipped = sum(c.skipped - p[1] for c, p in zip(pushers, push0, strict=True))
            answered = sum(c.results - p[2] for c, p in zip(pushers, push0, strict=True))
            rtt = [x for c, p in zip(pushers, push0, strict=True) for x in c.round_trips[p[3] :]]
            report["push"] = {
                "frames_sent": sent,
                "frames_skipped": skipped,
                "results": answered,
                "sent_per_s": round(sent / dt, 1) if dt else 0.0,
                "skipped_share": round(skipped / (sent + skipped), 4) if sent + skipped else 0.0,
                "result_round_trip_ms": {
                    "p50": round(pct(rtt, 50), 1),
                    "p95": round(pct(rtt, 95), 1),
                    "p99": round(pct(rtt, 99), 1),
                },
                "errors": sorted({c.error for c in pushers if c.error}),
                "jpeg_kib_mean": round(statistics.fmean(len(j) for j in jpegs) / 1024, 1),
            }
    finally:
        for cam in pushers:
            cam.stop.set()
        for cam in pushers:
            cam.join(15)
        for ch in channels:
            ch.close()
        for cid in registered:
            try:
                client.unregister_stream(target, 60, cid)
            except client.ControlClientError as err:
                print(f"loadgen: could not remove {cid}: {err}", file=sys.stderr)
        lat.stop.set()
        if server is not None:
            server.kill()
            server.wait(10)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
