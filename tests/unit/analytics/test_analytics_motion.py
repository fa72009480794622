"""Time-aware constant-velocity Kalman filter on boxes."""

from __future__ import annotations

import numpy as np
import pytest

from itsd.analytics import motion


def _run(speed: float, fps: float, frames: int) -> np.ndarray:
    state = motion.initiate(np.array([[100.0, 200.0, 40.0, 30.0]]))
    for k in range(1, frames):
        state = motion.predict(state, 1.0 / fps)
        state = motion.update(state, np.array([[100.0 + speed * k / fps, 200.0, 40.0, 30.0]]))
    return state


@pytest.mark.parametrize("fps", [5.0, 30.0])
def test_velocity_converges_in_pixels_per_second(fps: float) -> None:
    state = _run(speed=240.0, fps=fps, frames=30)
    assert state[0, motion.VEL, 0] == pytest.approx(240.0, rel=0.02)
    assert abs(state[0, motion.VEL, 1]) < 1.0


def test_predict_moves_by_velocity_times_dt_and_widens_uncertainty() -> None:
    state = _run(speed=240.0, fps=30.0, frames=30)
    x = state[0, motion.POS, 0]
    short = motion.predict(state, 0.1)
    long = motion.predict(state, 0.5)
    assert short[0, motion.POS, 0] - x == pytest.approx(24.0, rel=0.02)
    assert long[0, motion.POS, 0] - x == pytest.approx(120.0, rel=0.02)
    assert (long[0, motion.P_PP] > short[0, motion.P_PP]).all()
    assert (short[0, motion.P_PP] > state[0, motion.P_PP]).all()


def test_two_short_predictions_equal_one_long_one() -> None:
    state = _run(speed=100.0, fps=30.0, frames=10)
    once = motion.predict(state, 0.2)
    twice = motion.predict(motion.predict(state, 0.1), 0.1)
    np.testing.assert_allclose(once[:, :2], twice[:, :2])


def test_negative_dt_is_no_time() -> None:
    state = _run(speed=100.0, fps=30.0, frames=10)
    np.testing.assert_array_equal(motion.predict(state, -1.0), state)


def test_update_pulls_towards_measurement_and_shrinks_variance() -> None:
    state = motion.predict(_run(speed=0.0, fps=30.0, frames=10), 1 / 30)
    updated = motion.update(state, np.array([[110.0, 200.0, 40.0, 30.0]]))
    assert 100.0 < updated[0, motion.POS, 0] < 110.0
    assert (updated[0, motion.P_PP] < state[0, motion.P_PP]).all()
    assert (updated[0, motion.P_VV] <= state[0, motion.P_VV]).all()


def test_batched_equals_one_by_one() -> None:
    boxes = np.array([[10.0, 10.0, 20.0, 30.0], [300.0, 100.0, 80.0, 60.0]])
    batch = motion.predict(motion.initiate(boxes), np.array([0.1, 0.3]))
    single = np.concatenate(
        [motion.predict(motion.initiate(boxes[i : i + 1]), dt) for i, dt in enumerate([0.1, 0.3])]
    )
    np.testing.assert_allclose(batch, single)


def test_noise_must_be_positive() -> None:
    with pytest.raises(ValueError, match="measurement"):
        motion.MotionNoise(measurement=0.0)
