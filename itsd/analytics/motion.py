"""Constant-velocity Kalman filter for boxes, batched over tracks and aware of elapsed time.

The state of a box is its centre, width and height plus their rates of change, in pixels
and pixels per second: ``[cx, cy, w, h, vcx, vcy, vw, vh]``. The four coordinates move
independently under the model (the transition and measurement matrices are block
diagonal, the noises are diagonal), so the 8x8 covariance is four independent 2x2 blocks
and the filter is stored and run as such. One state array holds many tracks, shape
``(T, 5, 4)``: rows are position, velocity, var(position), cov(position, velocity) and
var(velocity); columns are cx, cy, w, h. Every step is a few vectorised numpy operations
for all tracks at once.

Time is explicit: ``predict`` takes the seconds elapsed per track, so skipped or late
frames move a box by ``velocity * dt`` and widen its uncertainty accordingly (continuous
white-noise acceleration model, plus a small random walk on the position). Noises scale
with the box size, as in ByteTrack and BoT-SORT: a box 200 px wide jitters more in pixels
than one 20 px wide.

This module must never import anything else from itsd, and it holds no track identity:
it only moves numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

POS, VEL, P_PP, P_PV, P_VV = 0, 1, 2, 3, 4
_MIN_SIZE = 1.0  # pixels; keeps size-scaled noises positive for tiny or collapsing boxes


@dataclass(frozen=True)
class MotionNoise:
    """Noise levels of the filter, each relative to the box size (width for x and w,
    height for y and h).

    The defaults match ByteTrack's per-frame values at 30 fps, converted to per-second
    quantities so that they hold at any frame rate.
    """

    #: Standard deviation of a detector's box coordinate around the truth.
    measurement: float = 0.05
    #: Acceleration noise: velocity standard deviation added over one second, per s^1/2.
    acceleration: float = 1.0
    #: Random-walk noise on the position itself, standard deviation per s^1/2.
    position_walk: float = 0.27
    #: Initial standard deviation of the position of a new track.
    initial_position: float = 0.1
    #: Initial standard deviation of the centre velocity of a new track, per second.
    initial_velocity: float = 10.0
    #: Initial standard deviation of the size velocity (growth) of a new track, per second.
    initial_size_velocity: float = 1.0

    def __post_init__(self) -> None:
        for name in (
            "measurement",
            "acceleration",
            "position_walk",
            "initial_position",
            "initial_velocity",
            "initial_size_velocity",
        ):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0.0):
                raise ValueError(f"MotionNoise.{name} must be a positive number, got {value!r}")


def _scale(sizes: FloatArray) -> FloatArray:
    """Per-coordinate size scale (T, 4): width for cx and w, height for cy and h."""
    w = np.maximum(sizes[:, 0], _MIN_SIZE)
    h = np.maximum(sizes[:, 1], _MIN_SIZE)
    return np.stack((w, h, w, h), axis=1)


def initiate(measurements: npt.ArrayLike, noise: MotionNoise = MotionNoise()) -> FloatArray:
    """States (T, 5, 4) of new tracks from their first boxes (T, 4) as cx, cy, w, h."""
    z = np.asarray(measurements, dtype=np.float64).reshape(-1, 4)
    s = _scale(z[:, 2:4])
    state = np.zeros((z.shape[0], 5, 4), dtype=np.float64)
    state[:, POS] = z
    state[:, P_PP] = (noise.initial_position * s) ** 2
    v, sv = noise.initial_velocity, noise.initial_size_velocity
    vel_std = np.array([v, v, sv, sv])
    state[:, P_VV] = (vel_std * s) ** 2
    return state


def predict(state: FloatArray, dt: npt.ArrayLike, noise: MotionNoise = MotionNoise()) -> FloatArray:
    """States moved forward by ``dt`` seconds (scalar or one per track; negative counts as 0)."""
    out = state.copy()
    if out.shape[0] == 0:
        return out
    t = np.maximum(np.broadcast_to(np.asarray(dt, dtype=np.float64), (out.shape[0],)), 0.0)
    t = t[:, None]
    s2 = _scale(out[:, POS, 2:4]) ** 2
    q_acc = noise.acceleration**2 * s2
    q_walk = noise.position_walk**2 * s2
    pp, pv, vv = state[:, P_PP], state[:, P_PV], state[:, P_VV]
    out[:, POS] += out[:, VEL] * t
    out[:, P_PP] = pp + 2.0 * t * pv + t * t * vv + q_acc * t**3 / 3.0 + q_walk * t
    out[:, P_PV] = pv + t * vv + q_acc * t * t / 2.0
    out[:, P_VV] = vv + q_acc * t
    return out


def update(
    state: FloatArray, measurements: npt.ArrayLike, noise: MotionNoise = MotionNoise()
) -> FloatArray:
    """States (T, 5, 4) corrected by measured boxes (T, 4) as cx, cy, w, h."""
    out = state.copy()
    z = np.asarray(measurements, dtype=np.float64).reshape(-1, 4)
    if out.shape[0] == 0:
        return out
    r = (noise.measurement * _scale(z[:, 2:4])) ** 2
    pp, pv, vv = state[:, P_PP], state[:, P_PV], state[:, P_VV]
    innovation_var = pp + r
    k_pos = pp / innovation_var
    k_vel = pv / innovation_var
    residual = z - state[:, POS]
    out[:, POS] += k_pos * residual
    out[:, VEL] += k_vel * residual
    out[:, P_PP] = (1.0 - k_pos) * pp
    out[:, P_PV] = (1.0 - k_pos) * pv
    out[:, P_VV] = vv - k_vel * pv
    return out


def boxes_cxcywh(state: FloatArray) -> FloatArray:
    """The estimated boxes (T, 4) as cx, cy, w, h, with sizes kept at least 1 px."""
    b = state[:, POS].copy()
    b[:, 2:4] = np.maximum(b[:, 2:4], _MIN_SIZE)
    return b
