"""PyTorch backend: Ultralytics YOLO detection models run by our own code (no predictor).

Loads an Ultralytics checkpoint (``.pt``: the pickled ``DetectionModel`` under ``ema`` or
``model``) or builds a network from an Ultralytics model yaml (``yolo11n.yaml``; random
weights, for benchmarks) with ``ultralytics.nn.tasks.DetectionModel``, fuses conv+BN
and runs its forward pass itself, so Ultralytics' predictor (and with it torchvision,
which does not import beside the CPU build of torch) is never used. The frame path
(letterbox, output check, NMS) is the shared one, so boxes match the other backends; the
device letterbox below uses the same geometry (`letterbox_params`) and gives the same
pixels within one grey level.

The head output is reduced where it was made (`reduce_head`): per anchor the best class
score and class, the anchors that can pass the confidence (best first, at most
MAX_NMS_CANDIDATES) and their boxes, a (batch, k, 6) tensor of a few kilobytes instead
of the (batch, 4 + classes, anchors) output (2.7 MB per image at 640); on a GPU it is
copied into a pinned buffer asynchronously. The host then runs `decode_candidates`
(confidence and class filter, class-aware NMS, boxes to frame pixels: the steps of
`decode_yolo`, same detections). On by default on GPUs (CUDA graphs or not, device or
host letterbox); off by default on the CPU, where the output already is in host memory
(numpy reads it without a copy) and torch's CPU argmax and gather were measured no
faster than numpy's scan (bench/torch_post_bench.py).

On a GPU (``EngineOptions.gpu`` set and ``torch.cuda`` sees it): fp16 weights (fp32 when
asked), channels-last memory format, the letterbox of the whole batch on the GPU (the
uint8 frames go up through one pinned staging buffer with asynchronous copies on the
engine's own CUDA stream; one bilinear resize per frame size), and CUDA graphs
captured once per batch-size bucket (1, 2, 4, ... max_batch: a batch is padded up to
its bucket) so a forward pass is a single graph replay. Without a usable
GPU it runs on the CPU in fp32 (with a warning when a GPU was asked for), with
``EngineOptions.intra_op_threads`` threads (torch's thread count is per process).

torch and ultralytics are optional (extra ``torch``): this module imports them only when
an engine is made, and must never import them at module import time, never use
Ultralytics' predictor, and never download weights.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from itsd.engines.base import COCO_NAMES, Detections, EngineOptions
from itsd.engines.postprocess import MAX_NMS_CANDIDATES, decode_candidates, decode_yolo
from itsd.engines.preprocess import (
    PAD_VALUE,
    Letterbox,
    check_frame,
    letterbox_into,
    letterbox_params,
)
from itsd.engines.yolo import YoloEngine, check_yolo_output
from itsd.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_IMGSZ = 640


def graph_buckets(max_batch: int) -> list[int]:
    """Batch sizes CUDA graphs are captured for: powers of two up to max_batch, and it."""
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    sizes.append(max_batch)
    return sizes


def bucket_for(n: int, buckets: list[int]) -> int:
    """The smallest bucket that holds n frames."""
    for b in buckets:
        if b >= n:
            return b
    raise ValueError(f"{n} frames exceed the largest bucket {buckets[-1]}")


def reduce_head(
    out: Any,
    confidence: float,
    classes: Sequence[int] | None = None,
    max_candidates: int = MAX_NMS_CANDIDATES,
) -> Any:
    """Reduce a (B, 4 + classes, A) head output tensor where it lies (GPU or CPU) to a
    float32 (B, k, 6) tensor of candidate rows [cx, cy, w, h, score, class] for
    `postprocess.decode_candidates`.

    Per anchor: the best class score; anchors whose best class is not in `classes` get
    score -inf; k is the most anchors of one image above `confidence` (at most
    max_candidates and A: one small device-to-host read), and each image's k best anchors
    come best first, with their class (first of equal maxima, as numpy's argmax). Rows of
    an image that has fewer are at or below the confidence; the host drops them. As on
    the host, the argmax runs on the k survivors only (a max with indices over all
    anchors is ten times slower than amax on a CPU), except with a class filter.
    """
    import torch

    n, rows, anchors = (int(v) for v in out.shape)
    class_scores = out[:, 4:]
    best = class_scores.amax(dim=1).float()  # (B, A); compare in fp32, as the host does
    if classes is not None:
        ids = class_scores.argmax(dim=1)
        wanted = torch.isin(ids, torch.as_tensor(list(classes), device=ids.device))
        best = best.masked_fill(~wanted, float("-inf"))
    k = min(int((best > confidence).sum(dim=1).max()), max_candidates, anchors)
    if k == 0:
        return torch.zeros((n, 0, 6), dtype=torch.float32, device=out.device)
    scores, idx = best.topk(k, dim=1, sorted=True)
    boxes = out[:, :4].gather(2, idx.unsqueeze(1).expand(n, 4, k)).float()
    picked = class_scores.gather(2, idx.unsqueeze(1).expand(n, rows - 4, k))
    cls = picked.argmax(dim=1).float()
    return torch.cat((boxes.transpose(1, 2), scores.unsqueeze(2), cls.unsqueeze(2)), dim=2)


def _imports() -> tuple[Any, Any]:
    """(torch, ultralytics.nn.tasks), or ModelError saying how to install them."""
    os.environ.setdefault("YOLO_OFFLINE", "1")  # no network look-ups on import
    os.environ.setdefault("YOLO_VERBOSE", "False")
    try:
        import torch
        from ultralytics.nn import tasks
    except ImportError as exc:
        raise ModelError(
            f"the torch backend needs torch and ultralytics ({exc}); install the extra "
            "itsd[torch] (the CPU build of torch first on machines without a GPU)"
        ) from exc
    return torch, tasks


def load_detection_model(model: str | Path, seed: int = 0) -> tuple[Any, int | None]:
    """(Ultralytics DetectionModel, its training image size or None) from a ``.pt``
    checkpoint or a model yaml (seeded random weights). Raises ModelError saying why not."""
    torch, tasks = _imports()
    where = f"PyTorch model {model}"
    spec = str(model)
    train_imgsz: Any = None
    if spec.endswith((".yaml", ".yml")):
        torch.manual_seed(seed)
        try:
            net = tasks.DetectionModel(spec, verbose=False)
        except Exception as exc:
            raise ModelError(f"cannot build {where}: {exc}") from exc
    else:
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"{where} does not exist (or is not a file)")
        try:
            ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ModelError(f"cannot load {where}: {exc}") from exc
        net = None
        if isinstance(ckpt, dict):
            net = ckpt.get("ema") or ckpt.get("model")
            train = ckpt.get("train_args") or {}
            train_imgsz = train.get("imgsz") if isinstance(train, dict) else None
        else:
            net = ckpt
        if net is None or not hasattr(net, "forward"):
            raise ModelError(f"{where} holds no model (expected an Ultralytics checkpoint)")
    if not isinstance(net, tasks.DetectionModel):
        raise ModelError(f"{where} is a {type(net).__name__}, not a YOLO detection model")
    return net, train_imgsz if isinstance(train_imgsz, int) else None


def _names(raw: Any, nc: int) -> list[str]:
    if isinstance(raw, dict) and sorted(raw) == list(range(len(raw))):
        names = [str(raw[i]) for i in range(len(raw))]
    elif isinstance(raw, list | tuple):
        names = [str(v) for v in raw]
    else:
        names = []
    if len(names) == nc:
        return names
    return list(COCO_NAMES) if nc == len(COCO_NAMES) else [f"class_{i}" for i in range(nc)]


class TorchEngine(YoloEngine):
    """YOLO detection with PyTorch; implements `itsd.engines.base.Engine`.

    model: a ``.pt`` checkpoint or an Ultralytics model yaml (name or path).
    imgsz: model input side (default: the checkpoint's training size, else 640).
    max_batch: most frames per forward pass (default: ``EngineOptions.max_batch``).
    cuda_graphs: capture CUDA graphs per batch bucket (GPU only).
    device_letterbox: letterbox the batch on the device (default: on GPUs).
    device_reduce: reduce the head output on the device (`reduce_head`) and decode the
        candidates (default: on GPUs).
    """

    name = "torch"

    def __init__(
        self,
        model: str | Path,
        options: EngineOptions,
        *,
        imgsz: int | None = None,
        max_batch: int | None = None,
        cuda_graphs: bool = True,
        device_letterbox: bool | None = None,
        device_reduce: bool | None = None,
        seed: int = 0,
    ) -> None:
        torch, _ = _imports()
        self._torch = torch
        self.options = options
        self.model_path = Path(model)
        where = f"PyTorch model {model}"
        net, train_imgsz = load_detection_model(model, seed=seed)
        net = net.float().eval()
        if hasattr(net, "fuse"):
            net = net.fuse(verbose=False) if _accepts_verbose(net.fuse) else net.fuse()
        for p in net.parameters():
            p.requires_grad_(False)
        side = int(imgsz or train_imgsz or DEFAULT_IMGSZ)
        stride = int(max(getattr(net, "stride", torch.tensor([32])).tolist()))
        if side % stride:
            raise ModelError(f"{where}: input size {side} is not a multiple of stride {stride}")
        self.input_size = (side, side)
        max_batch = max_batch or options.max_batch
        self.max_batch = max_batch
        self.static_batch = None

        self.device = torch.device("cpu")
        self.half = False
        if options.gpu is not None:
            if torch.cuda.is_available() and options.gpu < torch.cuda.device_count():
                self.device = torch.device(f"cuda:{options.gpu}")
                self.half = options.precision != "fp32"
                if options.precision == "int8":
                    log.warning("%s: int8 is TensorRT's; running fp16 with PyTorch", where)
            else:
                log.warning(
                    "%s: GPU %d was asked for but torch sees no such CUDA device; running on "
                    "the CPU",
                    where,
                    options.gpu,
                )
        self.gpu = self.device.type == "cuda"
        if not self.gpu:
            # One engine per worker process, one worker per core: torch's default of one
            # thread per core makes its threads spin against every other worker's.
            torch.set_num_threads(options.intra_op_threads)
        net = net.to(self.device)
        if self.gpu:
            net = net.half() if self.half else net
            net = net.to(memory_format=torch.channels_last)
        self._net = net
        h, w = self.input_size
        self.precision = "fp16" if self.half else "fp32"
        self.cuda_graphs = bool(cuda_graphs and self.gpu)
        #: Letterbox on the device (default on GPUs; on the CPU for tests only).
        self.device_letterbox = self.gpu if device_letterbox is None else device_letterbox
        #: Reduce the head output on the device (default on GPUs; on the CPU for tests).
        self.device_reduce = self.gpu if device_reduce is None else device_reduce
        self._staging: Any = None
        self._output_host: Any = None  # pinned, for the (reduced) output (GPU)
        self._graphs: dict[int, tuple[Any, Any, Any]] = {}
        self._buckets = graph_buckets(max_batch)
        if self.gpu:
            self._stream = torch.cuda.Stream(device=self.device)
            self._pinned = torch.empty((max_batch, 3, h, w), dtype=torch.float32).pin_memory()
            self._buffer = self._pinned.numpy()
        else:
            self._buffer = np.empty((1, 3, h, w), dtype=np.float32)
        self._buffer[:] = 114 / 255
        try:
            probe = self._forward(self._buffer[:1])
        except Exception as exc:
            raise ModelError(f"{where} fails to run on a blank input: {exc}") from exc
        nc = check_yolo_output(tuple(probe.shape), self.input_size, where)
        self.class_names = _names(getattr(net, "names", None), nc)
        log.info(
            "torch %s: %s on %s, input %dx%d, %s, %d classes, CUDA graphs %s",
            torch.__version__,
            self.model_path.name,
            self.device,
            h,
            w,
            self.precision,
            nc,
            "on" if self.cuda_graphs else "off",
        )

    # -- forward ------------------------------------------------------------------------
    def _run_net(self, x: Any) -> Any:
        out = self._net(x)
        return out[0] if isinstance(out, list | tuple) else out

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """The full (n, 4 + classes, anchors) output on the host: the load-time probe,
        tests and the raw benchmark. The frame path (`infer`) reduces on the device."""
        torch = self._torch
        n = int(batch.shape[0])
        with torch.inference_mode():
            x = torch.from_numpy(batch)  # on a GPU: a view of the pinned buffer (one DMA)
            if not self.gpu:
                return np.asarray(self._head(x, n).float().numpy())
            with torch.cuda.stream(self._stream):
                result = self._head(x, n).float().to("cpu")
            self._stream.synchronize()
            return np.asarray(result.numpy())

    def _head(self, x: Any, n: int) -> Any:
        """(n, 4 + classes, anchors) on the engine's device, in the model's precision,
        for a float batch on the host or the device."""
        torch = self._torch
        if not self.gpu:
            return self._run_net(x)
        if self.cuda_graphs:
            return self._replay(x, n)
        x = x.to(self.device, non_blocking=True)
        x = (x.half() if self.half else x).contiguous(memory_format=torch.channels_last)
        return self._run_net(x)[:n]

    def infer(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """As `YoloEngine.infer`: detections per frame, in runs of `max_batch`. With
        `device_reduce` the head output is reduced on the device (`reduce_head`) and
        decoded on the host with `decode_candidates`, else decoded with `decode_yolo`;
        with `device_letterbox` the letterbox of the whole batch runs on the device
        (frames go up as uint8 through one pinned staging buffer)."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        for i, frame in enumerate(frames):
            check_frame(frame, f"frame {i}")
        decode = decode_candidates if self.device_reduce else decode_yolo
        results: list[Detections] = []
        for start in range(0, len(frames), self.max_batch):
            outputs, boxes = self._outputs(frames[start : start + self.max_batch])
            for slot, lb in enumerate(boxes):
                results.append(decode(outputs[slot], lb, lb.src_h, lb.src_w, self.options))
        return results

    def _outputs(self, chunk: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
        """On the host, fp32: the (n, k, 6) candidate rows with `device_reduce`, else the
        (n, 4 + classes, anchors) output; and the letterboxes. On a GPU the copy goes
        into a pinned buffer (valid until the next call)."""
        torch = self._torch
        opts = self.options
        with torch.inference_mode():
            if not self.gpu:
                x, boxes = self._letterbox(chunk)
                out = self._head(x, len(chunk))
                if self.device_reduce:
                    out = reduce_head(out, opts.confidence, opts.classes)
                return np.asarray(out.float().numpy()), boxes
            with torch.cuda.stream(self._stream):
                x, boxes = self._letterbox(chunk)
                out = self._head(x, len(chunk))
                if self.device_reduce:
                    out = reduce_head(out, opts.confidence, opts.classes)
                else:
                    out = out.float()  # to fp32 on the device: the copy is a plain DMA
                host = self._pinned_output(out.numel()).view(out.shape)
                host.copy_(out, non_blocking=True)
            self._stream.synchronize()
            return host.numpy(), boxes

    def _pinned_output(self, numel: int) -> Any:
        """The first `numel` floats of a pinned host buffer (grown when too small)."""
        buf = self._output_host
        if buf is None or buf.numel() < numel:
            buf = self._torch.empty(max(numel, 4096, 2 * (0 if buf is None else buf.numel())))
            self._output_host = buf = buf.pin_memory()
        return buf[:numel]

    def _letterbox(self, chunk: Sequence[np.ndarray]) -> tuple[Any, list[Letterbox]]:
        """The chunk letterboxed as a float batch tensor (on the device with
        `device_letterbox`, else in the reused, on GPUs pinned, host buffer)."""
        if self.device_letterbox:
            return self.letterbox_device(chunk)
        h, w = self.input_size
        batch = self._batch_buffer(len(chunk))
        boxes = []
        for slot, frame in enumerate(chunk):
            lb = letterbox_params(int(frame.shape[0]), int(frame.shape[1]), h, w)
            letterbox_into(frame, batch[slot], lb)
            boxes.append(lb)
        return self._torch.from_numpy(batch), boxes

    # -- letterbox on the device --------------------------------------------------------
    def letterbox_device(self, frames: Sequence[np.ndarray]) -> tuple[Any, list[Letterbox]]:
        """Letterbox frames on the engine's device: a (n, 3, H, W) float32 tensor there,
        the same pixels as `preprocess.letterbox_into` (bilinear, half-pixel centres,
        rounded to 8 bits as OpenCV does) within one grey level, and the Letterboxes.

        Frames of one size are resized together (one interpolation per size).
        """
        torch = self._torch
        interpolate = torch.nn.functional.interpolate
        h, w = self.input_size
        out = torch.full((len(frames), 3, h, w), PAD_VALUE, dtype=torch.float32, device=self.device)
        boxes = [letterbox_params(int(f.shape[0]), int(f.shape[1]), h, w) for f in frames]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, frame in enumerate(frames):
            groups.setdefault((int(frame.shape[0]), int(frame.shape[1])), []).append(i)
        uploaded = self._upload(frames)
        for (fh, fw), idx in groups.items():
            img = torch.stack([uploaded[i] for i in idx]).permute(0, 3, 1, 2).float()
            lb = boxes[idx[0]]
            if (lb.new_h, lb.new_w) != (fh, fw):
                img = interpolate(
                    img, size=(lb.new_h, lb.new_w), mode="bilinear", align_corners=False
                )
                img = img.add_(0.5).floor_().clamp_(0, 255)  # half up, as OpenCV rounds
            rows = slice(lb.pad_y, lb.pad_y + lb.new_h)
            cols = slice(lb.pad_x, lb.pad_x + lb.new_w)
            for j, i in enumerate(idx):
                out[i, :, rows, cols] = img[j] / 255
        return out, boxes

    def _upload(self, frames: Sequence[np.ndarray]) -> list[Any]:
        """The frames as (H, W, 3) uint8 tensors on the device: on a GPU each is copied
        once into a pinned staging buffer and sent with an asynchronous copy."""
        torch = self._torch
        if not self.gpu:
            return [torch.from_numpy(np.array(f, copy=True)) for f in frames]
        total = sum(int(f.nbytes) for f in frames)
        if self._staging is None or self._staging.numel() < total:
            self._staging = torch.empty(total, dtype=torch.uint8).pin_memory()
        stage = self._staging.numpy()
        out, offset = [], 0
        for f in frames:
            n = int(f.nbytes)
            stage[offset : offset + n] = f.reshape(-1)
            host = self._staging[offset : offset + n].view(f.shape[0], f.shape[1], 3)
            out.append(host.to(self.device, non_blocking=True))
            offset += n
        return out

    def _replay(self, host: Any, n: int) -> Any:
        """Run n frames through the CUDA graph of their bucket (captured the first time)."""
        size = bucket_for(n, self._buckets)
        graph = self._graphs.get(size)
        if graph is None:
            graph = self._capture(size)
        g, static_in, static_out = graph
        static_in[:n].copy_(host[:n], non_blocking=True)
        g.replay()
        return static_out[:n]

    def _capture(self, size: int) -> tuple[Any, Any, Any]:
        torch = self._torch
        h, w = self.input_size
        dtype = torch.float16 if self.half else torch.float32
        static_in = torch.full((size, 3, h, w), 114 / 255, device=self.device, dtype=dtype)
        static_in = static_in.contiguous(memory_format=torch.channels_last)
        for _ in range(3):  # warm-up on the side stream, as CUDA graph capture requires
            self._run_net(static_in)
        torch.cuda.current_stream(self.device).synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=self._stream):
            static_out = self._run_net(static_in)
        self._graphs[size] = (g, static_in, static_out)
        log.info("CUDA graph captured for batch %d", size)
        return self._graphs[size]

    def _batch_buffer(self, n: int) -> np.ndarray:
        if self.gpu:
            return self._buffer[:n]  # pinned; n never exceeds max_batch
        return super()._batch_buffer(n)

    def _close(self) -> None:
        self._graphs.clear()
        self._net = None
        self._output_host = None
        if self.gpu:
            self._torch.cuda.empty_cache()

    def __repr__(self) -> str:
        return f"TorchEngine({str(self.model_path)!r}, input={self.input_size}, {self.device})"


def _accepts_verbose(fn: Any) -> bool:
    import inspect

    try:
        return "verbose" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def load(model: Path, options: EngineOptions) -> TorchEngine:
    """The registry's entry point: a TorchEngine for a ``.pt`` file."""
    return TorchEngine(model, options)
