"""NVDEC benchmark (needs an NVIDIA GPU, PyNvVideoCodec and a CUDA torch): itsd's NVDEC
source beside the raw PyNvVideoCodec demux+decode loop, and CPU+NVDEC together.

    python bench/nvdec_bench.py --clip clip_1080p.mp4 [--streams 1 4 8] [--seconds 10]
        [--rounds 3] [--json F] [--dry]

For each stream count N, in rotation over ``--rounds``:

* ``raw``: N threads, each ``CreateDemuxer`` + ``CreateDecoder(usedevicememory=True)``
  decoding the clip in a loop, frames counted and dropped: the limit;
* ``itsd nvdec``: N threads, each an ``itsd.sources.nvdec.NvdecSource`` delivering RGB
  frames scaled to 640x360 in pinned host memory (what a decode worker writes to a ring);
* ``itsd cpu`` (one run per N): N threads of the PyAV source at the same size, and
  ``both``: N NVDEC and N CPU threads at once: what CPU and NVDEC decoders give together.

Prints frames/s, the ratio itsd/raw (goal: at least 0.9) and CPU+NVDEC beside NVDEC
alone; ``--json`` writes every number. On a machine without a GPU it says so and exits
2, unless ``--dry``: then only the CPU column runs (a check of the bench itself, as
bench/gpu_check.sh does without a GPU) and the NVDEC numbers are null with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from itsd.config import CameraConfig  # noqa: E402
from itsd.sources import SourceOptions, open_source  # noqa: E402
from itsd.sources.nvdec import gpu_decode_available  # noqa: E402

Body = Callable[[Callable[[], bool], list[int], int], None]


def _threads(n: int, seconds: float, body: Body) -> float:
    """Frames/s of ``n`` threads running ``body`` for ``seconds``."""
    counts = [0] * n
    deadline = time.monotonic() + seconds

    def go() -> bool:
        return time.monotonic() < deadline

    ts = [threading.Thread(target=body, args=(go, counts, i)) for i in range(n)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def raw(clip: Path, n: int, seconds: float) -> float:
    """The raw PyNvVideoCodec loop: demux and decode, frames dropped."""
    import PyNvVideoCodec as nvc  # noqa: N813

    def body(go: Callable[[], bool], counts: list[int], i: int) -> None:
        while go():
            dmx = nvc.CreateDemuxer(filename=str(clip))
            dec = nvc.CreateDecoder(gpuid=0, codec=dmx.GetNvCodecId(), usedevicememory=True)
            for packet in dmx:
                counts[i] += len(dec.Decode(packet))
                if not go():
                    return

    return _threads(n, seconds, body)


def source(clip: Path, n: int, seconds: float, decoder: str) -> float:
    """itsd's source (``nvdec`` or ``cpu``): RGB at 640x360, as a decode worker takes it."""
    opts = SourceOptions(max_width=640, max_height=360, threads=1)

    def body(go: Callable[[], bool], counts: list[int], i: int) -> None:
        cam = CameraConfig(id=f"b{i}", source=str(clip))
        while go():
            src = open_source(cam, opts, decoder)
            try:
                for frame in src.frames({}):
                    frame.rgb()
                    counts[i] += 1
                    if not go():
                        return
            finally:
                src.close()

    return _threads(n, seconds, body)


def together(clip: Path, n: int, seconds: float) -> float:
    """N NVDEC and N CPU streams at the same time: frames/s of both together."""
    cpu: list[float] = []
    t = threading.Thread(target=lambda: cpu.append(source(clip, n, seconds, "cpu")))
    t.start()
    nv = source(clip, n, seconds, "nvdec")
    t.join()
    return nv + cpu[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clip", type=Path, required=True)
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write every number here")
    ap.add_argument("--dry", action="store_true", help="without a GPU: the CPU column only")
    args = ap.parse_args()
    if not args.clip.is_file():
        print(f"nvdec_bench: no clip at {args.clip}", file=sys.stderr)
        return 2
    gpu = gpu_decode_available()
    if not gpu and not args.dry:
        print("nvdec_bench: no GPU with PyNvVideoCodec and a CUDA torch here", file=sys.stderr)
        return 2
    report: dict[str, object] = {
        "bench": "nvdec",
        "clip": args.clip.name,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "cores": len(os.sched_getaffinity(0)),
        "gpu": gpu,
        "skipped": None if gpu else "no GPU with PyNvVideoCodec and a CUDA torch",
        "streams": {},
    }
    rows: dict[str, dict[str, float | None]] = {}
    print(f"{'streams':>7} {'raw':>9} {'itsd nvdec':>11} {'ratio':>6} {'itsd cpu':>9} {'both':>9}")
    for n in args.streams:
        r: list[float] = []
        s: list[float] = []
        if gpu:
            for _ in range(args.rounds):
                r.append(raw(args.clip, n, args.seconds))
                s.append(source(args.clip, n, args.seconds, "nvdec"))
        cpu = source(args.clip, n, args.seconds, "cpu")
        both = together(args.clip, n, args.seconds) if gpu else None
        rm = statistics.median(r) if r else None
        sm = statistics.median(s) if s else None
        ratio = sm / rm if rm and sm is not None else None
        rows[str(n)] = {
            "raw_fps": rm,
            "nvdec_fps": sm,
            "ratio": ratio,
            "cpu_fps": cpu,
            "both_fps": both,
            "both_over_nvdec": both / sm if both is not None and sm else None,
        }

        def f(v: float | None, spec: str) -> str:
            return "-" if v is None else format(v, spec)

        print(
            f"{n:>7} {f(rm, '.0f'):>9} {f(sm, '.0f'):>11} {f(ratio, '.2f'):>6} "
            f"{cpu:>9.0f} {f(both, '.0f'):>9}",
            flush=True,
        )
    report["streams"] = rows
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
