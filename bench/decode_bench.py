"""Benchmark: decode frames/s per core through our source beside ``ffmpeg -threads 1``.

For each of 640x360, 1280x720 and 1920x1080 H.264 (made once with ffmpeg from a shared
clip, ``street_overhead_dusk.mp4``, into a cache folder outside the repository: libx264
``veryfast``, CRF 23, GOP 2 s, no B-frames, as an IP camera sends), in the same run and
in rotated order each round:

- ``ffmpeg``: ``ffmpeg -threads 1 -i FILE -f null -`` with ``-benchmark``; its CPU time
  (user + system) is the reference single-thread decode rate;
- ``decode``: our source (``itsd.sources.open_source``, ``SourceOptions(threads=1)``, one
  thread as a decode worker runs it) decoding every frame, no pixels asked for: what our
  loop costs beside FFmpeg's own;
- ``ring``: the same, plus every frame converted to RGB at the ring size (the frame's own
  size, at most 1920x1080) and written into a real frame ring, the way a decode worker
  fills a ring with ``ring_format: rgb24`` (the old path, and still the default);
- ``i420``: the same, but each frame's YUV 4:2:0 planes copied straight into a ring
  slot (``FrameRing.begin_write`` as I420, ``PyAVFrame.i420_into``): what a decode
  worker costs per frame with ``ring_format: i420`` (the chosen path: no colour
  conversion, no intermediate array);
- ``ring640``: every frame converted to RGB scaled to fit 640x640 (decode-time resize to
  what a 640-pixel model needs: 640x360);
- ``5fps``: ``SourceOptions(fps=5)`` with resize to 640x640: every frame decoded (the codec
  needs its reference frames) but only 5 per second converted.

Not measured here, and why: an FFmpeg child process piping raw frames (``ffmpeg -f
rawvideo -pix_fmt yuv420p pipe:``, read into the slot with ``readinto``) reached 0.56
of ``ffmpeg -f null`` at 640x360 counting the child's CPU (0.44 with ``rgb24``): the
pipe's copies cost more than PyAV's per-frame overhead.

CPU time (``time.process_time`` for ours, ffmpeg's own ``utime + stime``) is what
"per core" means here, so the numbers hold on a machine shared with other work better
than wall time would. Every rate counts decoded frames (for ``5fps`` too: frames decoded
per CPU second, one in five or six of them converted). The table gives medians over
``--rounds``, the ratios to ffmpeg (goal: at least 0.9), and cameras per core at 5 fps
(seconds of video per CPU second in ``5fps``): a 640x360 substream beside the 1080p main
stream (goal: at least 2x). Use clips of 16 s or more: at 8 s (192 frames, about 0.1 s
of CPU at 640x360) opening the file and starting ffmpeg weigh on the ratios.

    .venv/bin/python bench/decode_bench.py [--rounds 3] [--seconds 8] [--json FILE]

This script must never be imported by itsd; it only measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import av  # noqa: E402

from itsd.config import CameraConfig  # noqa: E402
from itsd.shm import FrameRing, new_run_id, segment_name  # noqa: E402
from itsd.shm.frame_ring import PIXEL_FORMAT_I420, PIXEL_FORMAT_RGB24  # noqa: E402
from itsd.sources import SourceOptions, as_i420, open_source  # noqa: E402

CLIP = REPO.parent / "shared" / "media" / "street_overhead_dusk.mp4"
SIZES = ((640, 360), (1280, 720), (1920, 1080))
MODES = ("ffmpeg", "decode", "ring", "i420", "ring640", "5fps")


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "itsd" / "decode-bench"


def make_clip(src: Path, width: int, height: int, seconds: float) -> Path:
    """The clip at ``width`` x ``height`` (made once, then taken from the cache)."""
    out = cache_dir() / f"{src.stem}_{width}x{height}_{seconds:g}s.mp4"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.mp4")
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(src)),
            *("-t", f"{seconds:g}", "-vf", f"scale={width}:{height}:flags=bicubic"),
            *("-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-bf", "0"),
            *("-g", "48", "-pix_fmt", "yuv420p", "-an", str(tmp)),
        ],
        check=True,
    )
    tmp.rename(out)
    return out


def run_ffmpeg(path: Path) -> tuple[int, float]:
    """(frames, CPU seconds) of ``ffmpeg -threads 1 ... -f null``."""
    proc = subprocess.run(
        [
            *("ffmpeg", "-hide_banner", "-nostats", "-benchmark", "-threads", "1"),
            *("-i", str(path), "-an", "-f", "null", "-"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    m = re.search(r"bench: utime=([\d.]+)s stime=([\d.]+)s", proc.stderr)
    frames = re.findall(r"frame=\s*(\d+)", proc.stderr)
    if not m:
        raise RuntimeError(f"no -benchmark line from ffmpeg:\n{proc.stderr[-500:]}")
    n = int(frames[-1]) if frames else count_frames(path)
    return n, float(m.group(1)) + float(m.group(2))


def count_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def run_ours(path: Path, mode: str, ring: FrameRing) -> tuple[int, float]:
    """(frames decoded, CPU seconds) through our source in ``mode``."""
    opts = {
        "decode": SourceOptions(threads=1),
        "ring": SourceOptions(threads=1, max_width=1920, max_height=1080),
        "i420": SourceOptions(threads=1, max_width=1920, max_height=1080),
        "ring640": SourceOptions(threads=1, max_width=640, max_height=640),
        "5fps": SourceOptions(threads=1, max_width=640, max_height=640, fps=5),
    }[mode]
    cam = CameraConfig(id="bench", source=str(path))
    t0 = time.process_time()
    src = open_source(cam, opts)
    stats: dict[str, int] = {}
    n = 0
    for frame in src.frames(stats):
        n += 1
        if mode == "decode":
            continue
        planar = as_i420(frame) if mode == "i420" else None
        if planar is not None:
            size = planar.i420_size()
            assert size is not None
            ws = ring.begin_write(size[0], size[1], PIXEL_FORMAT_I420)
            assert ws is not None
            planar.i420_into(ws.pixels)
            ws.commit(frame_id=n, capture_ts_ns=frame.capture_ns, pts=frame.pts)
        elif mode == "ring":
            ring.write(
                frame.rgb(),
                frame_id=n,
                capture_ts_ns=frame.capture_ns,
                pts=frame.pts,
                pixel_format=PIXEL_FORMAT_RGB24,
            )
        else:
            frame.rgb()
    src.close()
    cpu = time.process_time() - t0
    return n + stats.get("sampled_out", 0), cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0, help="length of the test clips")
    ap.add_argument("--clip", type=Path, default=CLIP)
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--sizes",
        default=",".join(f"{w}x{h}" for w, h in SIZES),
        help="comma-separated sizes to measure (default: all three)",
    )
    ap.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma-separated contenders (default: all; the table needs them all)",
    )
    args = ap.parse_args()
    modes = tuple(m for m in MODES if m in args.modes.split(","))
    if "ffmpeg" not in modes or len(modes) != len(args.modes.split(",")):
        print(f"--modes: ffmpeg and any of {', '.join(MODES[1:])}", file=sys.stderr)
        return 2
    sizes = tuple(size for size in SIZES if f"{size[0]}x{size[1]}" in args.sizes.split(","))
    if len(sizes) != len(args.sizes.split(",")):
        print(f"--sizes: each one of {', '.join(f'{w}x{h}' for w, h in SIZES)}", file=sys.stderr)
        return 2
    # A stop (SIGTERM) still unlinks the bench's ring in the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is not on PATH (make system-deps installs it)", file=sys.stderr)
        return 2
    files = {size: make_clip(args.clip, *size, args.seconds) for size in sizes}
    video_s = {size: count_frames(p) / 23.976 for size, p in files.items()}
    fps: dict[tuple[tuple[int, int], str], list[float]] = {}
    cpu_per_video_s: dict[tuple[int, int], list[float]] = {}
    t_start = time.monotonic()
    # A real frame ring (the reader never takes: the writer overwrites, as when inference
    # is behind), so "ring" and "i420" pay what a decode worker pays to fill a slot.
    ring = FrameRing.create(
        segment_name(new_run_id(), "frame", "bench"),
        camera_key=0,
        slot_count=3,
        max_width=1920,
        max_height=1080,
    )
    try:
        for r in range(args.rounds):
            order = modes[r % len(modes) :] + modes[: r % len(modes)]
            for size, path in files.items():
                for mode in order:
                    n, cpu = run_ffmpeg(path) if mode == "ffmpeg" else run_ours(path, mode, ring)
                    fps.setdefault((size, mode), []).append(n / cpu)
                    if mode == "5fps":
                        cpu_per_video_s.setdefault(size, []).append(cpu / video_s[size])
            done = time.monotonic() - t_start
            print(f"round {r + 1}/{args.rounds} done ({done:.0f} s)", flush=True)
    finally:
        ring.close()
        ring.unlink()
    med = {k: statistics.median(v) for k, v in fps.items()}
    cams = {s: 1.0 / statistics.median(v) for s, v in cpu_per_video_s.items()}
    print(
        f"\n{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}), {args.rounds} rounds, "
        f"{args.seconds:g} s clips; frames per CPU second, medians\n"
    )
    print(
        "| H.264 | ffmpeg -threads 1 | ours: decode | decode / ffmpeg | ring rgb24 (old) | "
        "rgb24 / ffmpeg | ring i420 (new) | i420 / ffmpeg | ours: + RGB 640x360 | "
        "ours: 5 fps kept (RGB 640x360) | 5 fps / ffmpeg | cameras per core at 5 fps |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def rate(size: tuple[int, int], mode: str) -> str:
        return f"{med[(size, mode)]:.0f}" if (size, mode) in med else "-"

    def ratio(size: tuple[int, int], mode: str) -> str:
        if (size, mode) not in med:
            return "-"
        return f"{med[(size, mode)] / med[(size, 'ffmpeg')]:.2f}"

    for size in sizes:
        row = [
            f"{size[0]}x{size[1]}",
            rate(size, "ffmpeg"),
            rate(size, "decode"),
            ratio(size, "decode"),
            rate(size, "ring"),
            ratio(size, "ring"),
            rate(size, "i420"),
            ratio(size, "i420"),
            rate(size, "ring640"),
            rate(size, "5fps"),
            ratio(size, "5fps"),
            f"{cams[size]:.1f}" if size in cams else "-",
        ]
        print("| " + " | ".join(row) + " |")
    # Each contender against the ffmpeg run of its own round (same machine state): on a
    # busy machine the median of these paired ratios moves less than the ratio of medians.
    print("\npaired ratios to ffmpeg (median over rounds of each round's ratio):")
    for size in sizes:
        ff_runs = fps[(size, "ffmpeg")]
        parts = []
        for mode in modes[1:]:
            paired = [a / b for a, b in zip(fps[(size, mode)], ff_runs, strict=True)]
            parts.append(f"{mode} {statistics.median(paired):.2f}")
        print(f"  {size[0]}x{size[1]}: " + ", ".join(parts))
    if SIZES[0] in cams and SIZES[-1] in cams:
        more = cams[SIZES[0]] / cams[SIZES[-1]]
        print(f"\ncameras per core at 5 fps, 640x360 substream / 1080p main stream: {more:.1f}x")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "fps": {f"{s[0]}x{s[1]}/{m}": v for (s, m), v in fps.items()},
                    "cameras_per_core_5fps": {f"{s[0]}x{s[1]}": c for s, c in cams.items()},
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
