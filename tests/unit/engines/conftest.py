"""Fixtures of the engine unit tests: the GPU letterbox kernel compiled as C."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from itsd.engines.gpu_letterbox import cpu_reference_source, describe_batch, pack_frames
from itsd.engines.preprocess import Letterbox


class CpuKernel:
    """`itsd_letterbox_cpu` from `cpu_reference_source`: the CUDA kernel's arithmetic,
    run by a loop over every thread, on frames packed as `GpuLetterbox.run` packs them."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib

    def run(self, frames: list[np.ndarray], h: int, w: int, out_ptr: int) -> list[Letterbox]:
        """Letterbox `frames` into the (n, 3, h, w) float32 buffer at `out_ptr`."""
        table, boxes, total = describe_batch(frames, h, w)
        packed = np.zeros(total, np.uint8)
        pack_frames(frames, table, packed)
        self.lib.itsd_letterbox_cpu(
            ctypes.c_void_p(packed.ctypes.data),
            ctypes.c_void_p(table.ctypes.data),
            ctypes.c_int(len(frames)),
            ctypes.c_int(h),
            ctypes.c_int(w),
            ctypes.c_void_p(out_ptr),
        )
        return boxes


@pytest.fixture(scope="session")
def letterbox_kernel(tmp_path_factory: pytest.TempPathFactory) -> CpuKernel:
    """The kernel compiled as C (skips where no C compiler is installed)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs a C compiler")
    d = tmp_path_factory.mktemp("lbkernel")
    src = d / "lb.c"
    src.write_text(cpu_reference_source())
    lib = d / "lb.so"
    subprocess.run(
        [cc, "-O2", "-shared", "-fPIC", "-Wall", "-Werror", str(src), "-o", str(lib), "-lm"],
        check=True,
    )
    return CpuKernel(ctypes.CDLL(str(lib)))
