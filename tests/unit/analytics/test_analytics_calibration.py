"""Ground-plane calibration, speed and heading, against synthetic geometry with known answers.

A synthetic camera is a known homography (ground metres -> normalised image); vehicles
drive known ground trajectories, their boxes are drawn in the image through it and go
through the real tracker, so the speeds measured are compared with the true ones.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from itsd.analytics.calibration import (
    COMPASS,
    Calibration,
    CalibrationError,
    angle_difference,
    compass_label,
    image_label,
)
from itsd.analytics.speed import Kinematics
from itsd.analytics.tracker import Tracker, TrackerConfig

W, H = 1280, 720
#: Ground (x, y metres) -> normalised image: a camera looking along +y down a road.
GROUND_TO_IMAGE = np.array([[0.030, 0.0175, 0.5], [0.0, -0.004, 0.95], [0.0, 0.035, 1.0]])


def project(ground: np.ndarray) -> np.ndarray:
    g = np.column_stack((ground, np.ones(len(ground))))
    p = (GROUND_TO_IMAGE @ g.T).T
    return p[:, :2] / p[:, 2:3]


WORLD = np.array([[-5.0, 5.0], [5.0, 5.0], [5.0, 40.0], [-5.0, 40.0], [0.0, 20.0]])


def calibration(bearing: float = 0.0) -> Calibration:
    return Calibration.fit(project(WORLD).tolist(), WORLD.tolist(), bearing)


def test_fit_recovers_the_homography() -> None:
    cal = calibration()
    assert cal.rms_error_m < 1e-6 and cal.max_error_m < 1e-6
    probe = np.array([[1.0, 12.0], [-3.5, 33.0], [4.0, 7.5]])
    np.testing.assert_allclose(cal.to_ground(project(probe)), probe, atol=1e-6)
    np.testing.assert_allclose(cal.to_image(probe), project(probe), atol=1e-9)


def test_reprojection_error_of_inconsistent_points() -> None:
    world = WORLD.copy()
    world[4] += (0.8, 0.0)  # the fifth point measured 0.8 m off
    cal = Calibration.fit(project(WORLD).tolist(), world.tolist())
    assert 0.1 < cal.rms_error_m < 0.8 and cal.max_error_m < 0.8


def test_above_the_horizon_has_no_ground_position() -> None:
    cal = calibration()
    horizon_y = -0.004 / 0.035  # image y of the road's vanishing point (y -> infinity)
    assert np.all(np.isnan(cal.to_ground([[0.5, horizon_y - 0.05]])))
    assert np.all(np.isfinite(cal.to_ground([[0.5, horizon_y + 0.05]])))


@pytest.mark.parametrize(
    ("image", "world", "message"),
    [
        (
            [[0.1, 0.5], [0.3, 0.5], [0.6, 0.5], [0.5, 0.9]],
            [[0, 0], [5, 0], [5, 5], [0, 5]],
            "image points 1, 2, 3 lie on one line",
        ),
        (
            [[0.1, 0.9], [0.9, 0.9], [0.6, 0.5], [0.4, 0.5]],
            [[0, 0], [5, 0], [10, 0], [0, 5]],
            "world points 1, 2, 3 lie on one line",
        ),
        (
            [[0.1, 0.9], [0.1, 0.9], [0.6, 0.5], [0.4, 0.5]],
            [[0, 0], [5, 0], [5, 5], [0, 5]],
            "image points 1 and 2 are the same point",
        ),
        (
            [[0.1, 0.9], [0.9, 0.9], [0.6, 0.5], [0.4, 0.5]],
            [[0, 0], [0, 0], [5, 5], [0, 5]],
            "world points 1 and 2 are the same point",
        ),
        (
            [[0.1, 0.9], [0.9, 0.9], [0.6, 0.5], [0.4, 0.5]],
            [[5, 0], [0, 0], [0, 30], [5, 30]],
            "mirror image",
        ),
        ([[0.1, 0.9], [0.9, 0.9], [0.6, 0.5]], [[0, 0], [5, 0], [5, 5]], "at least 4"),
        (
            [[0.1, 0.9], [0.9, 0.9], [0.6, 0.5], [0.4, 0.5]],
            [[0, 0], [5, 0], [5, 5]],
            "must pair up",
        ),
    ],
)
def test_bad_points_are_refused_with_the_reason(
    image: list[list[float]], world: list[list[float]], message: str
) -> None:
    with pytest.raises(CalibrationError, match=message):
        Calibration.fit(image, world)


def test_compass_labels_are_exact() -> None:
    for i, name in enumerate(COMPASS):
        assert compass_label(i * 45.0) == name
        assert compass_label(i * 45.0 + 22.0) == name
    assert compass_label(359.0) == "north"
    assert image_label(180.0) == "image_down"
    assert angle_difference(350.0, 10.0) == pytest.approx(20.0)


def _drive(
    kin: Kinematics,
    start: tuple[float, float],
    velocity_mps: tuple[float, float],
    seconds: float,
    fps: float = 10.0,
) -> list[float | None]:
    """One vehicle through the real tracker; the speeds measured at each frame."""
    tracker = Tracker(TrackerConfig())
    speeds: list[float | None] = []
    n = int(seconds * fps)
    for k in range(n):
        t = 1000.0 + k / fps
        g = np.array([[start[0] + velocity_mps[0] * k / fps, start[1] + velocity_mps[1] * k / fps]])
        bx, by = project(g)[0]
        # A box about 1.8 m wide and 1.5 m high seen at that distance.
        size = project(g + np.array([1.8, 0.0]))[0, 0] - bx
        w, h = size * W, size * W * 0.8
        box = np.array([[bx * W - w / 2, by * H - h, bx * W + w / 2, by * H]], dtype=np.float32)
        tracks = tracker.update(box, np.array([0.9], np.float32), np.array([2], np.int32), t)
        motions = kin.update(tracks, W, H, t)
        speeds.append(next(iter(motions.values())).speed_kmh if motions else None)
    return speeds


@pytest.mark.parametrize(
    ("velocity", "bearing", "label"),
    [
        ((0.0, 50 / 3.6), 0.0, "north"),
        ((0.0, -30 / 3.6), 0.0, "south"),
        ((0.0, 80 / 3.6), 90.0, "east"),
        ((0.0, -60 / 3.6), 90.0, "west"),
        ((0.0, 40 / 3.6), 45.0, "north_east"),
    ],
)
def test_speed_within_3_percent_and_heading_exact(
    velocity: tuple[float, float], bearing: float, label: str
) -> None:
    cal = calibration(bearing)
    kin = Kinematics(cal, window_s=1.0, min_samples=3)
    true_kmh = math.hypot(*velocity) * 3.6
    start = (1.5, 8.0) if velocity[1] > 0 else (1.5, 38.0)
    speeds = _drive(kin, start, velocity, seconds=3.0)
    measured = [s for s in speeds[12:] if s is not None]
    assert measured, speeds
    for s in measured:
        assert abs(s - true_kmh) / true_kmh < 0.03, (s, true_kmh)
    motion = next(iter(kin.motions.values()))
    assert motion.heading == label
    assert motion.samples >= 3


def test_without_calibration_speed_is_absent_and_direction_image_relative() -> None:
    kin = Kinematics(None)
    speeds = _drive(kin, (0.0, 8.0), (0.0, 50 / 3.6), seconds=2.0)
    assert all(s is None for s in speeds)
    motion = next(iter(kin.motions.values()))
    assert motion.heading == "image_up"  # driving away: up the picture
    assert motion.ground_xy is None


def test_a_still_vehicle_has_no_heading() -> None:
    kin = Kinematics(calibration())
    speeds = _drive(kin, (1.5, 10.0), (0.0, 0.0), seconds=2.0)
    assert speeds[-1] is not None and speeds[-1] < 1.0
    motion = next(iter(kin.motions.values()))
    assert motion.still and motion.heading is None
