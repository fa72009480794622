"""Unit tests of the inference scheduler: adaptation, priority lanes, deadlines (fake clock)."""

from __future__ import annotations

import pytest

from itsd.engines.batcher import AdaptiveBatchSize, Batcher, BatchPolicy, p95
from itsd.errors import ConfigError


class FakeWall:
    def __init__(self) -> None:
        self.ns = 1_000_000_000_000

    def __call__(self) -> int:
        return self.ns


def test_p95() -> None:
    assert p95(range(1, 101)) == 95
    assert p95([0.2]) == 0.2


def test_policy_is_checked() -> None:
    with pytest.raises(ConfigError, match="between 1 and the max batch size 4"):
        BatchPolicy(max_batch=4, initial_batch=8)
    with pytest.raises(ConfigError, match="latency target"):
        BatchPolicy(latency_target_s=0)


def simulate(size: AdaptiveBatchSize, per_frame_s: float, fixed_s: float, rounds: int) -> list[int]:
    """A backend whose batch takes fixed + n * per_frame; always more frames waiting."""
    seen = []
    for _ in range(rounds):
        n = size.limit
        size.observe(n, fixed_s + n * per_frame_s, backlog=True)
        seen.append(size.limit)
    return seen


def test_grows_under_load_while_fast_and_stops_below_the_target() -> None:
    pol = BatchPolicy(max_batch=32, initial_batch=1, latency_target_s=0.050, window=4)
    size = AdaptiveBatchSize(pol)
    limits = simulate(size, per_frame_s=0.004, fixed_s=0.002, rounds=400)
    # It grows while a batch takes under 0.7 * 50 ms = 35 ms: 8 frames take 34 ms, so it
    # takes one more step to 9 (38 ms) and settles there, under the 50 ms target.
    assert limits[-1] == 9
    assert 0.002 + limits[-1] * 0.004 <= 0.050
    assert max(limits) <= 12


def test_shrinks_at_once_when_batches_get_slow() -> None:
    pol = BatchPolicy(max_batch=32, initial_batch=32, latency_target_s=0.050)
    size = AdaptiveBatchSize(pol)
    # 32 frames at 10 ms each = 320 ms: the next batch is cut to what fits in 50 ms.
    assert size.observe(32, 0.320, backlog=True) == 5
    assert size.shrunk == 1
    # Load drops (the backend got 4x faster): it grows back, one step per window.
    limits = simulate(size, per_frame_s=0.0025, fixed_s=0.0, rounds=300)
    assert limits[-1] == 14  # 0.7 * 50 / 2.5
    assert all(n * 0.0025 <= 0.050 for n in limits)


def test_no_growth_without_backlog() -> None:
    pol = BatchPolicy(max_batch=32, initial_batch=2, window=2)
    size = AdaptiveBatchSize(pol)
    for _ in range(50):
        size.observe(2, 0.001, backlog=False)
    assert size.limit == 2


def test_high_lane_first_normal_round_robin() -> None:
    b: Batcher[str] = Batcher(BatchPolicy(lane_priority=8))
    for key, prio in (("a", 5), ("b", 5), ("siren", 9), ("c", 5), ("amb", 8)):
        b.set_camera(key, prio)
    assert b.high_lane == ("siren", "amb")
    first = b.visit_order()
    second = b.visit_order()
    assert first[:2] == [("siren", True), ("amb", True)]
    assert [k for k, _ in first[2:]] == ["a", "b", "c"]
    assert [k for k, _ in second[2:]] == ["b", "c", "a"]
    # Priority changes move a camera between lanes.
    b.set_camera("siren", 3)
    assert b.high_lane == ("amb",)
    b.remove_camera("amb")
    assert b.high_lane == ()


def test_high_lane_bypasses_the_adaptive_limit_but_not_the_max() -> None:
    b: Batcher[str] = Batcher(BatchPolicy(max_batch=4, initial_batch=2))
    assert b.full(2, 2, high=False)
    assert not b.full(2, 2, high=True)
    assert not b.full(3, 1, high=False)  # high-lane frames do not use up the limit
    assert b.full(4, 1, high=True) and b.full(4, 1, high=False)


def test_round_with_a_full_batch_keeps_the_emergency_camera() -> None:
    """Simulate a round: four normal cameras, one emergency camera, limit 2."""
    b: Batcher[str] = Batcher(BatchPolicy(max_batch=8, initial_batch=2))
    for key in ("n1", "n2", "n3", "n4"):
        b.set_camera(key, 5)
    b.set_camera("ems", 9)
    served: dict[str, int] = {}
    for _ in range(8):
        batch: list[str] = []
        normal = 0
        for key, high in b.visit_order():
            if b.full(len(batch), normal, high):
                break
            batch.append(key)
            normal += not high
        for key in batch:
            served[key] = served.get(key, 0) + 1
        assert batch[0] == "ems"
    assert served["ems"] == 8
    # The normal lane's two places rotate over the normal cameras: none starves.
    assert sorted(served[k] for k in ("n1", "n2", "n3", "n4")) == [4, 4, 4, 4]


def test_deadline_drops_and_counts_old_frames_but_not_lossless_ones() -> None:
    wall = FakeWall()
    b: Batcher[str] = Batcher(BatchPolicy(deadline_s=0.5), wall_ns=wall)
    captured = wall.ns
    wall.ns += 400_000_000
    assert b.admit("a", captured)
    wall.ns += 200_000_000  # 600 ms old now
    assert not b.admit("a", captured)
    assert not b.admit("a", captured)
    assert b.admit("file", captured, lossless=True)
    assert b.expired == {"a": 2}
    b.remove_camera("a")
    assert b.expired == {}


def test_deadline_zero_means_none() -> None:
    wall = FakeWall()
    b: Batcher[str] = Batcher(BatchPolicy(deadline_s=0), wall_ns=wall)
    assert b.admit("a", wall.ns - 10**12)
