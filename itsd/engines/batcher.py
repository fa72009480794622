"""Scheduling of the inference worker: which cameras' frames form the next batch, and how big.

Three rules, as pure logic (the stage loop owns the rings; this module only decides):

* **Adaptive batch size.** `AdaptiveBatchSize` keeps a limit between 1 and
  ``max_batch``. A batch slower than the latency target shrinks the limit at once to the
  size that would have met it (the time of one frame times the frames that fit); when the
  p95 of the last ``window`` batches is well under the target (below ``grow_below`` of
  it) and frames were left waiting, the limit grows by one. Additive increase,
  proportional decrease: the p95 batch latency holds under the target as load grows.
* **Priority lanes.** Cameras whose priority is at least ``lane_priority`` (an
  emergency-services camera, say) form the high lane: they are visited first, in priority
  order, and their frames join the batch even when the adaptive limit is reached (up to
  ``max_batch``). The other cameras are visited round-robin, so none starves.
* **Deadlines.** A frame older than ``deadline_ms`` (capture wall clock to now) is not
  processed late: `Batcher.admit` says drop it, and counts it per camera. Lossless
  cameras (recorded files read whole) have no deadline: they wait by design.

Time comes from injected clocks (`time.time_ns` for frame ages, as the decoders stamp
frames with it), so the tests drive it with a fake clock.

This module must never touch a ring, an engine or a backend library, and never sleep.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from itsd.errors import ConfigError

K = TypeVar("K", bound=Hashable)

#: Batches whose latencies make up the p95 the limit grows on.
DEFAULT_WINDOW = 16
#: The limit grows only while the p95 is below this share of the target.
DEFAULT_GROW_BELOW = 0.7


def p95(values: Iterable[float]) -> float:
    """95th percentile (nearest rank) of `values`; NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(0, math.ceil(0.95 * len(ordered)) - 1)
    return ordered[rank]


@dataclass(frozen=True)
class BatchPolicy:
    """The knobs of the scheduler (from ``performance.*``)."""

    max_batch: int = 32
    initial_batch: int = 8
    latency_target_s: float = 0.050
    deadline_s: float = 1.0
    lane_priority: int = 8
    window: int = DEFAULT_WINDOW
    grow_below: float = DEFAULT_GROW_BELOW

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ConfigError(f"max batch size must be at least 1, got {self.max_batch}")
        if not 1 <= self.initial_batch <= self.max_batch:
            raise ConfigError(
                f"batch size must be between 1 and the max batch size {self.max_batch}, "
                f"got {self.initial_batch}"
            )
        if self.latency_target_s <= 0:
            raise ConfigError(f"latency target must be positive, got {self.latency_target_s}")
        if self.deadline_s < 0:
            raise ConfigError(f"frame deadline must be >= 0 (0: none), got {self.deadline_s}")
        if self.window < 1 or not 0 < self.grow_below <= 1:
            raise ConfigError("window must be >= 1 and grow_below in (0, 1]")


class AdaptiveBatchSize:
    """The batch-size limit, adapted to hold the p95 batch latency under the target."""

    def __init__(self, policy: BatchPolicy) -> None:
        self.policy = policy
        self.limit = policy.initial_batch
        self._latencies: deque[float] = deque(maxlen=policy.window)
        self.grown = 0
        self.shrunk = 0

    @property
    def p95_s(self) -> float:
        """p95 of the recent batch latencies, seconds (NaN before the first batch)."""
        return p95(self._latencies)

    def observe(self, frames: int, latency_s: float, backlog: bool) -> int:
        """Record one batch of `frames` that took `latency_s`; returns the new limit.

        `backlog`: frames were left waiting because the batch was full.
        """
        pol = self.policy
        self._latencies.append(latency_s)
        if latency_s > pol.latency_target_s and frames > 0:
            per_frame = latency_s / frames
            fit = max(1, int(pol.latency_target_s / per_frame))
            new = max(1, min(self.limit - 1, fit))
            if new < self.limit:
                self.limit = new
                self.shrunk += 1
                self._latencies.clear()  # the old sizes' latencies no longer apply
            return self.limit
        if (
            backlog
            and frames >= self.limit
            and self.limit < pol.max_batch
            and len(self._latencies) >= pol.window
            and self.p95_s < pol.grow_below * pol.latency_target_s
        ):
            self.limit += 1
            self.grown += 1
            self._latencies.clear()
        return self.limit


