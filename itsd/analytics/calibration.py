"""Ground-plane calibration of one camera: a homography from image points to metres.

A calibration is at least four points seen in the picture (normalised 0..1 of the
frame's width and height, so one calibration fits every resolution) and the same points
on the road, in metres, in a flat ground frame chosen by the user. The ground frame must
be right-handed seen from above: ``+x`` is 90 degrees clockwise of ``+y`` (``y`` north,
``x`` east on a map). ``bearing_deg`` is the compass bearing of ``+y`` (0: ``+y`` points
north), which turns ground headings into compass directions.

The homography is fitted by the normalised direct linear transform (Hartley and
Zisserman, algorithm 4.2): exact for four points, least squares for more. Input that
cannot give one is refused with the reason:

* repeated points (two image points, or two ground points, at the same place);
* collinear points (three of four on one line, or all of them on one line): the plane
  is not pinned down;
* mirrored input: the image, which has ``y`` down, seen from above would have to be
  flipped to match the ground points (usually one ground axis typed with the wrong
  sign, or the points listed in a different order in the two lists);
* points on both sides of the horizon (the fitted plane folds between them).

The reprojection error (image points mapped to the ground, compared with the ground
points) is reported in metres; with exactly four points it is zero by construction, so
five or more points are what make it a check.

Positions above the horizon have no ground position: ``to_ground`` gives NaN for them.

This module must never import anything from itsd outside ``itsd.analytics``, and never
draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: Compass labels, clockwise from north, 45 degrees apart.
COMPASS = (
    "north",
    "north_east",
    "east",
    "south_east",
    "south",
    "south_west",
    "west",
    "north_west",
)
#: Image-relative labels (no calibration), clockwise from the top of the picture.
IMAGE_DIRECTIONS = (
    "image_up",
    "image_up_right",
    "image_right",
    "image_down_right",
    "image_down",
    "image_down_left",
    "image_left",
    "image_up_left",
)

_SAME_IMAGE = 1e-4  # normalised units: closer image points are the same point
_SAME_GROUND = 0.01  # metres
_COLLINEAR = 1e-3  # triangle area relative to its longest side squared


class CalibrationError(ValueError):
    """The calibration points cannot give a ground plane (the message says why)."""


def compass_label(bearing_deg: float) -> str:
    """The nearest of the eight compass labels (``north``, ``north_east``, ...)."""
    return COMPASS[round((bearing_deg % 360.0) / 45.0) % 8]


def image_label(angle_deg: float) -> str:
    """The nearest image-relative label for an angle clockwise from the picture's top."""
    return IMAGE_DIRECTIONS[round((angle_deg % 360.0) / 45.0) % 8]


def angle_difference(a_deg: float, b_deg: float) -> float:
    """Smallest absolute difference of two directions in degrees, 0..180."""
    d = abs(a_deg - b_deg) % 360.0
    return 360.0 - d if d > 180.0 else d


