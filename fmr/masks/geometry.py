"""Where a mask sits on a face, from dlib's 68 landmarks.

Everything is built in a face frame: origin at the nose tip (point 30), x along the eye line
(left eye to right eye, so head roll is taken out), y down, one unit about the distance between
the eye centres. The outline's top edge runs from a corner on the visible jaw line up over the
nose (at the height `coverage` asks for) and down to the other corner, held below the lower
eyelids; the rest of the outline follows the jaw points around the chin. A turned head moves
the jaw points, so the outline follows the visible jaw and the far side is narrower.

Surface coordinates for shading and patterns: u in [-1, 1] across the mask (0 on the line from
nose to chin, the half-widths left and right of it measured separately, which foreshortens the
far side of a turned face) and v in [0, 1] from the top edge to the bottom edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fmr.errors import FaceError

NOSE_BRIDGE = 27
NOSE_TIP = 30
CHIN = 8
LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)
LOWER_LIDS = ((40, 41), (46, 47))
EYE_CORNERS = ((36, 39), (42, 45))

# Smallest face unit (about the eye distance) a mask is drawn for, in pixels.
MIN_UNIT_PX = 2.5
# The top edge stays at least this far (face units) below the lower eyelids.
EYE_MARGIN = 0.1


@dataclass(frozen=True)
class OutlineSpec:
    """A style's outline, in face units.

    peak: the top edge's highest point, as a fraction of the way from nose tip to nose bridge,
    at coverage 0 and 1. side_drop: how far below that point the top corners sit. profile: the
    top edge's shape between peak and corner ("tent": a nose wire then flat, "arc": a cup's
    rounded rim, "v": straight lines, "round": in between). width: the outline's width relative
    to the jaw line. side_pad and chin_pad: how far the edge sits outside the jaw at the sides
    and under the chin.
    """

    peak: tuple[float, float] = (0.2, 0.85)
    side_drop: float = 0.3
    profile: str = "tent"
    width: float = 1.0
    side_pad: float = 0.02
    chin_pad: float = 0.12


@dataclass(frozen=True)
class FaceFrame:
    """Origin (2,), unit axes ex, ey (2,) and unit length (px) of the face frame in an image."""

    origin: np.ndarray
    ex: np.ndarray
    ey: np.ndarray
    unit: float

    def to_face(self, points: np.ndarray) -> np.ndarray:
        d = np.asarray(points, dtype=np.float64) - self.origin
        return np.stack([d @ self.ex, d @ self.ey], axis=-1) / self.unit

    def to_image(self, points: np.ndarray) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64)
        return self.origin + self.unit * (p[..., 0:1] * self.ex + p[..., 1:2] * self.ey)

    def pixel_coordinates(self, x0: int, y0: int, width: int, height: int):
        """Face-frame X, Y ((height, width) float32 each) of the pixel centres of a region."""
        xs = np.arange(x0, x0 + width, dtype=np.float64) - self.origin[0]
        ys = np.arange(y0, y0 + height, dtype=np.float64) - self.origin[1]
        big_x = (xs[None, :] * self.ex[0] + ys[:, None] * self.ex[1]) / self.unit
        big_y = (xs[None, :] * self.ey[0] + ys[:, None] * self.ey[1]) / self.unit
        return big_x.astype(np.float32), big_y.astype(np.float32)


def check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """(68, 2) float64 copy, or FaceError when the array cannot be a 68-point face."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (68, 2):
        raise FaceError(f"expected 68 landmarks of shape (68, 2), got shape {points.shape}")
    if not np.isfinite(points).all():
        raise FaceError("the face's landmarks contain NaN or infinite values; cannot place a mask")
    return points


def face_frame(landmarks: np.ndarray) -> FaceFrame:
    """The face frame of 68 landmarks (see the module docstring)."""
    points = check_landmarks(landmarks)
    left_eye, right_eye = points[LEFT_EYE].mean(0), points[RIGHT_EYE].mean(0)
    across = right_eye - left_eye
    jaw = points[16] - points[0]
    # Eye line and jaw line together: robust to one of them being badly fitted.
    direction = across / max(np.linalg.norm(across), 1e-9) + jaw / max(np.linalg.norm(jaw), 1e-9)
    norm = np.linalg.norm(direction)
    if norm < 1e-6:
        raise FaceError("the face's landmarks are degenerate (eyes and jaw on top of each other)")
    ex = direction / norm
    ey = np.array([-ex[1], ex[0]])
    mid_eye = (left_eye + right_eye) / 2
    # The unit stays about the eye distance under head turn: jaw width shrinks with yaw, the
    # eye-to-chin height does not. On the mean aligned face both give 34.6 px.
    unit = 0.5 * (abs(jaw @ ex) / 2.35 + abs((points[CHIN] - mid_eye) @ ey) / 1.93)
    if not unit >= MIN_UNIT_PX:
        raise FaceError(
            f"the face is too small to mask (about {unit:.1f} px between the eyes; "
            f"at least {MIN_UNIT_PX} px needed)"
        )
    return FaceFrame(points[NOSE_TIP].copy(), ex, ey, float(unit))