class Batcher(Generic[K]):
    """Visiting order, admission (deadline) and batch-size limit for one inference worker.

    Keys are camera keys. Typical round::

        for key, high in batcher.visit_order():
            if batcher.full(len(batch), n_normal, high): break
            frame = take(key)
            if frame and batcher.admit(key, frame.capture_ns, lossless): batch.append(frame)
        ...
        batcher.done(len(batch), latency_s, backlog)
    """

    def __init__(self, policy: BatchPolicy, wall_ns: Callable[[], int] = time.time_ns) -> None:
        self.policy = policy
        self.size = AdaptiveBatchSize(policy)
        self._wall_ns = wall_ns
        self._priority: dict[K, int] = {}
        self._high: list[K] = []
        self._normal: list[K] = []
        self._start = 0
        #: Frames dropped for being past their deadline, per camera key.
        self.expired: dict[K, int] = {}

    # -- cameras -------------------------------------------------------------------------
    def set_camera(self, key: K, priority: int) -> None:
        """Add a camera or change its priority."""
        self._priority[key] = priority
        self._relane()

    def remove_camera(self, key: K) -> None:
        """Forget a camera (its drop count too)."""
        self._priority.pop(key, None)
        self.expired.pop(key, None)
        self._relane()

    def _relane(self) -> None:
        # Stable sorts keep the order cameras were added in among equal priorities.
        keys = list(self._priority)
        lane = self.policy.lane_priority
        self._high = sorted((k for k in keys if self._priority[k] >= lane), key=self._neg_prio)
        self._normal = sorted((k for k in keys if self._priority[k] < lane), key=self._neg_prio)
        self._start %= max(1, len(self._normal))

    def _neg_prio(self, key: K) -> int:
        return -self._priority[key]

    @property
    def high_lane(self) -> Sequence[K]:
        """Cameras of the high-priority lane, in visiting order."""
        return tuple(self._high)

    # -- one round -----------------------------------------------------------------------
    def visit_order(self) -> list[tuple[K, bool]]:
        """(key, in the high lane) for every camera: high lane first, then the others
        starting one further along than last round (round-robin)."""
        n = len(self._normal)
        rotated = [self._normal[(self._start + i) % n] for i in range(n)]
        self._start = (self._start + 1) % max(1, n)
        return [(k, True) for k in self._high] + [(k, False) for k in rotated]

    def full(self, taken: int, normal: int, high: bool) -> bool:
        """Whether a frame of this lane may no longer join a batch of `taken` frames, of
        which `normal` came from the normal lane: the batch never exceeds max_batch, and
        the normal lane's frames never exceed the adaptive limit (high-lane frames do not
        count against it, so a busy emergency camera cannot starve the others)."""
        if taken >= self.policy.max_batch:
            return True
        return not high and normal >= self.size.limit

    def admit(self, key: K, capture_wall_ns: int, lossless: bool = False) -> bool:
        """False (and counted) when the frame is past its deadline; lossless frames pass."""
        if lossless or self.policy.deadline_s <= 0:
            return True
        age_s = (self._wall_ns() - capture_wall_ns) / 1e9
        if age_s > self.policy.deadline_s:
            self.expired[key] = self.expired.get(key, 0) + 1
            return False
        return True

    def done(self, frames: int, latency_s: float, backlog: bool) -> int:
        """Record a batch's latency; returns the batch-size limit for the next one."""
        return self.size.observe(frames, latency_s, backlog)
