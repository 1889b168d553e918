"""The "fmr" renderer: masks drawn procedurally on the face's own geometry, then lit like the face.

Two steps, so the training-time tensor path can reuse the first:
1. `render_layers(geometry, style, rng, ...)` draws, in a region of the image, everything that
   does not depend on the photo's pixels: the mask body's coverage (anti-aliased), its surface
   coordinates (u, v) for patterns, its shading (curvature, pleats, seams, rims, nose wire) and
   the parts drawn in their own colours (ear loops, straps, valves, filters, nose clips).
2. `composite(image, layers, options, rng)` colours the body (colour, pattern), matches it to
   the photo (white point, colour cast, the face's own light and shadow, grain) and blends it in.
   A contrast guard shifts a mask colour that would be too close to the skin (a skin-coloured
   mask) lighter or darker, so a mask always changes the nose and mouth clearly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from fmr.errors import FaceError
from fmr.masks import shading
from fmr.masks.geometry import MaskGeometry, OutlineSpec, mask_geometry
from fmr.masks.shading import MIN_CONTRAST, guard_contrast, luminance
from fmr.masks.styles import MaskOptions, parse_colour
from fmr.masks.texture import pattern_weight_map

# Fabric size of the surface coordinates: u spans half a face (about 7 cm), v the mask height.
U_CM, V_CM = 7.0, 9.0
# MIN_CONTRAST (fmr.masks.shading): the smallest colour distance (RGB, 0-255) between a mask
# and the skin it covers.

OUTLINES: dict[str, OutlineSpec] = {
    "surgical": OutlineSpec(peak=(0.2, 0.85), side_drop=0.3, profile="tent", width=1.0,
                            side_pad=0.02, chin_pad=0.14),
    "N95": OutlineSpec(peak=(0.25, 0.85), side_drop=0.55, profile="arc", width=0.9,
                       side_pad=0.0, chin_pad=0.06),
    "KN95": OutlineSpec(peak=(0.25, 0.85), side_drop=0.45, profile="v", width=0.97,
                        side_pad=0.01, chin_pad=0.1),
    "cloth": OutlineSpec(peak=(0.2, 0.8), side_drop=0.35, profile="round", width=1.0,
                         side_pad=0.03, chin_pad=0.12),
    "gas": OutlineSpec(peak=(0.3, 0.85), side_drop=0.6, profile="arc", width=0.8,
                       side_pad=0.0, chin_pad=0.05),
}
STRAP_COLOURS = ("#e9c84c", "#4d7fc2", "#f1f1ef", "#e58a3c", "#6b9e5a")
FILTER_COLOURS = ("#c8467a", "#7151a0", "#6e7449", "#80858b", "#d6b84c")


@dataclass
class Layers:
    """A mask drawn in the image region starting at (x0, y0); arrays are (h, w) float32.

    alpha: body coverage in [0, 1]. u, v: surface coordinates. shade: multiplicative shading of
    the body. grain: strength of fabric noise. over_rgb (h, w, 3) and over_alpha: parts in their
    own colours (0-255), drawn over the body and also beyond it (straps, filters).
    """

    x0: int
    y0: int
    alpha: np.ndarray
    u: np.ndarray
    v: np.ndarray
    shade: np.ndarray
    over_rgb: np.ndarray
    over_alpha: np.ndarray
    grain: float = 0.0
    parts: list[str] = field(default_factory=list)
    unit: float = 1.0

    @property
    def shape(self) -> tuple[int, int]:
        return self.alpha.shape

    def stack(self) -> np.ndarray:
        """(8, h, w) float32: alpha, u, v, shade, over_r, over_g, over_b, over_alpha."""
        return np.concatenate([
            np.stack([self.alpha, self.u, self.v, self.shade]),
            np.moveaxis(self.over_rgb, 2, 0),
            self.over_alpha[None],
        ]).astype(np.float32)


def _smooth(a: float, b: float, x):
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _gauss(x, width: float):
    return np.exp(-((x / width) ** 2))


class _Canvas:
    """Drawing helpers in one image region, in face-frame coordinates.

    Each part is drawn into an 8-bit coverage map over its own bounding box only (OpenCV's
    anti-aliased drawing, 4 bits of sub-pixel precision), then painted over the parts so far.
    """

    def __init__(self, geometry: MaskGeometry, x0: int, y0: int, width: int, height: int):
        self.g = geometry
        self.x0, self.y0, self.w, self.h = x0, y0, width, height
        self.unit = geometry.frame.unit
        self.over_rgb = np.zeros((height, width, 3), np.float32)
        self.over_alpha = np.zeros((height, width), np.float32)

    def _px(self, face_points) -> np.ndarray:
        """Face-frame points -> region pixels (float; OpenCV draws at pixel centres)."""
        image = self.g.frame.to_image(np.asarray(face_points, dtype=np.float64).reshape(-1, 2))
        return image - (self.x0, self.y0)

    def _window(self, px: np.ndarray, pad: float) -> tuple[slice, slice, np.ndarray] | None:
        x0 = max(int(np.floor(px[:, 0].min() - pad)), 0)
        y0 = max(int(np.floor(px[:, 1].min() - pad)), 0)
        x1 = min(int(np.ceil(px[:, 0].max() + pad)) + 1, self.w)
        y1 = min(int(np.ceil(px[:, 1].max() + pad)) + 1, self.h)
        if x1 <= x0 or y1 <= y0:
            return None
        fixed = np.round((px - (x0, y0)) * 16).astype(np.int32)
        return slice(y0, y1), slice(x0, x1), fixed

    def polygon_alpha(self, face_points) -> np.ndarray:
        """Full-region coverage of a filled polygon (the mask body)."""
        canvas = np.zeros((self.h, self.w), np.uint8)
        fixed = np.round(self._px(face_points) * 16).astype(np.int32)
        cv2.fillPoly(canvas, [fixed], 255, cv2.LINE_AA, 4)
        return canvas.astype(np.float32) / 255.0

    def _paint(self, rows: slice, cols: slice, canvas: np.ndarray, rgb) -> None:
        alpha = canvas.astype(np.float32) / 255.0
        rgb = np.asarray(rgb, np.float32)
        over = self.over_rgb[rows, cols]
        over += (rgb - over) * alpha[..., None]
        a = self.over_alpha[rows, cols]
        a += alpha * (1 - a)

    def polygon(self, face_points, rgb) -> None:
        px = self._px(face_points)
        window = self._window(px, 2)
        if window is None:
            return
        rows, cols, fixed = window
        canvas = np.zeros((rows.stop - rows.start, cols.stop - cols.start), np.uint8)
        cv2.fillPoly(canvas, [fixed], 255, cv2.LINE_AA, 4)
        self._paint(rows, cols, canvas, rgb)

    def line(self, face_points, thickness_units: float, rgb, fade: float = 0.0) -> None:
        """A polyline; with fade > 0 its last `fade` fraction fades out (a strap going behind
        the head)."""
        px = self._px(face_points)
        thickness = max(1, int(round(thickness_units * self.unit)))
        window = self._window(px, thickness + 2)
        if window is None:
            return
        rows, cols, fixed = window
        canvas = np.zeros((rows.stop - rows.start, cols.stop - cols.start), np.uint8)
        if fade <= 0:
            cv2.polylines(canvas, [fixed], False, 255, thickness, cv2.LINE_AA, 4)
        else:
            n = len(fixed) - 1
            for i in range(n):
                t = (i + 0.5) / n
                level = int(round(255 * (1 - _smooth(1 - fade, 1.0, t))))
                cv2.line(canvas, tuple(fixed[i]), tuple(fixed[i + 1]), level, thickness,
                         cv2.LINE_AA, 4)
        self._paint(rows, cols, canvas, rgb)

    def ellipse(self, centre, radii, rgb, angle_deg: float = 0.0) -> None:
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
        x, y = radii[0] * np.cos(t), radii[1] * np.sin(t)
        self.polygon(np.stack([centre[0] + c * x - s * y, centre[1] + s * x + c * y], axis=1), rgb)


def _bezier(a, control, b, n: int = 16) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * control + t**2 * b


def _hex(colour: str) -> np.ndarray:
    return parse_colour(colour)[1]


def _region(points_image: np.ndarray, image_shape, pad: int) -> tuple[int, int, int, int]:
    height, width = image_shape[:2]
    x0 = max(int(np.floor(points_image[:, 0].min())) - pad, 0)
    y0 = max(int(np.floor(points_image[:, 1].min())) - pad, 0)
    x1 = min(int(np.ceil(points_image[:, 0].max())) + pad + 1, width)
    y1 = min(int(np.ceil(points_image[:, 1].max())) + pad + 1, height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise FaceError("the mask would fall outside the image (is the face mostly cut off?)")
    return x0, y0, x1 - x0, y1 - y0


# -- style details ------------------------------------------------------------------------------


def _ear_loop(cv: _Canvas, side: int, top_v: float, low_v: float, thickness: float, rgb) -> None:
    g = cv.g
    if not g.side_visible[side]:
        return
    u = -1.0 if side == 0 else 1.0
    top, low = g.point(u * 0.985, top_v), g.point(u * 0.97, low_v)
    ear = g.ears[side]
    outward = np.array([u * 0.18, 0.0])
    cv.line(_bezier(top, (top + ear) / 2 + outward + [0, -0.08], ear), thickness, rgb)
    cv.line(_bezier(low, (low + ear) / 2 + outward + [0, 0.1], ear), thickness, rgb)


def _strap(cv: _Canvas, side: int, start_v: float, rise: float, thickness: float, rgb) -> None:
    """A head strap from the mask's side over the cheek to the face's contour, fading where it
    goes round the head. `rise`: how far (face units) its end is above (-) or below the start."""
    g = cv.g
    if not g.side_visible[side]:
        return
    u = -1.0 if side == 0 else 1.0
    start = g.point(u * 0.97, start_v)
    end = g.contour_point(side, start[1] + rise, outside=0.22)
    if (end[0] - start[0]) * u < 0.2:  # the mask reaches the contour here
        end = np.array([start[0] + u * 0.25, end[1]])
    control = start + np.array([(end[0] - start[0]) * 0.6, (end[1] - start[1]) * 0.25])
    cv.line(_bezier(start, control, end), thickness, rgb, fade=0.4)


def _surgical(cv, s, rng, opts):
    """Three pleats that flatten into the side hems, stitched hems, a nose wire, ear loops."""
    a = 1 - _smooth(0.74, 0.93, np.abs(s.u))
    for base in (0.33, 0.52, 0.71):
        vk = 0.52 + (base - 0.52) * (1 + 0.3 * (1 - s.u**2))
        s.shade *= 1 - 0.34 * a * _gauss(s.v - vk, 0.014)  # the crease's shadow
        s.shade *= 1 + 0.11 * a * _gauss(s.v - vk + 0.032, 0.02)  # the fold's lit edge
        s.shade *= 1 - 0.05 * a * _smooth(vk - 0.16, vk, s.v) * (s.v < vk)
    hem = s.edge < 0.085
    s.shade *= np.where(hem, 0.95, 1.0)
    dash = 0.5 + 0.5 * np.clip(4 * np.sin(2 * np.pi * (s.x + s.y) / 0.09), -1, 1)
    s.shade *= 1 - 0.22 * _gauss(s.edge - 0.068, 0.008) * dash
    wire = (1 - _smooth(0.3, 0.45, np.abs(s.u))) * (s.v < 0.25)
    s.shade *= 1 + 0.14 * wire * _gauss(s.edge - 0.035, 0.016)
    s.shade *= 1 - 0.1 * wire * _gauss(s.edge - 0.07, 0.012)
    dark = opts.rgb.mean() < 90
    loop = _hex("#2a2a2d") if dark else _hex("#f2f2f0") * float(rng.uniform(0.94, 1.0))
    for side in (0, 1):
        _ear_loop(cv, side, 0.06, 0.93, 0.045, loop)
    s.parts.append("ear loops")


def _n95(cv, s, rng, opts):
    """A moulded cup: dome shading, a welded rim, a nose clip, head straps, sometimes a valve."""
    r2 = s.u**2 + 0.8 * (2 * s.v - 1) ** 2
    s.shade *= 1.07 - 0.22 * np.clip(r2, 0, 1.6) ** 1.3
    s.shade *= 1 - 0.12 * (s.edge < 0.07) + 0.1 * _gauss(s.edge - 0.03, 0.012)
    s.shade *= 1 - 0.15 * _gauss(s.edge - 0.075, 0.01)
    strap = _hex(STRAP_COLOURS[int(rng.integers(len(STRAP_COLOURS)))])
    valve = rng.random() < 0.35
    valve_colour = _hex(("#f1f1ef", "#9aa0a6", "#e58a3c", "#3e6fb0")[int(rng.integers(4))])
    g = cv.g
    for side in (0, 1):
        _strap(cv, side, 0.18, -0.35, 0.055, strap)
        _strap(cv, side, 0.82, 0.3, 0.055, strap)
    clip = np.array([g.point(u, 0.045) for u in np.linspace(-0.32, 0.32, 9)])
    cv.line(clip, 0.07, _hex("#c9cdd2"))
    s.parts += ["head straps", "nose clip"]
    if valve:
        centre = g.point(0.0, 0.6)
        left, right = g.half_widths
        squash = np.clip(2 * min(left, right) / max(left + right, 1e-6) + 0.35, 0.5, 1.0)
        cv.ellipse(centre, (0.25 * squash, 0.23), valve_colour * 0.8)
        cv.ellipse(centre, (0.21 * squash, 0.19), valve_colour)
        for dy in (-0.08, 0.0, 0.08):
            cv.line([centre + (-0.12 * squash, dy), centre + (0.12 * squash, dy)], 0.025,
                    valve_colour * 0.55)
        s.parts.append("valve")


def _kn95(cv, s, rng, opts):
    """A flat fold: two panels lit differently, a centre seam, embossed sealed edges, loops."""
    light = 1.0 if rng.random() < 0.5 else -1.0
    s.shade *= 1 + 0.08 * np.tanh(s.u / 0.06) * light
    s.shade *= 1 - 0.3 * _gauss(s.u, 0.02) * (s.v > 0.02)
    s.shade *= 1 - 0.15 * np.abs(s.u) ** 3
    band = _smooth(0.11, 0.08, s.edge)
    emboss = (np.sin(2 * np.pi * s.x / 0.06) * np.sin(2 * np.pi * s.y / 0.06)) > 0.35
    s.shade *= 1 - band * (0.05 + 0.1 * emboss)
    s.shade *= 1 - 0.12 * _gauss(s.edge - 0.11, 0.01)
    loop = _hex("#2a2a2d") if opts.rgb.mean() < 90 or rng.random() < 0.2 else _hex("#f2f2f0")
    for side in (0, 1):
        _ear_loop(cv, side, 0.1, 0.8, 0.04, loop)
    s.parts.append("ear loops")


def _cloth(cv, s, rng, opts):
    """Soft fabric: wrinkles, weave and grain, stitched hems, often a centre seam, loops."""
    phase = float(rng.uniform(0, 2 * np.pi))
    s.shade *= 1 + 0.05 * np.sin(2 * np.pi * (2.2 * s.v + 0.35 * s.u**2) + phase)
    s.shade *= 1 - 0.22 * np.abs(s.u) ** 2.5
    s.shade *= 1 - 0.1 * _smooth(0.85, 1.0, s.v)
    if rng.random() < 0.6:
        s.shade *= 1 - 0.28 * _gauss(s.u, 0.018) + 0.08 * _gauss(s.u - 0.035, 0.02)
        s.parts.append("centre seam")
    dash = 0.5 + 0.5 * np.clip(4 * np.sin(2 * np.pi * (s.x - s.y) / 0.07), -1, 1)
    s.shade *= 1 - 0.2 * _gauss(s.edge - 0.055, 0.008) * dash
    weave = np.sin(2 * np.pi * s.x / 0.045) * np.sin(2 * np.pi * s.y / 0.045)
    s.shade *= 1 + 0.03 * weave
    s.grain = 0.05
    loop = opts.rgb * 0.8 if rng.random() < 0.6 else _hex("#2a2a2d")
    for side in (0, 1):
        _ear_loop(cv, side, 0.08, 0.9, 0.06, loop)
    s.parts.append("ear loops")


def _cartridge(cv: _Canvas, centre, radius: float, squash: float, outward: float, colour):
    """A round filter cartridge seen from the front: a short cylinder whose axis points
    outwards-forwards, so its face is an ellipse and its side shows as a darker band."""
    depth = np.array([outward * 0.08, 0.0])
    back, front = centre - depth, centre + depth
    rx = radius * squash
    cv.ellipse(back, (rx, radius), colour * 0.45)
    cv.polygon([back + (0, -radius), front + (0, -radius), front + (0, radius),
                back + (0, radius)], colour * 0.5)
    cv.ellipse(front, (rx, radius), colour * 0.7)
    cv.ellipse(front, (rx * 0.86, radius * 0.86), colour)
    cv.ellipse(front + (-outward * 0.02 * squash, -0.04), (rx * 0.55, radius * 0.55),
               np.minimum(colour * 1.15 + 10, 255))
    cv.ellipse(front, (rx * 0.18, radius * 0.18), colour * 0.6)


def _gas(cv, s, rng, opts):
    """A half-face respirator: glossy rubber, a face seal, two cartridges, a valve, straps."""
    g = cv.g
    s.shade *= 1 - 0.32 * np.abs(s.u) ** 2
    lit = float(rng.uniform(-0.25, 0.05))
    s.shade *= 1 + 0.4 * _gauss(s.u - lit, 0.12) * _gauss(s.v - 0.28, 0.22)
    s.shade *= 1 + 0.15 * _gauss(s.u + 0.5, 0.15) * _gauss(s.v - 0.55, 0.2)
    s.shade *= 1 - 0.25 * (s.edge < 0.09) + 0.15 * _gauss(s.edge - 0.095, 0.014)
    filt = _hex(FILTER_COLOURS[int(rng.integers(len(FILTER_COLOURS)))])
    strap = _hex(("#2c2d30", "#55585c", "#2f3a4a")[int(rng.integers(3))])
    for side in (0, 1):
        _strap(cv, side, 0.12, -0.4, 0.075, strap)
        _strap(cv, side, 0.85, 0.3, 0.075, strap)
    left, right = g.half_widths
    mean_half = (left + right) / 2
    # The far cartridge first, so the near one overlaps it on a turned head.
    for side in (0, 1) if left < right else (1, 0):
        u = -1.0 if side == 0 else 1.0
        squash = float(np.clip((left if side == 0 else right) / mean_half, 0.3, 1.1)) * 0.72
        centre = g.point(u * 0.84, 0.6)
        _cartridge(cv, centre, 0.3, squash, u, filt)
    # The exhalation valve: a round cover with slots, low in front of the mouth.
    centre = g.point(0.0, 0.8)
    squash = float(np.clip(min(left, right) / mean_half + 0.3, 0.5, 1.0))
    cover = np.minimum(opts.rgb * 0.75 + 18, 255)
    cv.ellipse(centre, (0.2 * squash, 0.17), cover * 0.7)
    cv.ellipse(centre + (0, -0.01), (0.17 * squash, 0.14), cover)
    for dy in (-0.06, -0.02, 0.02, 0.06):
        half = 0.11 * squash * np.sqrt(max(1 - (dy / 0.14) ** 2, 0.1))
        cv.line([centre + (-half, dy), centre + (half, dy)], 0.018, cover * 0.5)
    s.parts += ["filters", "exhalation valve", "head straps"]


_DETAILS = {"surgical": _surgical, "N95": _n95, "KN95": _kn95, "cloth": _cloth, "gas": _gas}


@dataclass
class _Surface:
    x: np.ndarray
    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    edge: np.ndarray  # distance to the outline, face units (0 outside)
    shade: np.ndarray
    grain: float = 0.0
    parts: list[str] = field(default_factory=list)


def render_layers(
    geometry: MaskGeometry,
    style: str,
    rng: np.random.Generator,
    options: MaskOptions,
    image_shape: tuple[int, ...],
    region: tuple[int, int, int, int] | None = None,
) -> Layers:
    """Draw the mask of `style` on `geometry` (see the module docstring).

    `region` (x0, y0, width, height) fixes the drawing region; by default it is the mask's
    bounding box (with its straps and loops) clipped to an image of `image_shape`.
    """
    frame = geometry.frame
    if region is None:
        extent = np.vstack([geometry.outline, geometry.ears + [[-0.35, -0.6], [0.35, -0.6]],
                            geometry.ears + [[-0.35, 0.8], [0.35, 0.8]]])
        pad = int(np.ceil(0.05 * frame.unit)) + 2
        region = _region(frame.to_image(extent), image_shape, pad)
    x0, y0, width, height = region
    cv = _Canvas(geometry, x0, y0, width, height)

    alpha = cv.polygon_alpha(geometry.outline)
    soft = max(0.35, 0.012 * frame.unit)
    alpha = cv2.GaussianBlur(alpha, (0, 0), soft)
    inside = (alpha > 0.5).astype(np.uint8)
    edge = cv2.distanceTransform(inside, cv2.DIST_L2, 3).astype(np.float32) / frame.unit
    x, y = frame.pixel_coordinates(x0, y0, width, height)
    u, v = geometry.uv(x, y)
    u, v = u.astype(np.float32), v.astype(np.float32)
    s = _Surface(x, y, u, v, edge, np.ones_like(u))
    # Shared shading: the surface turns away at the sides and under the chin.
    s.shade *= 1 - 0.1 * _smooth(0.82, 1.02, v) - 0.05 * _smooth(0.12, 0.0, v)
    s.shade *= 1 + 0.06 * _gauss(u, 0.22) * _gauss(v - 0.15, 0.2)  # over the nose
    _DETAILS[style](cv, s, rng, options)
    return Layers(
        x0, y0, alpha.astype(np.float32), u, v, np.clip(s.shade, 0.2, 1.6).astype(np.float32),
        cv.over_rgb, cv.over_alpha, s.grain, s.parts, frame.unit,
    )


def fmr_layers(
    landmarks: np.ndarray,
    options: MaskOptions,
    rng: np.random.Generator,
    image_shape: tuple[int, ...],
    region: tuple[int, int, int, int] | None = None,
    glasses: tuple[float, float] | None = None,
) -> Layers:
    """Geometry and layers of one "fmr" mask on 68 landmarks (`glasses`: see mask_geometry)."""
    geometry = mask_geometry(landmarks, OUTLINES[options.style], options.coverage, glasses)
    return render_layers(geometry, options.style, rng, options, image_shape, region)


# -- compositing --------------------------------------------------------------------------------


def key_colours(image: np.ndarray, key_points, skin: np.ndarray, radius: int = 2) -> np.ndarray:
    """The colours a mask must differ from: the skin's median and every pixel within `radius`
    of the key points (nose tip, mouth corners), (R, 3) float32."""
    colours = [np.asarray(skin, np.float32).reshape(1, 3)]
    height, width = image.shape[:2]
    for px, py in np.asarray(key_points if key_points is not None else [], dtype=np.float64):
        cx, cy = int(round(px)), int(round(py))
        if 0 <= cx < width and 0 <= cy < height:
            rows = slice(max(cy - radius, 0), cy + radius + 1)
            patch = image[rows, max(cx - radius, 0) : cx + radius + 1]
            colours.append(patch.reshape(-1, 3).astype(np.float32))
    return np.concatenate(colours)


def ensure_visible(lit: np.ndarray, total: np.ndarray, roi: np.ndarray, points) -> np.ndarray:
    """Make the mask lighter or darker, as little as needed, so that at every key point (local
    pixels, (K, 2)) the result differs from the photo `roi` by at least MIN_CONTRAST / 2 (mean
    absolute difference summed over channels, 3x3 pixels).

    `lit` (h, w, 3) is the mask's colour premultiplied by its coverage `total` (h, w, 1). The
    colour guard already keeps the body colour away from the skin; this catches the rest (a
    part such as a filter, or a dark pattern stripe, landing on a dark mouth corner).
    """
    h, w = total.shape[:2]
    windows = []
    for px, py in np.asarray(points, dtype=np.float64).reshape(-1, 2):
        cx, cy = int(round(px)), int(round(py))
        if 1 <= cx < w - 1 and 1 <= cy < h - 1 and total[cy, cx, 0] > 0.5:
            windows.append((slice(cy - 1, cy + 2), slice(cx - 1, cx + 2)))
    if not windows:
        return lit

    def weakest(k: float, lighter: bool) -> float:
        result = np.inf
        for r, c in windows:
            colour, cover = lit[r, c], total[r, c]
            colour = colour + (255 * cover - colour) * k if lighter else colour * (1 - k)
            change = colour - roi[r, c] * cover  # blended minus photo
            result = min(result, float(np.abs(change).sum(-1).mean()))
        return result

    if weakest(0.0, False) >= MIN_CONTRAST / 2:
        return lit
    for k in np.linspace(0.1, 0.9, 9):
        for lighter in (False, True):
            if weakest(k, lighter) >= MIN_CONTRAST / 2:
                return lit + (255 * total - lit) * k if lighter else lit * (1 - k)
    return lit + (255 * total - lit) * 0.9


def body_albedo(options: MaskOptions, u, v, base, secondary, xp=np):
    """Colour of the mask fabric before lighting, (h, w, 3) from the pattern at (u, v)."""
    weight = pattern_weight_map(options.pattern, u * U_CM, v * V_CM, options.pattern_scale,
                                options.pattern_angle, xp)
    weight = weight * options.pattern_weight
    return base * (1 - weight[..., None]) + secondary * weight[..., None]


def composite(
    image: np.ndarray,
    layers: Layers,
    options: MaskOptions,
    rng: np.random.Generator,
    key_points: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """Blend `layers` into a copy of `image` (RGB uint8), lit like the photo.

    `key_points` (K, 2) image pixels that the mask must visibly change (nose tip, mouth
    corners): their colours feed the contrast guard. Returns (image, extra info).
    """
    out = image.copy()
    h, w = layers.shape
    x0, y0 = layers.x0, layers.y0
    roi = image[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
    lum = luminance(roi)
    body = layers.alpha > 0.5
    if not body.any():
        raise FaceError("the mask would fall outside the image (is the face mostly cut off?)")
    skin_pixels = roi[body][::5]

    # White point: a white mask is no brighter than the photo's own highlights.
    step = max(1, int(max(image.shape[:2]) // 96))
    small = image[::step, ::step].astype(np.float32)
    white = float(np.percentile(luminance(small), 99.5))
    gain = shading.photo_gain(white, small.reshape(-1, 3).mean(0) + 1.0)
    # The face's own light and shadow, blurred past its features (on a small copy: cheap).
    factor = max(1, int(layers.unit * 0.15))
    small_lum = cv2.resize(lum, (max(1, w // factor), max(1, h // factor)),
                           interpolation=cv2.INTER_AREA)
    small_lum = cv2.GaussianBlur(small_lum, (0, 0), max(0.8, 0.45 * layers.unit / factor))
    blurred = cv2.resize(small_lum, (w, h), interpolation=cv2.INTER_LINEAR)
    face_level = float(blurred[body].mean()) + 1.0
    light = shading.face_light(blurred, face_level)

    references = key_colours(image, key_points, np.median(skin_pixels, axis=0))
    base = guard_contrast(options.rgb, references, gain)
    secondary = guard_contrast(options.secondary, references, gain)
    guarded = bool(np.abs(base - options.rgb).max() > 0.5)

    shade = layers.shade
    if layers.grain > 0:
        shade = shade * (1 + layers.grain * rng.standard_normal(shade.shape, np.float32))
    if options.pattern == "plain" or options.pattern_weight == 0:
        albedo = base.astype(np.float32)
    else:
        albedo = body_albedo(options, layers.u, layers.v, base, secondary)
    lit, total = shading.lit_layers(albedo, shade, layers.alpha, layers.over_rgb,
                                    layers.over_alpha, light, gain)
    # Grain like the photo's own (median absolute deviation from a 3x3 blur).
    sample = lum[::2, ::2]
    noise = 1.4826 * float(np.median(np.abs(sample - cv2.blur(sample, (3, 3))))) * 1.3
    if noise > 0.3:
        lit += (rng.standard_normal((h, w), np.float32) * min(noise, 8.0))[..., None] * total
    lit = shading.clip_lit(lit, total)
    if key_points is not None:
        lit = ensure_visible(lit, total, roi, np.asarray(key_points) - (x0, y0))
    blended = shading.blend(roi, lit, total)
    out[y0 : y0 + h, x0 : x0 + w] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return out, {"contrast_guard": guarded, "parts": ", ".join(layers.parts)}
