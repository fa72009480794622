"""The PyTorch backend on a real GPU: fp16, CUDA graphs and the device letterbox give
the boxes of the plain fp32 path.

The model is YOLO11n from Ultralytics' yaml with seeded random weights whose batch-norm
statistics come from real street frames (as in test_engines_equivalence.py: no weights
can be downloaded here). Marked ``gpu``: skipped, saying why, where torch, ultralytics or
a CUDA device is missing (every machine without a GPU, CI's too). bench/gpu_check.sh
runs it on a lent GPU.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from itsd.engines.base import Detections, EngineOptions
from itsd.engines.preprocess import letterbox_batch


def _cuda() -> str | None:
    """Why the GPU tests cannot run here, or None."""
    missing = [p for p in ("torch", "ultralytics") if importlib.util.find_spec(p) is None]
    if missing:
        return f"needs {', '.join(missing)}"
    import torch

    return None if torch.cuda.is_available() else "needs a CUDA device"


WHY = _cuda()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(WHY is not None, reason=WHY or "")]
IMGSZ = 320


@pytest.fixture(scope="module")
def frames(clip_frames: Callable[[str, int, int], list[np.ndarray]]) -> list[np.ndarray]:
    return clip_frames("street_overhead_dusk.mp4", 40, 6)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, frames: list[np.ndarray]) -> Path:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch
    from ultralytics.nn.tasks import DetectionModel

    batch = np.empty((len(frames), 3, IMGSZ, IMGSZ), dtype=np.float32)
    letterbox_batch(frames, batch)
    torch.manual_seed(0)
    net = DetectionModel("yolo11n.yaml", verbose=False)  # type: ignore[no-untyped-call]
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = None
            mod.reset_running_stats()
    net.train()
    with torch.no_grad():
        net(torch.from_numpy(batch))
    net.eval()
    for seq in net.model[-1].cv3:
        seq[-1].bias.data.fill_(-3.0)  # a few dozen boxes per frame at confidence 0.25
    path = tmp_path_factory.mktemp("models") / "rand11n.pt"
    torch.save({"model": net, "train_args": {"imgsz": IMGSZ}}, path)
    return path


def _engine(model: Path, precision: str, **kw: Any) -> Any:
    from itsd.engines.torch_backend import TorchEngine

    return TorchEngine(model, EngineOptions(gpu=0, precision=precision), max_batch=4, **kw)


def _close_outputs(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    """Two (n, 4 + classes, anchors) head outputs agree: box coordinates within a pixel
    (median) and class scores within 0.05 on 99% of the anchors. Per-box comparisons
    after NMS would not do: a random network's boxes near a threshold flip on rounding."""
    assert got.shape == ref.shape, what
    assert np.isfinite(got).all(), f"{what}: non-finite outputs"
    coords = np.abs(got[:, :4] - ref[:, :4])
    scores = np.abs(got[:, 4:].max(axis=1) - ref[:, 4:].max(axis=1))
    assert float(np.median(coords)) < 1.0, f"{what}: box coordinates differ {np.median(coords)}"
    assert float(np.percentile(scores, 99)) < 0.05, f"{what}: scores differ"


def _batch(frames: list[np.ndarray]) -> np.ndarray:
    out = np.empty((len(frames), 3, IMGSZ, IMGSZ), dtype=np.float32)
    letterbox_batch(frames, out)
    return out


def test_fp16_with_cuda_graphs_gives_the_outputs_of_fp32(
    model: Path, frames: list[np.ndarray]
) -> None:
    fp32 = _engine(model, "fp32", cuda_graphs=False)
    fp16 = _engine(model, "fp16", cuda_graphs=True)
    assert fp16.gpu and fp16.half and fp16.cuda_graphs
    assert str(fp16.device) == "cuda:0"
    batch = _batch(frames[:3])
    ref = fp32._forward(batch)
    got = fp16._forward(batch)
    _close_outputs(got, ref, "fp16 + CUDA graphs against fp32")
    dets = fp16.infer(frames)
    assert len(dets) == len(frames) and sum(len(d) for d in dets) > 0
    for d in dets:
        assert isinstance(d, Detections)
        assert (d.boxes[:, 2] <= 640 + 1e-3).all() and (d.boxes[:, 3] <= 360 + 1e-3).all()
    fp32.close()
    fp16.close()


def test_device_letterbox_gives_the_pixels_of_the_host_letterbox(
    model: Path, frames: list[np.ndarray]
) -> None:
    engine = _engine(model, "fp16")
    assert engine.device_letterbox
    x, _ = engine.letterbox_device(frames)
    device = x.float().cpu().numpy()
    host = _batch(frames)
    assert float(np.abs(device - host).max()) <= 1 / 255 + 1e-6
    engine.close()


def test_a_batch_padded_to_its_graph_bucket_gives_each_frame_its_own_output(
    model: Path, frames: list[np.ndarray]
) -> None:
    engine = _engine(model, "fp16")
    batch = _batch(frames[:3])
    together = engine._forward(batch)  # bucket 4: one slot padded
    alone = np.concatenate([engine._forward(batch[i : i + 1]) for i in range(3)])
    _close_outputs(together, alone, "batch of 3 in bucket 4 against one at a time")
    assert len(engine.infer(frames)) == 6  # 6 frames: chunks of max_batch 4
    engine.close()


def _twins(a: Detections, b: Detections) -> float:
    """Share of a's boxes with a twin in b: IoU >= 0.9, same class, score within 1e-3."""
    if len(a) == 0:
        return 1.0
    x1 = np.maximum(a.boxes[:, None, 0], b.boxes[None, :, 0])
    y1 = np.maximum(a.boxes[:, None, 1], b.boxes[None, :, 1])
    x2 = np.minimum(a.boxes[:, None, 2], b.boxes[None, :, 2])
    y2 = np.minimum(a.boxes[:, None, 3], b.boxes[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.prod(a.boxes[:, 2:] - a.boxes[:, :2], axis=1)
    area_b = np.prod(b.boxes[:, 2:] - b.boxes[:, :2], axis=1)
    iou = inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)
    ok = (
        (iou >= 0.9)
        & (a.class_ids[:, None] == b.class_ids[None, :])
        & (np.abs(a.scores[:, None] - b.scores[None, :]) <= 1e-3)
    )
    return float(ok.any(axis=1).mean())


@pytest.mark.parametrize("graphs", [True, False], ids=["graphs", "eager"])
@pytest.mark.parametrize("device_letterbox", [True, False], ids=["device-lb", "host-lb"])
def test_the_output_reduced_on_the_gpu_gives_the_boxes_of_the_full_output(
    model: Path, frames: list[np.ndarray], graphs: bool, device_letterbox: bool
) -> None:
    """reduce_head + decode_candidates (the default on GPUs) against decode_yolo on the
    whole fp16 output of the same engine: the same detections (equal fp16 scores may
    order NMS differently: ties aside)."""
    engine = _engine(model, "fp16", cuda_graphs=graphs, device_letterbox=device_letterbox)
    assert engine.device_reduce
    reduced = engine.infer(frames)
    engine.device_reduce = False
    full = engine.infer(frames)
    assert sum(len(d) for d in full) > 0
    for a, b in zip(full, reduced, strict=True):
        assert abs(len(a) - len(b)) <= 1
        assert _twins(a, b) >= 0.95 and _twins(b, a) >= 0.95
    engine.close()
