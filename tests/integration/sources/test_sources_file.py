"""File sources on real footage: every frame, decode-time resize, sampling, corrupt files."""

from __future__ import annotations

import itertools
import random
import subprocess
from pathlib import Path

import pytest
from source_helpers import camera, looks_like_footage, open_and_take

from itsd.errors import SourceError
from itsd.sources import SourceOptions, open_source


def test_file_delivers_every_frame_with_index_pts_and_capture_time(clip: Path) -> None:
    frames, stats, desc = open_and_take(str(clip), 10_000, SourceOptions(threads=1))
    assert desc == "h264 640x360 (mov)"
    assert len(frames) == 480 and not stats.get("corrupt")
    assert [f.index for f, _ in frames] == list(range(480))
    times = [f.time for f, _ in frames]
    assert times == sorted(times) and abs(times[-1] - 479 / 23.976) < 0.1
    assert all(f.capture_ns > 0 for f, _ in frames)
    assert looks_like_footage(frames[100][1])


def test_decode_time_resize_keeps_the_aspect_ratio(clip: Path) -> None:
    opts = SourceOptions(max_width=320, max_height=320, interpolation="AREA")
    frames, _, _ = open_and_take(str(clip), 3, opts)
    assert [p.shape for _, p in frames] == [(180, 320, 3)] * 3
    frame = frames[0][0]
    assert frame.rgb(640, 360).shape == (360, 640, 3)  # an explicit size still wins
    assert frame.rgb().shape == (180, 320, 3)


def test_sampling_keeps_the_target_fps_of_stream_time(clip: Path) -> None:
    frames, stats, _ = open_and_take(str(clip), 10_000, SourceOptions(fps=5))
    assert len(frames) == 100  # 20 s of video
    assert stats["sampled_out"] == 380
    gaps = [b.time - a.time for (a, _), (b, _) in itertools.pairwise(frames)]
    # A schedule, not a fixed stride: 5 or 4 frames of 1/23.976 s apart, 0.2 s on average.
    assert all(0.16 < g < 0.21 for g in gaps)
    assert abs(sum(gaps) / len(gaps) - 0.2) < 0.005


@pytest.fixture
def corrupt_files(clip: Path, tmp_path: Path) -> dict[str, Path]:
    """Three kinds of broken file: random bytes, a truncated MP4, and an MP4 whose header is
    fine but whose video data is garbage."""
    data = clip.read_bytes()
    rng = random.Random(7)
    random_bytes = tmp_path / "random.mp4"
    random_bytes.write_bytes(rng.randbytes(50_000))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 3])
    faststart = tmp_path / "faststart.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(clip),
            "-c",
            "copy",
            "-movflags",
            "+faststart",
            str(faststart),
        ],
        check=True,
        timeout=60,
    )
    fs = bytearray(faststart.read_bytes())
    start = fs.find(b"mdat") + 8
    fs[start:] = rng.randbytes(len(fs) - start)
    garbled = tmp_path / "garbled.mp4"
    garbled.write_bytes(bytes(fs))
    return {"random": random_bytes, "truncated": truncated, "garbled": garbled}


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("random", "not a video FFmpeg can read (invalid data)"),
        ("truncated", "not a video FFmpeg can read (invalid data)"),
        ("garbled", "corrupt: no frame could be decoded"),
    ],
)
def test_corrupt_file_fails_the_open_with_the_reason(
    corrupt_files: dict[str, Path], kind: str, reason: str
) -> None:
    path = corrupt_files[kind]
    with pytest.raises(SourceError) as err:
        open_source(camera(str(path)))
    assert str(err.value).startswith(f"camera cam1: cannot open {path}: {reason}")


def test_missing_file_and_directory_say_so(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        open_source(camera(str(tmp_path / "nope.mp4")))
    with pytest.raises(SourceError, match="it is a directory"):
        open_source(camera(str(tmp_path)))
