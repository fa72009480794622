"""A camera with ``ring_format: i420`` end to end: the decode worker copies YUV planes into
its ring, inference converts them after scaling to the model size and maps the boxes
back, and the detection events agree with the same footage carried as RGB."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon

pytestmark = pytest.mark.slow


def _clip(media_dir: Path, tmp_path: Path) -> Path:
    """The first 2 s (48 frames) of a shared clip."""
    out = tmp_path / "short.mp4"
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-y", "-i", str(media_dir / "street_overhead_dusk.mp4")),
            *("-frames:v", "48", "-c", "copy", "-an", str(out)),
        ],
        check=True,
    )
    return out


def _boxes(events: list[dict[str, Any]], camera: str) -> dict[int, list[tuple[float, ...]]]:
    out: dict[int, list[tuple[float, ...]]] = {}
    for e in events:
        if e["event_type"] == "detection" and e["camera_id"] == camera:
            out[e["frame_id"]] = sorted(
                tuple(d["bbox"][k] for k in ("x_min", "y_min", "x_max", "y_max"))
                for d in e["data"]["detections"]
            )
    return out


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_i420_ring_gives_the_detections_of_the_rgb_ring(
    start_daemon: Callable[..., Daemon], media_dir: Path, tmp_path: Path
) -> None:
    clip = str(_clip(media_dir, tmp_path))
    cams = [
        {"id": cid, "source": clip, "realtime": False, "target_fps": 240.0, "ring_format": fmt}
        for cid, fmt in (("rgb", "rgb24"), ("yuv", "i420"))
    ]
    d = start_daemon(cameras=cams, extra={"supervisor": {"exit_when_sources_end": True}})
    d.proc.wait(180)
    assert d.proc.returncode == 0, d.log()[-3000:]
    events = d.events()
    rgb, yuv = _boxes(events, "rgb"), _boxes(events, "yuv")
    assert sorted(yuv) == sorted(rgb) == list(range(48))  # every frame, lossless
    matched = total = 0
    for fid, boxes in rgb.items():
        total += len(boxes)
        for box in boxes:
            if any(_iou(box, other) > 0.8 for other in yuv[fid]):
                matched += 1
        # boxes are in the 640x360 frame's coordinates, not the model's
        assert all(0 <= b[2] <= 640 and 0 <= b[3] <= 360 for b in yuv[fid])
    assert total >= 48, "the clip shows cars in most frames"
    assert matched >= 0.9 * total, f"{matched} of {total} boxes found again from I420"
    assert abs(sum(map(len, yuv.values())) - total) <= 0.1 * total
