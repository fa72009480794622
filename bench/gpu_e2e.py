"""End-to-end benchmark on an NVIDIA GPU (issue 13's GPU run): itsd beside the limit and
beside the loop a skilled Python user writes, at 1080p and at 640x360.

    python bench/gpu_e2e.py --clip C [--cameras 24] [--json F] [--dry]

The model is YOLO11n built from Ultralytics' yaml with random weights (batch norms fitted
on the clip), fp16, input 640; speed does not depend on the weights. Per clip (each
``--clip``, e.g. 1920x1080 and 640x360 H.264):

* **(a) limit**: the model's forward alone, fp16 with a CUDA graph at batch 64, on a
  pre-letterboxed input already on the GPU (output left there): images/s;
* **(b) itsd**: ``itsd start`` with ``--cameras`` copies of the clip as file sources at
  full speed (``realtime: false``), ``gpus: [0]``, the PyTorch backend, decode workers
  with NVDEC and CPU decoders side by side (``--nvdec-per-worker`` cameras of each decode
  worker on NVDEC, the rest on its CPU threads), frames scaled to 640 as they are
  decoded; frames/s = detection events / wall time from the first decoder's start to
  the end of the last source;
* **(c) user loop**: one process, one PyNvVideoCodec ``ThreadedDecoder`` per camera
  (planar RGB on the GPU) -> one torch batch of every camera's next frame -> letterbox
  on the GPU -> YOLO11n fp16 -> confidence filter and torchvision's batched NMS per
  image; each camera plays its clip once; frames/s.

Goals (issue 13): (b) >= 2x (c) at 1080p, (b) >= 0.8x (a) at 640x360. ``--json`` writes
every number. Without a GPU (or with ``--dry``) it only builds and validates itsd's
configuration for each clip and writes the reason the runs were skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from infer_backend_bench import clip_frames, device_forward, random_yolo11n  # noqa: E402

from itsd.config import parse_config  # noqa: E402
from itsd.engines.base import EngineOptions  # noqa: E402
from itsd.engines.preprocess import letterbox_batch  # noqa: E402

IMGSZ = 640


def why_no_gpu() -> str | None:
    """Why the GPU runs cannot happen here, or None."""
    try:
        import PyNvVideoCodec  # noqa: F401
        import torch
    except Exception as err:  # PyNvVideoCodec raises RuntimeError without the driver's
        # video libraries
        return f"needs torch and PyNvVideoCodec ({str(err).splitlines()[0][:200]})"
    return None if torch.cuda.is_available() else "no CUDA device"


def limit(model: Path, frames: list[np.ndarray], seconds: float, batch: int = 64) -> float:
    """(a): images/s of the fp16 forward with a CUDA graph at ``batch``, input on the GPU."""
    from itsd.engines.torch_backend import TorchEngine

    engine = TorchEngine(
        model, EngineOptions(gpu=0, precision="fp16"), imgsz=IMGSZ, max_batch=batch
    )
    tensor = np.empty((batch, 3, IMGSZ, IMGSZ), np.float32)
    letterbox_batch([frames[i % len(frames)] for i in range(batch)], tensor)
    run = device_forward(engine, tensor)
    run()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        run()
        n += 1
    out = n * batch / (time.perf_counter() - t0)
    engine.close()
    return out


def itsd_config(model: Path, clip: Path, args: argparse.Namespace, d: Path) -> dict[str, Any]:
    """(b)'s configuration: ``args.cameras`` copies of the clip on GPU 0."""
    return {
        "model": {"path": str(model), "backend": "torch", "precision": "fp16"},
        "gpus": [0],
        "performance": {
            "target_fps": 240,
            "batch_size": 32,
            "max_batch_size": 64,
            "latency_target_ms": 100,
            "decode_workers": args.decode_workers,
            "nvdec_cameras_per_worker": args.nvdec_per_worker,
        },
        "outputs": {"jsonl_path": str(d / "events.jsonl")},
        "server": {"grpc_port": 0, "monitoring_port": 0},
        "pid_file": str(d / "itsd.pid"),
        "state_dir": str(d / "state"),
        "logging": {"level": "INFO"},
        "supervisor": {"exit_when_sources_end": True},
        "cameras": [
            {
                "id": f"gpu{i}",
                "source": str(clip),
                "realtime": False,
                "decoder": "auto",
                "max_width": IMGSZ,
                "max_height": IMGSZ,
                "lines": [{"id": "mid", "start": [0.5, 0.0], "end": [0.5, 1.0]}],
            }
            for i in range(args.cameras)
        ],
    }


