"""The same frames through every backend present give the same boxes.

No YOLO weights can be downloaded here, so the test makes its own model: YOLO11n built
from Ultralytics' yaml with seeded random weights, its batch-norm statistics taken from
real street frames (so activations neither vanish nor explode), saved as an Ultralytics
checkpoint (.pt, the PyTorch backend) and exported to ONNX from the same weights (the
ONNX Runtime backend). Both engines then see real clip frames of several sizes; every
box of one must have a twin in the other: IoU >= 0.9, same class, score within 0.05.
TensorRT is not installable on these machines and is not compared.

Skips, saying why, when torch, ultralytics or onnx is not installed (extra ``torch``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import av
import numpy as np
import pytest

from itsd.engines.base import Detections, EngineOptions
from itsd.engines.preprocess import letterbox_batch
from itsd.engines.registry import create_engine

MISSING = [p for p in ("torch", "ultralytics", "onnx") if importlib.util.find_spec(p) is None]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(MISSING), reason=f"needs {', '.join(MISSING)} (pip install itsd[torch])"
    ),
]
IMGSZ = 320


def clip_frames(media_dir: Path) -> list[np.ndarray]:
    """Real frames of two clips, different sizes, RGB."""
    out = []
    for name, picks in (("street_overhead_dusk.mp4", (60, 200)), ("bikes.mp4", (120,))):
        with av.open(str(media_dir / name)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in picks:
                    out.append(np.asarray(frame.to_ndarray(format="rgb24")))
                if i >= max(picks):
                    break
    return out


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory, media_dir: Path) -> tuple[Path, Path]:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch
    from ultralytics.nn.tasks import DetectionModel

    frames = clip_frames(media_dir)
    batch = np.empty((len(frames), 3, IMGSZ, IMGSZ), dtype=np.float32)
    letterbox_batch(frames, batch)
    torch.manual_seed(0)
    net = DetectionModel("yolo11n.yaml", verbose=False)  # type: ignore[no-untyped-call]
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = None  # a plain average of the batches seen
            mod.reset_running_stats()
    net.train()
    with torch.no_grad():
        net(torch.from_numpy(batch))
    net.eval()
    for seq in net.model[-1].cv3:
        seq[-1].bias.data.fill_(-3.0)  # a few dozen boxes per frame at confidence 0.25
    folder = tmp_path_factory.mktemp("models")
    pt, onnx = folder / "rand11n.pt", folder / "rand11n.onnx"
    torch.save({"model": net, "train_args": {"imgsz": IMGSZ}}, pt)
    net.model[-1].export = True  # the head returns the decoded (B, 84, A) tensor only
    torch.onnx.export(
        net,
        (torch.zeros(1, 3, IMGSZ, IMGSZ),),
        str(onnx),
        opset_version=17,
        dynamo=False,
        input_names=["images"],
        output_names=["output0"],
        dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}},
    )
    return pt, onnx


def match(a: Detections, b: Detections) -> list[str]:
    """What in `a` has no twin in `b` (IoU >= 0.9, same class, score within 0.05)."""
    problems = []
    for i in range(len(a)):
        box = a.boxes[i]
        x1 = np.maximum(box[0], b.boxes[:, 0])
        y1 = np.maximum(box[1], b.boxes[:, 1])
        x2 = np.minimum(box[2], b.boxes[:, 2])
        y2 = np.minimum(box[3], b.boxes[:, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        area = (box[2] - box[0]) * (box[3] - box[1])
        areas = (b.boxes[:, 2] - b.boxes[:, 0]) * (b.boxes[:, 3] - b.boxes[:, 1])
        iou = inter / np.maximum(area + areas - inter, 1e-9)
        ok = (
            (iou >= 0.9)
            & (b.class_ids == a.class_ids[i])
            & (np.abs(b.scores - a.scores[i]) <= 0.05)
        )
        # A box right at the confidence threshold may fall on either side of it.
        if not ok.any() and a.scores[i] > 0.25 + 0.05:
            problems.append(f"box {i} {box.round(1)} class {a.class_ids[i]} {a.scores[i]:.3f}")
    return problems


def test_onnxruntime_and_torch_give_the_same_boxes(
    model_files: tuple[Path, Path], media_dir: Path
) -> None:
    pt, onnx = model_files
    opts = EngineOptions(confidence=0.25, iou=0.45)
    engines = [create_engine(onnx, "auto", opts), create_engine(pt, "auto", opts)]
    assert [e.name for e in engines] == ["onnxruntime", "torch"]
    assert all(e.input_size == (IMGSZ, IMGSZ) for e in engines)
    frames = clip_frames(media_dir)
    results = [e.infer(frames) for e in engines]
    total = 0
    for k, (ort_det, torch_det) in enumerate(zip(*results, strict=True)):
        assert len(ort_det) > 5, f"frame {k}: too few boxes to compare"
        assert abs(len(ort_det) - len(torch_det)) <= max(2, len(ort_det) // 20)
        assert not match(ort_det, torch_det), (k, match(ort_det, torch_det))
        assert not match(torch_det, ort_det), (k, match(torch_det, ort_det))
        total += len(ort_det)
    assert total > 20
    # A batch gives what single frames give (torch runs the batch in one forward pass).
    single = [engines[1].infer([f])[0] for f in frames]
    for one, batched in zip(single, results[1], strict=True):
        assert not match(one, batched)
    for e in engines:
        e.close()


def test_device_letterbox_matches_the_shared_one(
    model_files: tuple[Path, Path], media_dir: Path
) -> None:
    """The PyTorch backend's device letterbox (what runs on GPUs), checked on the CPU:
    the same pixels as the shared letterbox within one grey level, the same boxes."""
    from itsd.engines.torch_backend import TorchEngine

    pt, _ = model_files
    opts = EngineOptions(confidence=0.25, iou=0.45)
    shared = TorchEngine(pt, opts)
    device = TorchEngine(pt, opts, device_letterbox=True)
    frames = clip_frames(media_dir)
    frames.append(np.ascontiguousarray(frames[0][:, ::2]))  # another size, resized apart
    x, boxes = device.letterbox_device(frames)
    expected = np.empty((len(frames), 3, IMGSZ, IMGSZ), np.float32)
    expected_boxes = letterbox_batch(frames, expected)
    assert boxes == expected_boxes
    assert float(np.abs(x.numpy() - expected).max()) <= 1.01 / 255
    for a, b in zip(shared.infer(frames), device.infer(frames), strict=True):
        assert not match(a, b) and not match(b, a)


@pytest.mark.parametrize("device_letterbox", [False, True], ids=["host-letterbox", "device-lb"])
def test_device_reduced_output_gives_the_boxes_of_the_full_output(
    model_files: tuple[Path, Path], media_dir: Path, device_letterbox: bool
) -> None:
    """The PyTorch backend's reduction on the device (what runs on GPUs: best class,
    top-k candidates, decode_candidates), checked on the CPU against decode_yolo on the
    full head output of the same forward pass: the same boxes, classes and scores."""
    from itsd.engines.torch_backend import TorchEngine

    pt, _ = model_files
    opts = EngineOptions(confidence=0.25, iou=0.45)
    full = TorchEngine(pt, opts, device_letterbox=device_letterbox, device_reduce=False)
    reduced = TorchEngine(pt, opts, device_letterbox=device_letterbox, device_reduce=True)
    assert reduced.device_reduce and not full.device_reduce
    frames = clip_frames(media_dir)
    frames.append(np.ascontiguousarray(frames[0][:, ::2]))  # another size in the batch
    total = 0
    for a, b in zip(full.infer(frames), reduced.infer(frames), strict=True):
        assert len(a) == len(b)
        np.testing.assert_allclose(np.sort(a.scores), np.sort(b.scores))
        assert not match(a, b) and not match(b, a)
        total += len(a)
    assert total > 20
    full.close()
    reduced.close()
