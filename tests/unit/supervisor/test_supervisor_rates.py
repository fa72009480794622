"""Rates of the state snapshot: right from the first tick that sees frames, steady after."""

from __future__ import annotations

import pytest

from itsd.supervisor.snapshot import RATE_WINDOW_S, Snapshotter


def ticks(
    snap: Snapshotter, values: list[float], start: float = 100.0, step: float = 0.5
) -> list[float]:
    out = []
    for i, v in enumerate(values):
        out.append(snap._rate_of("k", v, start + i * step))
        snap._forget_unseen()
    return out


def test_first_tick_has_no_rate() -> None:
    assert ticks(Snapshotter(), [0.0]) == [0.0]


def test_rate_shows_on_the_first_tick_that_sees_frames() -> None:
    # Idle for a while, then 15 fps: the first tick after frames start already says so.
    rates = ticks(Snapshotter(), [0, 0, 0, 0, 0, 7.5, 15, 22.5, 30, 37.5, 45])
    assert rates[:5] == [0, 0, 0, 0, 0]
    assert rates[5] > 0
    assert rates[-1] == pytest.approx(15.0)  # the window holds only frames now


def test_steady_rate_over_irregular_ticks() -> None:
    snap = Snapshotter()
    t, v = 0.0, 0.0
    for dt in [0.5, 0.01, 0.49, 0.7, 0.3, 0.5, 0.02, 0.48, 0.5, 0.5]:
        t += dt
        v += 30 * dt
        rate = snap._rate_of("k", v, t)
    assert rate == pytest.approx(30.0)


def test_stopped_frames_bring_the_rate_to_zero_within_the_window() -> None:
    rates = ticks(Snapshotter(), [0, 15, 30, 45] + [45] * int(2 * RATE_WINDOW_S / 0.5 + 2))
    assert rates[3] == pytest.approx(30.0)
    assert rates[-1] == 0.0


def test_ticks_forced_close_together_give_no_spike() -> None:
    snap = Snapshotter()
    assert snap._rate_of("k", 0, 10.0) == 0.0
    assert snap._rate_of("k", 5, 10.01) == 0.0


def test_counter_that_starts_again_gives_no_negative_rate() -> None:
    rates = ticks(Snapshotter(), [0, 10, 20, 3, 13])
    assert all(r >= 0 for r in rates)
    assert rates[-1] == pytest.approx(20.0)


def test_series_not_seen_are_forgotten() -> None:
    snap = Snapshotter()
    snap._rate_of("gone", 1, 1.0)
    snap._forget_unseen()
    snap._rate_of("kept", 1, 2.0)
    snap._forget_unseen()
    assert set(snap._history) == {"kept"}
