"""Fixtures of the engine unit tests: the GPU letterbox kernel compiled as C."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import pytest

from itsd.engines.gpu_letterbox import cpu_reference_source


@pytest.fixture(scope="session")
def letterbox_kernel(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    """`itsd_letterbox_cpu` from `cpu_reference_source`: the CUDA kernel's arithmetic,
    run by a loop (skips where no C compiler is installed)."""
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
    return ctypes.CDLL(str(lib))