def _log_time(line: str) -> float:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def run_itsd(model: Path, clip: Path, args: argparse.Namespace) -> dict[str, Any]:
    """(b): detection events per second of wall time, and the decoders in use."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "c.yaml").write_text(yaml.safe_dump(itsd_config(model, clip, args, d)))
        proc = subprocess.run(
            [sys.executable, "-m", "itsd", "start", "--config", str(d / "c.yaml")],
            capture_output=True,
            text=True,
            timeout=args.itsd_timeout,
        )
        log = proc.stderr.splitlines()
        if proc.returncode != 0:
            raise RuntimeError(f"itsd failed ({proc.returncode}): {proc.stderr[-2000:]}")
        t0 = min(_log_time(x) for x in log if "started decode" in x)
        t1 = max(_log_time(x) for x in log if "every source has ended" in x)
        events = (d / "events.jsonl").read_text().splitlines()
    dets = sum(1 for line in events if json.loads(line).get("event_type") == "detection")
    nvdec = sum(1 for x in log if "nvdec gpu" in x)
    return {"fps": dets / (t1 - t0), "frames": dets, "wall_s": t1 - t0, "nvdec_log_lines": nvdec}


def _planar(t: Any) -> Any:
    """A decoded RGBP frame as a (3, H, W) uint8 tensor: PyNvVideoCodec hands planar RGB
    as (3H, W) (its samples say so), some versions as (3, H, W) or HWC."""
    if t.dim() == 2:
        return t.view(3, t.shape[0] // 3, t.shape[1])
    if t.shape[-1] == 3 and t.shape[0] != 3:
        return t.permute(2, 0, 1)
    return t


def detect(net: Any, x: Any) -> int:
    """(c)'s model step on a (n, 3, H, W) uint8 batch on the model's device: letterbox,
    forward in the model's dtype, confidence filter and batched NMS per image; returns
    the number of boxes kept (at most 300 per image)."""
    import torch
    import torchvision
    from torch.nn import functional

    p0 = next(net.parameters())
    x = x.to(p0.dtype)
    h, w = int(x.shape[2]), int(x.shape[3])
    r = min(IMGSZ / h, IMGSZ / w)
    nh, nw = round(h * r), round(w * r)
    x = functional.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    top, left = (IMGSZ - nh) // 2, (IMGSZ - nw) // 2
    lb = torch.full((len(x), 3, IMGSZ, IMGSZ), 114, dtype=x.dtype, device=x.device)
    lb[:, :, top : top + nh, left : left + nw] = x
    lb = (lb / 255).contiguous(memory_format=torch.channels_last)
    out = net(lb)
    pred = (out[0] if isinstance(out, list | tuple) else out).transpose(1, 2)
    kept = 0
    for p in pred:  # (anchors, 4 + classes)
        scores, cls = p[:, 4:].max(1)
        keep = scores > 0.25
        xywh, scores, cls = p[keep, :4].float(), scores[keep].float(), cls[keep]
        xyxy = torch.cat((xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2), 1)
        kept += int(torchvision.ops.batched_nms(xyxy, scores, cls, 0.45)[:300].numel())
    return kept


def user_loop(model: Path, clip: Path, cameras: int) -> dict[str, Any]:
    """(c): ThreadedDecoder per camera -> torch batch -> letterbox -> fp16 -> NMS."""
    import PyNvVideoCodec as nvc  # noqa: N813
    import torch

    from itsd.engines.torch_backend import load_detection_model

    dev = torch.device("cuda", 0)
    net, _ = load_detection_model(model)
    net = net.float().fuse(verbose=False).to(dev).half().eval()
    net = net.to(memory_format=torch.channels_last)
    decoders = [
        nvc.ThreadedDecoder(
            str(clip),
            buffer_size=12,
            gpu_id=0,
            use_device_memory=True,
            output_color_type=nvc.OutputColorType.RGBP,
        )
        for _ in range(cameras)
    ]
    frames = boxes = 0
    live = list(range(cameras))
    t0 = time.perf_counter()
    with torch.inference_mode():
        while live:
            batch = []
            for i in list(live):
                got = decoders[i].get_batch_frames(1)
                if not got:
                    live.remove(i)
                    continue
                batch.append(_planar(torch.from_dlpack(got[0])))
            if not batch:
                break
            boxes += detect(net, torch.stack(batch))
            frames += len(batch)
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return {"fps": frames / wall, "frames": frames, "wall_s": wall, "boxes": boxes}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clip", type=Path, action="append", required=True)
    ap.add_argument("--cameras", type=int, default=24)
    ap.add_argument("--decode-workers", type=int, default=8)
    ap.add_argument("--nvdec-per-worker", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=5.0, help="(a)'s timing")
    ap.add_argument("--itsd-timeout", type=float, default=150.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--dry", action="store_true", help="validate the configuration only")
    args = ap.parse_args()
    skipped = why_no_gpu() or ("--dry" if args.dry else None)
    report: dict[str, Any] = {"bench": "gpu_e2e", "cameras": args.cameras, "skipped": skipped}
    report["clips"] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "rand11n.pt"
        for clip in args.clip:
            row: dict[str, Any] = {}
            report["clips"][clip.name] = row
            cfg = itsd_config(model, clip, args, Path(tmp))
            parse_config(cfg, f"gpu_e2e config for {clip.name}")  # ConfigError says why
            if skipped:
                print(f"{clip.name}: configuration valid; runs skipped: {skipped}")
                continue
            frames = clip_frames(8, clip)
            if not model.exists():
                os.environ.setdefault("YOLO_OFFLINE", "1")
                built = random_yolo11n(IMGSZ, frames, Path(tmp))
                built.rename(model)
            contenders: list[tuple[str, Any, tuple[Any, ...]]] = [
                ("a_limit", limit, (model, frames, args.seconds)),
                ("b_itsd", run_itsd, (model, clip, args)),
                ("c_user_loop", user_loop, (model, clip, args.cameras)),
            ]
            for key, fn, fn_args in contenders:
                try:
                    got = fn(*fn_args)
                    row[key] = got if isinstance(got, dict) else {"fps": got}
                except Exception as err:  # one contender failing must not hide the others
                    row[key] = {"error": f"{type(err).__name__}: {err}"[:2000]}
                print(f"{clip.name} {key}: {row[key]}", flush=True)
                if args.json:  # after each contender: a timeout keeps what was measured
                    args.json.write_text(json.dumps(report, indent=2))
            a, b, c = (row[k].get("fps") for k in ("a_limit", "b_itsd", "c_user_loop"))
            row["b_over_a"] = b / a if a and b else None
            row["b_over_c"] = b / c if c and b else None
            print(f"{clip.name}: (b)/(a) {row['b_over_a']}  (b)/(c) {row['b_over_c']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
