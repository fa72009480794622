"""What the machine has left: host memory and, through NVML, each GPU's load and memory.

``HostProbe.sample`` is called by the supervisor's snapshot each tick and measures at
most once a second. NVML comes from ``pynvml`` (the ``nvidia-ml-py`` package), imported
the first time a sample is taken and only then: without the package, the driver or a GPU
the probe reports no GPUs and says why once (``nvml_error``), and nothing else changes.
Host memory is read from ``/proc/meminfo`` (``MemAvailable``).

This module must never import a stage, the supervisor, ``control`` or ``monitor``, never
import a GPU library at module import, and never fail the caller: every error is a value.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("itsd.hostinfo")

SAMPLE_PERIOD_S = 1.0


@dataclass(frozen=True, slots=True)
class GpuStat:
    """One GPU as NVML last reported it."""

    index: int
    name: str
    utilization: float  # percent of the last sample period the GPU was busy
    memory_used: int  # bytes
    memory_total: int  # bytes

    @property
    def memory_ratio(self) -> float:
        """Memory in use, 0..1."""
        return self.memory_used / self.memory_total if self.memory_total else 0.0


@dataclass(frozen=True, slots=True)
class HostSample:
    """Host memory and GPUs at one moment."""

    memory_used_ratio: float | None = None
    memory_total: int = 0
    gpus: tuple[GpuStat, ...] = ()
    nvml_error: str = ""


def host_memory() -> tuple[float | None, int]:
    """(ratio of memory in use, total bytes); (None, 0) when /proc/meminfo is unreadable."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            fields = {
                k.strip(): int(v.split()[0]) * 1024
                for k, v in (ln.split(":", 1) for ln in f if ":" in ln)
            }
    except (OSError, ValueError, IndexError):
        return None, 0
    total = fields.get("MemTotal", 0)
    avail = fields.get("MemAvailable")
    if not total or avail is None:
        return None, total
    return 1.0 - avail / total, total


class HostProbe:
    """Samples host memory and the GPUs; NVML is loaded on the first sample, lazily."""

    def __init__(self, use_nvml: bool = True) -> None:
        self._use_nvml = use_nvml
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._nvml_error = ""
        self._tried = False
        self._last = HostSample()
        self._last_at = -1e9

    def _init_nvml(self) -> None:
        self._tried = True
        if not self._use_nvml:
            self._nvml_error = "NVML not used"
            return
        try:
            pynvml = importlib.import_module("pynvml")  # nvidia-ml-py: optional, untyped
            pynvml.nvmlInit()
            n = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(n)]
            self._nvml = pynvml
            log.info("NVML: %d GPU(s)", n)
        except ImportError:
            self._nvml_error = "pynvml (nvidia-ml-py) is not installed"
        except Exception as err:  # no driver, no GPU: NVML raises its own errors
            self._nvml_error = f"NVML unavailable: {err}"
        if self._nvml_error:
            log.debug("%s", self._nvml_error)

    def _gpus(self) -> tuple[GpuStat, ...]:
        nv = self._nvml
        if nv is None:
            return ()
        out = []
        for i, h in enumerate(self._handles):
            try:
                util = nv.nvmlDeviceGetUtilizationRates(h)
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                name = nv.nvmlDeviceGetName(h)
                if isinstance(name, bytes):
                    name = name.decode(errors="replace")
                out.append(GpuStat(i, str(name), float(util.gpu), int(mem.used), int(mem.total)))
            except Exception as err:  # a GPU fallen off the bus must not stop the snapshot
                self._nvml_error = f"NVML: GPU {i}: {err}"
        return tuple(out)

    def sample(self) -> HostSample:
        """The latest sample (measured again when older than ``SAMPLE_PERIOD_S``)."""
        now = time.monotonic()
        if now - self._last_at < SAMPLE_PERIOD_S:
            return self._last
        if not self._tried:
            self._init_nvml()
        ratio, total = host_memory()
        self._last = HostSample(ratio, total, self._gpus(), self._nvml_error)
        self._last_at = now
        return self._last

    def close(self) -> None:
        """Shut NVML down (if it was started)."""
        if self._nvml is not None:
            with contextlib.suppress(Exception):  # already gone
                self._nvml.nvmlShutdown()
            self._nvml = None