def _smoothstep(a: float, b: float, x):
    t = np.clip((np.asarray(x, dtype=np.float64) - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _profile(name: str, t: np.ndarray) -> np.ndarray:
    """Top-edge drop from the peak (0) to the corner (1) for t from 0 (peak) to 1 (corner)."""
    t = np.clip(t, 0.0, 1.0)
    if name == "tent":  # a surgical mask's nose wire: steep beside the nose, then nearly flat
        return 0.72 * _smoothstep(0.0, 0.32, t) + 0.28 * t
    if name == "arc":  # a cup respirator's rim: an ellipse quadrant
        return 1.0 - np.sqrt(np.clip(1.0 - t**2, 0.0, 1.0))
    if name == "v":  # a flat-fold KN95: straight, a little convex
        return t**0.85
    if name == "round":
        return 0.5 * (t**0.6) + 0.5 * (1.0 - np.sqrt(np.clip(1.0 - t**2, 0.0, 1.0)))
    raise ValueError(f"unknown outline profile {name!r}")


def _chaikin(path: np.ndarray, rounds: int = 2) -> np.ndarray:
    """Corner-cutting smoothing of an open polyline; the end points stay where they are."""
    for _ in range(rounds):
        q = 0.75 * path[:-1] + 0.25 * path[1:]
        r = 0.25 * path[:-1] + 0.75 * path[1:]
        inner = np.empty((2 * (len(path) - 1), 2))
        inner[0::2], inner[1::2] = q, r
        path = np.vstack([path[:1], inner[1:-1], path[-1:]])
    return path


def _point_on_contour(contour: np.ndarray, y: float) -> np.ndarray:
    """Where a top-to-bottom contour (N, 2) first reaches height y (extended straight up above)."""
    if y <= contour[0, 1]:
        return np.array([contour[0, 0], y])
    for a, b in zip(contour[:-1], contour[1:], strict=True):
        if a[1] <= y <= b[1] and b[1] > a[1]:
            return a + (b - a) * (y - a[1]) / (b[1] - a[1])
    return contour[-1].copy()


@dataclass
class MaskGeometry:
    """A mask outline on one face. Face-frame arrays unless named `*_image`."""

    frame: FaceFrame
    top: np.ndarray  # (K, 2) top edge, left corner to right corner
    bottom: np.ndarray  # (M, 2) bottom edge, left corner round the chin to right corner
    peak: np.ndarray  # (2,) top of the nose line on the top edge
    chin: np.ndarray  # (2,) lowest point of the centre line
    ears: np.ndarray  # (2, 2) where the left and right ear loops go
    jaw: np.ndarray  # (17, 2) the jaw points (the face's visible contour)
    side_visible: tuple[bool, bool]  # False for the far side of a turned head
    coverage: float

    @property
    def outline(self) -> np.ndarray:
        """The closed outline (K + M, 2), face frame: top edge then bottom edge back."""
        return np.vstack([self.top, self.bottom[::-1]])

    @property
    def outline_image(self) -> np.ndarray:
        return self.frame.to_image(self.outline)

    @property
    def half_widths(self) -> tuple[float, float]:
        xs = self.outline[:, 0]
        return float(self.peak[0] - xs.min()), float(xs.max() - self.peak[0])

    def centre_x(self, y):
        """X of the centre line (nose peak to chin) at height y."""
        t = np.clip((y - self.peak[1]) / max(self.chin[1] - self.peak[1], 1e-6), 0.0, 1.0)
        return self.peak[0] + (self.chin[0] - self.peak[0]) * t

    def top_y(self, x):
        return np.interp(x, self.top[:, 0], self.top[:, 1])

    def bottom_y(self, x):
        xs = np.maximum.accumulate(self.bottom[:, 0])  # a folded far-side jaw: keep x increasing
        return np.interp(x, xs, self.bottom[:, 1])

    def uv(self, x, y):
        """Surface coordinates (u, v) of face-frame points (arrays of any shape)."""
        left, right = self.half_widths
        dx = x - self.centre_x(y)
        u = np.where(dx < 0, dx / max(left, 1e-6), dx / max(right, 1e-6))
        top = self.top_y(x)
        v = (y - top) / np.maximum(self.bottom_y(x) - top, 1e-3)
        return np.clip(u, -1.2, 1.2), np.clip(v, -0.2, 1.2)

    def contour_point(self, side: int, y: float, outside: float = 0.0) -> np.ndarray:
        """The face contour (jaw line, extended straight up) at height y on the left (0) or
        right (1) side, moved `outside` units outwards."""
        half = self.jaw[0:9] if side == 0 else self.jaw[16:7:-1]
        point = _point_on_contour(half, y)
        return point + np.array([-outside if side == 0 else outside, 0.0])

    def point(self, u: float, v: float) -> np.ndarray:
        """The face-frame point at surface coordinates (u, v) (a few fixed-point steps)."""
        left, right = self.half_widths
        width = left if u < 0 else right
        x = self.peak[0] + u * width
        for _ in range(3):
            top = float(self.top_y(x))
            y = top + v * (float(self.bottom_y(x)) - top)
            x = float(self.centre_x(y)) + u * width
        return np.array([x, y])


def mask_geometry(
    landmarks: np.ndarray,
    spec: OutlineSpec,
    coverage: float,
    glasses: tuple[float, float] | None = None,
) -> MaskGeometry:
    """Fit a mask outline of shape `spec` to 68 landmarks (image pixels), top edge at `coverage`.

    glasses: depths (face units) of the left and right glasses rims below the lower eyelids
    (`fmr.masks.glasses.glasses_rims`); the top edge then stays below the rims, across the
    width of the lenses, so the glasses sit on top of the mask (the peak comes down with it, as
    far as it can while still covering the nose tip).
    """
    points = check_landmarks(landmarks)
    frame = face_frame(points)
    face = frame.to_face(points)

    t = spec.peak[0] + (spec.peak[1] - spec.peak[0]) * float(np.clip(coverage, 0.0, 1.0))
    peak = face[NOSE_TIP] + t * (face[NOSE_BRIDGE] - face[NOSE_TIP])
    chin = face[CHIN]
    if glasses is not None:  # no notch under the lenses: bring the whole top edge down
        lowest_rim = max(face[list(lids), 1].max() + depth for lids, depth in zip(
            LOWER_LIDS, glasses, strict=True))
        peak[1] = min(max(peak[1], lowest_rim - 0.05), face[NOSE_TIP, 1] - 0.12)
    if chin[1] - peak[1] < 0.3:
        raise FaceError("the face's landmarks are implausible (chin not below the nose); "
                        "cannot place a mask")

    def centre_x(y):
        s = np.clip((y - peak[1]) / (chin[1] - peak[1]), 0.0, 1.0)
        return peak[0] + (chin[0] - peak[0]) * s

    jaw = face[0:17].copy()
    jaw[:, 0] = centre_x(jaw[:, 1]) + (jaw[:, 0] - centre_x(jaw[:, 1])) * spec.width
    side_y = peak[1] + spec.side_drop

    # Bottom edge: corner, the jaw points below the corners, corner; then pushed outwards.
    left_corner = _point_on_contour(jaw[0:9], side_y)
    right_corner = _point_on_contour(jaw[16:7:-1], side_y)
    left_part = [p for p in jaw[0:9] if p[1] > side_y]
    right_part = [p for p in jaw[9:17] if p[1] > side_y]
    path = np.vstack([left_corner, *left_part, *right_part, right_corner])
    tangent = np.gradient(path, axis=0)
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
    centre = np.array([centre_x(0.4), 0.4])
    flip = ((path - centre) * normal).sum(axis=1) < 0
    normal[flip] *= -1
    weight = _smoothstep(side_y, chin[1], path[:, 1]) ** 1.5
    pad = spec.side_pad + (spec.chin_pad - spec.side_pad) * weight
    bottom = _chaikin(path + normal * pad[:, None])
    left_corner, right_corner = bottom[0], bottom[-1]

    # Top edge: the style's profile between corners and peak, held below the eyes.
    xs = np.concatenate([
        np.linspace(left_corner[0], peak[0], 25)[:-1], np.linspace(peak[0], right_corner[0], 25)
    ])
    drop_left, drop_right = left_corner[1] - peak[1], right_corner[1] - peak[1]
    span_left = max(peak[0] - left_corner[0], 1e-6)
    span_right = max(right_corner[0] - peak[0], 1e-6)
    ys = np.where(
        xs < peak[0],
        peak[1] + drop_left * _profile(spec.profile, (peak[0] - xs) / span_left),
        peak[1] + drop_right * _profile(spec.profile, (xs - peak[0]) / span_right),
    )
    for side, (lids, corners) in enumerate(zip(LOWER_LIDS, EYE_CORNERS, strict=True)):
        lid_y = face[list(lids), 1].max()
        eye_x = face[list(corners), 0].mean()
        half = max(abs(face[corners[1], 0] - face[corners[0], 0]) / 2 * 1.4, 0.05)
        margin = EYE_MARGIN
        if glasses is not None:  # lenses are wider than eyes and the rim sits lower
            margin = max(EYE_MARGIN, glasses[side] + 0.07)
            half *= 1.5
        floor = lid_y + margin - 0.3 * ((xs - eye_x) / half) ** 2
        ys = 0.5 * (ys + floor + np.sqrt((ys - floor) ** 2 + 0.02**2))  # a smooth max
    top = np.stack([xs, ys], axis=1)
    top[0], top[-1] = left_corner, right_corner

    left_ear = face[0] + np.array([-0.3, 0.12])
    right_ear = face[16] + np.array([0.3, 0.12])
    left_half, right_half = peak[0] - bottom[:, 0].min(), bottom[:, 0].max() - peak[0]
    if min(left_half, right_half) < 0.08:
        raise FaceError("the face is turned too far to the side to place a mask")
    visible = (left_half > 0.55 * right_half, right_half > 0.55 * left_half)
    return MaskGeometry(
        frame, top, bottom, peak, np.array([centre_x(chin[1]), bottom[:, 1].max()]),
        np.stack([left_ear, right_ear]), face[0:17].copy(), visible, float(coverage),
    )
