"""HostProbe: host memory from /proc/meminfo; GPUs through NVML when pynvml imports (a
stand-in module here: this machine has no GPU), nothing and a reason when it does not."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from itsd.runtime import hostinfo
from itsd.runtime.hostinfo import HostProbe, host_memory


def test_host_memory() -> None:
    ratio, total = host_memory()
    assert total > 0 and ratio is not None and 0.0 < ratio < 1.0


def _fake_nvml(fail_init: bool = False) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    state: dict[str, Any] = {"shutdown": False}

    def init() -> None:
        if fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    mod.nvmlInit = init  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    mod.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=30 + h)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=1 << 30, total=4 << 30)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetName = lambda h: b"NVIDIA H200"  # type: ignore[attr-defined]
    mod.nvmlShutdown = lambda: state.update(shutdown=True)  # type: ignore[attr-defined]
    mod.state = state  # type: ignore[attr-defined]
    return mod


def test_gpus_through_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_nvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    probe = HostProbe()
    s = probe.sample()
    assert [(g.index, g.name, g.utilization) for g in s.gpus] == [
        (0, "NVIDIA H200", 30.0),
        (1, "NVIDIA H200", 31.0),
    ]
    assert s.gpus[0].memory_ratio == 0.25 and s.nvml_error == ""
    assert probe.sample() is s  # at most once a second
    probe.close()
    assert fake.state["shutdown"]  # type: ignore[attr-defined]


def test_no_nvml_is_no_gpu_and_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(fail_init=True))
    s = HostProbe().sample()
    assert s.gpus == () and "NVML unavailable" in s.nvml_error
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    s = HostProbe().sample()
    assert s.gpus == () and "nvidia-ml-py" in s.nvml_error
    assert s.memory_used_ratio is not None


def test_sample_period(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    probe = HostProbe()
    first = probe.sample()
    monkeypatch.setattr(hostinfo, "SAMPLE_PERIOD_S", 0.0)
    assert probe.sample() is not first
