"""Circuit breaker of the inference worker: stop hammering a backend that keeps failing.

Failures are classified (`classify`) as ``cuda`` (CUDA/cuDNN/cuBLAS/driver errors),
``oom`` (out of memory, host or device), ``timeout`` or ``other``, and counted apart.
Each kind has its own threshold within a sliding window (out-of-memory opens fastest:
two in a row means the batch does not fit, and retrying makes it worse).

States::

    closed ──(threshold of one kind reached)──> open
    open ──(cool-down elapsed; the next call is a probe)──> half_open
    half_open ──(probe succeeds)──> closed      (cool-down reset)
    half_open ──(probe fails)──> open           (cool-down doubled, up to max_open_s)

While open, the inference worker degrades (see ``itsd.stages.infer``): it runs the CPU
fallback engine, or skips frames (a lower frame rate, down to the probes). The state,
the counts and the reason go into the stage's self-description, which health shows.

Time comes from an injected monotonic clock so tests drive it. This module must never
touch an engine, a ring or a backend library: it decides, the stage acts.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

KINDS: tuple[str, ...] = ("cuda", "oom", "timeout", "other")
_KIND_TEXT = {
    "cuda": "CUDA error",
    "oom": "out-of-memory error",
    "timeout": "time-out",
    "other": "error",
}


class BreakerState(enum.StrEnum):
    """Where the breaker is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def classify(exc: BaseException) -> str:
    """The failure kind of an exception raised by a backend: cuda, oom, timeout or other."""
    text = f"{type(exc).__name__}: {exc}".lower()
    if isinstance(exc, MemoryError) or "out of memory" in text or "outofmemory" in text:
        return "oom"
    if isinstance(exc, TimeoutError) or "timed out" in text or "timeout" in text:
        return "timeout"
    if any(word in text for word in ("cuda", "cudnn", "cublas", "nvrtc", "cudaerror")):
        return "cuda"
    return "other"


@dataclass(frozen=True)
class BreakerPolicy:
    """Thresholds (failures of one kind within `window_s` that open the breaker)."""

    thresholds: dict[str, int] = field(
        default_factory=lambda: {"oom": 2, "cuda": 3, "timeout": 5, "other": 5}
    )
    window_s: float = 60.0
    open_s: float = 5.0
    max_open_s: float = 300.0

    def __post_init__(self) -> None:
        unknown = set(self.thresholds) - set(KINDS)
        if unknown or any(v < 1 for v in self.thresholds.values()):
            raise ValueError(f"breaker thresholds must be >= 1 for kinds {KINDS}")
        if self.window_s <= 0 or self.open_s <= 0 or self.max_open_s < self.open_s:
            raise ValueError("breaker times must be positive and max_open_s >= open_s")


class CircuitBreaker:
    """Counts failures by kind and decides whether the primary backend may run."""

    def __init__(
        self, policy: BreakerPolicy | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self.state = BreakerState.CLOSED
        #: Failures of each kind since start.
        self.totals: dict[str, int] = dict.fromkeys(KINDS, 0)
        self._recent: dict[str, deque[float]] = {k: deque() for k in KINDS}
        self._cool_down = self.policy.open_s
        self._reopen_at = 0.0
        self.opened = 0
        self.reason = ""
        self.last_error = ""

    def _prune(self, now: float) -> None:
        horizon = now - self.policy.window_s
        for q in self._recent.values():
            while q and q[0] < horizon:
                q.popleft()

    def allow(self) -> bool:
        """Whether the primary backend may run now; an open breaker whose cool-down is
        over lets one call through as the half-open probe."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN and self._clock() >= self._reopen_at:
            self.state = BreakerState.HALF_OPEN
            return True
        return False  # open and cooling down, or a half-open probe already in flight

    def success(self) -> None:
        """The primary backend ran fine."""
        if self.state is BreakerState.HALF_OPEN:
            self.state = BreakerState.CLOSED
            self._cool_down = self.policy.open_s
            self.reason = ""
            for q in self._recent.values():
                q.clear()

    def failure(self, exc: BaseException) -> str:
        """The primary backend raised `exc`; returns its kind. May open the breaker."""
        kind = classify(exc)
        now = self._clock()
        self.totals[kind] += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if self.state is BreakerState.HALF_OPEN:
            self._cool_down = min(self._cool_down * 2, self.policy.max_open_s)
            self._open(now, f"probe failed with a {_KIND_TEXT[kind]}")
            return kind
        if self.state is BreakerState.OPEN:
            return kind
        self._prune(now)
        recent = self._recent[kind]
        recent.append(now)
        limit = self.policy.thresholds.get(kind, 5)
        if len(recent) >= limit:
            self._open(
                now,
                f"{len(recent)} {_KIND_TEXT[kind]}s within {self.policy.window_s:.0f} s",
            )
        return kind

    def _open(self, now: float, reason: str) -> None:
        self.state = BreakerState.OPEN
        self._reopen_at = now + self._cool_down
        self.opened += 1
        self.reason = reason

    def seconds_to_probe(self) -> float:
        """Seconds until the next probe (0 unless open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._reopen_at - self._clock())

    def describe(self) -> dict[str, Any]:
        """State, counts and reason, JSON-ready (for the stage's self-description)."""
        return {
            "state": str(self.state),
            "errors": dict(self.totals),
            "opened": self.opened,
            "reason": self.reason,
            "last_error": self.last_error,
            "cool_down_s": self._cool_down,
        }
