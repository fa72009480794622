"""Test-only fault injection: an engine wrapper that fails the way a sick GPU does.

Set ``ITSD_TEST_ENGINE_FAULTS`` in the daemon's environment to make every engine that
`itsd.engines.registry.create_engine` builds fail on purpose. The value is
``KIND[:AFTER[:COUNT]]``: KIND is one of ``oom`` (a CUDA out-of-memory error), ``cuda``
(a CUDA launch failure), ``timeout`` (a TimeoutError) or ``other`` (a RuntimeError);
the first AFTER calls succeed (default 0), then COUNT calls fail (default: all).
The tests of the circuit breaker use it to prove that the inference worker degrades and
the rest of the daemon keeps running. It must never be set in production, and this
module must never be used for anything but those tests: it does not do inference itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from itsd.engines.base import Detections, Engine
from itsd.errors import ConfigError

#: The environment variable that switches fault injection on (tests only).
FAULTS_ENV = "ITSD_TEST_ENGINE_FAULTS"
FAULT_KINDS = ("oom", "cuda", "timeout", "other")


class SimulatedCudaError(RuntimeError):
    """Raised by `FaultyEngine` in place of a real CUDA error."""


@dataclass(frozen=True)
class FaultSpec:
    """What `FaultyEngine` does: which error, after how many good calls, how many times."""

    kind: str
    after: int = 0
    count: int | None = None


def parse_faults(spec: str) -> FaultSpec:
    """Parse ``KIND[:AFTER[:COUNT]]``; raises ConfigError naming the variable."""
    parts = spec.strip().split(":")
    kind = parts[0]
    try:
        after = int(parts[1]) if len(parts) > 1 and parts[1] else 0
        count = int(parts[2]) if len(parts) > 2 and parts[2] else None
    except ValueError:
        raise ConfigError(
            f"{FAULTS_ENV}={spec!r}: expected KIND[:AFTER[:COUNT]] with whole numbers"
        ) from None
    if kind not in FAULT_KINDS or len(parts) > 3 or after < 0 or (count is not None and count < 0):
        raise ConfigError(
            f"{FAULTS_ENV}={spec!r}: expected KIND[:AFTER[:COUNT]], KIND one of "
            f"{', '.join(FAULT_KINDS)}"
        )
    return FaultSpec(kind, after, count)


def make_error(kind: str) -> Exception:
    """The exception a real backend raises for a failure of this kind."""
    if kind == "oom":
        return SimulatedCudaError(
            f"CUDA out of memory. Tried to allocate 2.00 GiB (simulated by {FAULTS_ENV})"
        )
    if kind == "cuda":
        return SimulatedCudaError(
            f"CUDA error: unspecified launch failure (simulated by {FAULTS_ENV})"
        )
    if kind == "timeout":
        return TimeoutError(f"inference timed out (simulated by {FAULTS_ENV})")
    return RuntimeError(f"inference failed (simulated by {FAULTS_ENV})")


class FaultyEngine:
    """Wraps an engine; `infer` fails as `FaultSpec` says, else runs the real engine."""

    def __init__(self, inner: Engine, spec: FaultSpec) -> None:
        self.inner = inner
        self.spec = spec
        self.name = inner.name
        self.input_size = inner.input_size
        self.class_names = inner.class_names
        self.max_batch = inner.max_batch
        self.calls = 0

    def infer(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        self.calls += 1
        failing = self.calls > self.spec.after and (
            self.spec.count is None or self.calls <= self.spec.after + self.spec.count
        )
        if failing:
            raise make_error(self.spec.kind)
        return self.inner.infer(frames)

    def close(self) -> None:
        self.inner.close()