def _points(label: str, pts: Sequence[Sequence[float]]) -> FloatArray:
    arr = np.asarray(pts, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise CalibrationError(f"{label} must be a list of [x, y] points")
    if not np.all(np.isfinite(arr)):
        raise CalibrationError(f"{label} must be finite numbers")
    return arr


def _normaliser(pts: FloatArray) -> FloatArray:
    """Similarity moving the points' centroid to 0 and their mean distance to sqrt(2)."""
    c = pts.mean(axis=0)
    d = float(np.mean(np.hypot(*(pts - c).T)))
    s = math.sqrt(2.0) / d if d > 0 else 1.0
    return np.array([[s, 0.0, -s * c[0]], [0.0, s, -s * c[1]], [0.0, 0.0, 1.0]])


def _apply(h: FloatArray, pts: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``pts`` (N, 2) mapped by ``h``; also the homogeneous scale w (N,)."""
    x, y = pts[:, 0], pts[:, 1]
    u = h[0, 0] * x + h[0, 1] * y + h[0, 2]
    v = h[1, 0] * x + h[1, 1] * y + h[1, 2]
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.stack((u / w, v / w), axis=1), w


def _check_distinct(label: str, pts: FloatArray, tol: float) -> None:
    for i in range(len(pts)):
        for j in range(i + 1, len(pts)):
            if math.hypot(*(pts[i] - pts[j])) < tol:
                raise CalibrationError(f"{label} {i + 1} and {j + 1} are the same point")


def _collinear(a: FloatArray, b: FloatArray, c: FloatArray) -> bool:
    area2 = abs((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))
    longest = max(
        float(np.sum((b - a) ** 2)), float(np.sum((c - a) ** 2)), float(np.sum((c - b) ** 2))
    )
    return bool(area2 < _COLLINEAR * longest)


def _check_collinear(label: str, pts: FloatArray) -> None:
    n = len(pts)
    if n == 4:
        for i in range(4):
            tri = [k for k in range(4) if k != i]
            if _collinear(pts[tri[0]], pts[tri[1]], pts[tri[2]]):
                names = ", ".join(str(k + 1) for k in tri)
                raise CalibrationError(
                    f"{label} {names} lie on one line: four points need no three in a line"
                )
    elif all(_collinear(pts[0], pts[1], pts[k]) for k in range(2, n)):
        raise CalibrationError(f"all {label} lie on one line")


def fit_homography(src: FloatArray, dst: FloatArray) -> FloatArray:
    """The 3x3 homography taking ``src`` (N, 2) to ``dst`` (N, 2), N >= 4 (normalised DLT)."""
    t_src, t_dst = _normaliser(src), _normaliser(dst)
    s = (t_src @ np.column_stack((src, np.ones(len(src)))).T).T
    d = (t_dst @ np.column_stack((dst, np.ones(len(dst)))).T).T
    rows = []
    for (x, y, _), (u, v, _) in zip(s, d, strict=True):
        rows.append([-x, -y, -1.0, 0.0, 0.0, 0.0, u * x, u * y, u])
        rows.append([0.0, 0.0, 0.0, -x, -y, -1.0, v * x, v * y, v])
    a = np.asarray(rows)
    _, sv, vt = np.linalg.svd(a)
    if len(sv) >= 8 and sv[7] < 1e-9 * sv[0]:
        raise CalibrationError("the points do not pin down a plane (degenerate configuration)")
    hn = vt[-1].reshape(3, 3)
    h = np.linalg.inv(t_dst) @ hn @ t_src
    h = h / h[2, 2] if abs(h[2, 2]) > 1e-12 else h / np.linalg.norm(h)
    return np.asarray(h, dtype=np.float64)


@dataclass(frozen=True)
class Calibration:
    """A camera's ground plane: normalised image points -> metres, and its bearing."""

    #: 3x3, normalised image coordinates (x right, y down) -> ground metres.
    homography: FloatArray
    #: Compass bearing of the ground frame's +y axis, degrees clockwise from north.
    bearing_deg: float
    #: Root mean square and largest distance (metres) between the ground points and the
    #: image points mapped to the ground.
    rms_error_m: float
    max_error_m: float
    #: Sign of the homogeneous scale on the camera's side of the horizon.
    w_sign: float = 1.0

    @classmethod
    def fit(
        cls,
        image_points: Sequence[Sequence[float]],
        world_points: Sequence[Sequence[float]],
        bearing_deg: float = 0.0,
    ) -> Calibration:
        """Fit and check a calibration; CalibrationError says what is wrong with the points."""
        img = _points("image points", image_points)
        gnd = _points("world points", world_points)
        if len(img) < 4:
            raise CalibrationError(f"need at least 4 points, got {len(img)}")
        if len(img) != len(gnd):
            raise CalibrationError(
                f"{len(img)} image points but {len(gnd)} world points: they must pair up"
            )
        if not math.isfinite(bearing_deg):
            raise CalibrationError("bearing_deg must be a finite number")
        _check_distinct("image points", img, _SAME_IMAGE)
        _check_distinct("world points", gnd, _SAME_GROUND)
        _check_collinear("image points", img)
        _check_collinear("world points", gnd)
        h = fit_homography(img, gnd)
        _, w = _apply(h, img)
        if not (np.all(w > 0) or np.all(w < 0)):
            raise CalibrationError(
                "the points lie on both sides of the horizon of the fitted plane "
                "(check that each image point and its world point are the same spot)"
            )
        w_sign = 1.0 if w[0] > 0 else -1.0
        # The Jacobian of the map at a point has determinant det(H) / w^3. Image y points
        # down, ground y points forward, so a faithful (unmirrored) map has it negative.
        jac = np.linalg.det(h) / w**3
        if np.all(jac > 0):
            raise CalibrationError(
                "the world points are a mirror image of the image points (ground +x must be "
                "90 degrees clockwise of +y seen from above: flip the sign of one world axis, "
                "or list the points in the same order in both lists)"
            )
        if not np.all(jac < 0):
            raise CalibrationError("the points fold the plane over itself (degenerate)")
        mapped, _ = _apply(h, img)
        err = np.hypot(*(mapped - gnd).T)
        return cls(
            homography=h,
            bearing_deg=float(bearing_deg) % 360.0,
            rms_error_m=float(np.sqrt(np.mean(err**2))),
            max_error_m=float(err.max()),
            w_sign=w_sign,
        )

    def to_ground(self, points: npt.ArrayLike) -> FloatArray:
        """Ground positions (N, 2) in metres of normalised image points (N, 2); NaN for
        points at or beyond the horizon."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        out, w = _apply(self.homography, pts)
        out[w * self.w_sign <= 1e-12] = np.nan
        return out

    def to_image(self, points: npt.ArrayLike) -> FloatArray:
        """Normalised image points (N, 2) of ground positions (N, 2); NaN where the
        ground point is behind the camera."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        inv = np.asarray(np.linalg.inv(self.homography), dtype=np.float64)
        out, w = _apply(inv, pts)
        # Mapping back, the scale has the opposite sign relation: check by going forward.
        back_w = (self.homography[2] @ np.column_stack((out, np.ones(len(out)))).T) * self.w_sign
        out[(back_w <= 1e-12) | ~np.isfinite(w)] = np.nan
        return out

    def compass(self, dx: float, dy: float) -> float:
        """Compass bearing (degrees clockwise from north, 0..360) of a ground step."""
        return (math.degrees(math.atan2(dx, dy)) + self.bearing_deg) % 360.0

    def compass_vector(self, bearing_deg: float) -> tuple[float, float]:
        """Unit ground vector (x, y) pointing at a compass bearing."""
        a = math.radians(bearing_deg - self.bearing_deg)
        return (math.sin(a), math.cos(a))
