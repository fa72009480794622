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
  size, at most 1920x1080), the way a decode worker fills a ring;
- ``ring640``: every frame converted to RGB scaled to fit 640x640 (decode-time resize to
  what a 640-pixel model needs: 640x360);
- ``5fps``: ``SourceOptions(fps=5)`` with resize to 640x640: every frame decoded (the codec
  needs its reference frames) but only 5 per second converted.

CPU time (``time.process_time`` for ours, ffmpeg's own ``utime + stime``) is what
"per core" means here, so the numbers hold on a machine shared with other work better
than wall time would. Every rate counts decoded frames (for ``5fps`` too: frames decoded
per CPU second, one in five or six of them converted). The table gives medians over
``--rounds``, the ratios to ffmpeg (goal: at least 0.9), and cameras per core at 5 fps
(seconds of video per CPU second in ``5fps``): a 640x360 substream beside the 1080p main
stream (goal: at least 2x).

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
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import av  # noqa: E402

from itsd.config import CameraConfig  # noqa: E402
from itsd.sources import SourceOptions, open_source  # noqa: E402

CLIP = REPO.parent / "shared" / "media" / "street_overhead_dusk.mp4"
SIZES = ((640, 360), (1280, 720), (1920, 1080))
MODES = ("ffmpeg", "decode", "ring", "ring640", "5fps")


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


def run_ours(path: Path, mode: str) -> tuple[int, float]:
    """(frames decoded, CPU seconds) through our source in ``mode``."""
    opts = {
        "decode": SourceOptions(threads=1),
        "ring": SourceOptions(threads=1, max_width=1920, max_height=1080),
        "ring640": SourceOptions(threads=1, max_width=640, max_height=640),
        "5fps": SourceOptions(threads=1, max_width=640, max_height=640, fps=5),
    }[mode]
    convert = mode != "decode"
    cam = CameraConfig(id="bench", source=str(path))
    t0 = time.process_time()
    src = open_source(cam, opts)
    stats: dict[str, int] = {}
    n = 0
    for frame in src.frames(stats):
        n += 1
        if convert:
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
    args = ap.parse_args()
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is not on PATH (make system-deps installs it)", file=sys.stderr)
        return 2
    files = {size: make_clip(args.clip, *size, args.seconds) for size in SIZES}
    video_s = {size: count_frames(p) / 23.976 for size, p in files.items()}
    fps: dict[tuple[tuple[int, int], str], list[float]] = {}
    cpu_per_video_s: dict[tuple[int, int], list[float]] = {}
    t_start = time.monotonic()
    for r in range(args.rounds):
        order = MODES[r % len(MODES) :] + MODES[: r % len(MODES)]
        for size, path in files.items():
            for mode in order:
                n, cpu = run_ffmpeg(path) if mode == "ffmpeg" else run_ours(path, mode)
                fps.setdefault((size, mode), []).append(n / cpu)
                if mode == "5fps":
                    cpu_per_video_s.setdefault(size, []).append(cpu / video_s[size])
        print(f"round {r + 1}/{args.rounds} done ({time.monotonic() - t_start:.0f} s)", flush=True)
    med = {k: statistics.median(v) for k, v in fps.items()}
    cams = {s: 1.0 / statistics.median(v) for s, v in cpu_per_video_s.items()}
    print(
        f"\n{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}), {args.rounds} rounds, "
        f"{args.seconds:g} s clips; frames per CPU second, medians\n"
    )
    print(
        "| H.264 | ffmpeg -threads 1 | ours: decode | decode / ffmpeg | ours: + RGB at ring "
        "size | ring / ffmpeg | ours: + RGB 640x360 | ours: 5 fps kept (RGB 640x360) | "
        "5 fps / ffmpeg | cameras per core at 5 fps |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in SIZES:
        ff = med[(size, "ffmpeg")]
        row = [
            f"{size[0]}x{size[1]}",
            f"{ff:.0f}",
            f"{med[(size, 'decode')]:.0f}",
            f"{med[(size, 'decode')] / ff:.2f}",
            f"{med[(size, 'ring')]:.0f}",
            f"{med[(size, 'ring')] / ff:.2f}",
            f"{med[(size, 'ring640')]:.0f}",
            f"{med[(size, '5fps')]:.0f}",
            f"{med[(size, '5fps')] / ff:.2f}",
            f"{cams[size]:.1f}",
        ]
        print("| " + " | ".join(row) + " |")
    ratio = cams[SIZES[0]] / cams[SIZES[-1]]
    print(f"\ncameras per core at 5 fps, 640x360 substream / 1080p main stream: {ratio:.1f}x")
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
