"""The "warp" renderer: MaskTheFace's method, with masks drawn by our own code.

A flat, frontal picture of the mask is drawn in a canonical frame (x from -1 at the left cheek
to 1 at the right, y from 0 at the nose to 1 under the chin), then placed on the face by the
homography that takes six canonical anchors (nose, both upper cheeks, both lower jaw corners,
chin) to six of dlib's 68 landmarks. Unlike the "fmr" renderer it knows nothing of the face's
surface: no shading along the face, no outline fitted to the jaw, one global brightness match.
It exists so evaluation can use masks drawn differently from the ones a model trained on.
"""

from __future__ import annotations

import cv2
import numpy as np

from fmr.errors import FaceError
from fmr.masks.render import U_CM, V_CM, ensure_visible, key_colours
from fmr.masks.shading import guard_contrast, luminance
from fmr.masks.styles import MaskOptions, parse_colour
from fmr.masks.texture import pattern_weight_map

# Canonical anchors (x, y) and the dlib landmarks they go to; the nose anchor moves with coverage.
ANCHORS = np.array(
    [[0.0, 0.0], [-1.0, 0.2], [-0.8, 0.8], [0.0, 1.0], [0.8, 0.8], [1.0, 0.2]], dtype=np.float64
)
# The canonical canvas spans x in [-CANVAS_X, CANVAS_X] and y in [-CANVAS_TOP, 1 + CANVAS_BOTTOM].
CANVAS_X, CANVAS_TOP, CANVAS_BOTTOM = 1.45, 0.35, 0.3


def _targets(landmarks: np.ndarray, coverage: float) -> np.ndarray:
    p = np.asarray(landmarks, dtype=np.float64)
    t = 0.2 + 0.65 * float(np.clip(coverage, 0.0, 1.0))
    nose = p[30] + t * (p[27] - p[30])
    chin = p[8] + (p[8] - p[57]) * 0.2
    return np.stack([
        nose, (p[1] + p[2]) / 2, p[4], chin, p[12], (p[15] + p[14]) / 2,
    ])


def _outline(style: str) -> np.ndarray:
    """The flat mask's outline in canonical coordinates."""
    t = np.linspace(0, 1, 24)
    if style == "surgical":  # a pleated rectangle, bowed at the nose wire
        top = np.stack([np.linspace(-1.02, 1.02, 24), 0.16 - 0.16 * np.cos(np.linspace(-1, 1, 24)
                       * np.pi / 2) ** 6], axis=1)
        bottom = np.stack([np.linspace(1.0, -1.0, 24), 0.9 + 0.12 * np.cos(np.linspace(
            -1, 1, 24) * np.pi / 2) ** 2], axis=1)
        return np.vstack([top, [[1.02, 0.55]], bottom, [[-1.02, 0.55]]])
    if style == "N95":  # a cup: an egg-shaped ellipse
        a = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        return np.stack([0.9 * np.sin(a), 0.5 - 0.52 * np.cos(a) * (1 + 0.08 * np.cos(a))], axis=1)
    if style == "KN95":  # two panels meeting in a pointed seam
        return np.array([[0.0, -0.03], [0.55, 0.14], [0.98, 0.26], [0.9, 0.62], [0.55, 0.9],
                         [0.0, 1.04], [-0.55, 0.9], [-0.9, 0.62], [-0.98, 0.26], [-0.55, 0.14]])
    if style == "cloth":
        a = np.linspace(0, np.pi, 24)
        bottom = np.stack([np.cos(a) * 1.0, 0.5 + 0.52 * np.sin(a)], axis=1)
        top = np.stack([np.linspace(-1.0, 1.0, 24), 0.22 - 0.2 * (1 - np.abs(
            np.linspace(-1, 1, 24))) ** 1.5], axis=1)
        return np.vstack([top, bottom])
    if style == "gas":  # a narrow facepiece, wider at the mouth
        y = 0.05 + 0.95 * t
        half = 0.25 + 0.55 * np.sin(np.clip(t * 1.25, 0, 1) * np.pi / 2) - 0.25 * t**4
        return np.vstack([np.stack([half, y], 1), np.stack([-half[::-1], y[::-1]], 1)])
    raise ValueError(style)


class _FlatCanvas:
    """An RGBA drawing of the mask in canonical coordinates, `scale` pixels per unit."""

    def __init__(self, scale: float):
        self.scale = scale
        self.w = int(np.ceil(2 * CANVAS_X * scale))
        self.h = int(np.ceil((1 + CANVAS_TOP + CANVAS_BOTTOM) * scale))
        self.rgb = np.zeros((self.h, self.w, 3), np.float32)
        self.alpha = np.zeros((self.h, self.w), np.float32)

    def px(self, points) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return np.stack([(p[:, 0] + CANVAS_X) * self.scale, (p[:, 1] + CANVAS_TOP) * self.scale], 1)

    def _fixed(self, points) -> np.ndarray:
        return np.round(self.px(points) * 16).astype(np.int32)

    def mask(self, draw) -> np.ndarray:
        canvas = np.zeros((self.h, self.w), np.uint8)
        draw(canvas)
        return canvas.astype(np.float32) / 255.0

    def paint(self, alpha: np.ndarray, rgb) -> None:
        rgb = np.asarray(rgb, np.float32)
        if rgb.ndim == 1:
            rgb = rgb[None, None, :]
        self.rgb += (rgb - self.rgb) * alpha[..., None]
        self.alpha += alpha * (1 - self.alpha)

    def fill(self, points, rgb) -> np.ndarray:
        alpha = self.mask(lambda c: cv2.fillPoly(c, [self._fixed(points)], 255, cv2.LINE_AA, 4))
        self.paint(alpha, rgb)
        return alpha

    def stroke(self, points, width: float, rgb, closed: bool = False) -> None:
        thickness = max(1, int(round(width * self.scale)))
        alpha = self.mask(lambda c: cv2.polylines(c, [self._fixed(points)], closed, 255, thickness,
                                                  cv2.LINE_AA, 4))
        self.paint(alpha, rgb)

    def circle(self, centre, radius: float, rgb) -> None:
        a = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        ring = np.stack([centre[0] + radius * np.cos(a), centre[1] + radius * np.sin(a)], 1)
        self.fill(ring, rgb)

    def coordinates(self):
        xs = np.arange(self.w, dtype=np.float32) / self.scale - CANVAS_X
        ys = np.arange(self.h, dtype=np.float32) / self.scale - CANVAS_TOP
        return np.meshgrid(xs, ys)


def draw_flat_mask(options: MaskOptions, rng: np.random.Generator, scale: float,
                   base: np.ndarray, secondary: np.ndarray) -> tuple[_FlatCanvas, list[str]]:
    """The flat frontal mask picture of `options.style` in `base` / `secondary` colours."""
    style = options.style
    canvas = _FlatCanvas(scale)
    outline = _outline(style)
    x, y = canvas.coordinates()
    weight = pattern_weight_map(options.pattern, x * U_CM, y * V_CM, options.pattern_scale,
                                options.pattern_angle, np) * options.pattern_weight
    fabric = base * (1 - weight[..., None]) + secondary * weight[..., None]
    # A flat studio look: light from above, a little darker towards the edges.
    fabric *= (1.04 - 0.1 * np.clip(y, 0, 1) - 0.08 * np.abs(x) ** 2)[..., None]
    parts: list[str] = []
    white, dark = parse_colour("#f0f0ee")[1], parse_colour("#2b2b2e")[1]
    loop = dark if base.mean() < 90 else white

    if style in ("surgical", "KN95", "cloth"):  # ear loops first, under the body
        for sx in (-1, 1):
            a = np.linspace(-np.pi / 2, np.pi / 2, 20)
            arc = np.stack([sx * (1.0 + 0.32 * np.cos(a)), 0.5 + 0.4 * np.sin(a)], 1)
            canvas.stroke(arc, 0.045, loop if style != "cloth" else base * 0.8)
        parts.append("ear loops")
    if style in ("N95", "gas"):
        strap = parse_colour(("#e9c84c", "#4d7fc2", "#2c2d30")[int(rng.integers(3))])[1]
        for sx in (-1, 1):
            canvas.stroke([[sx * 0.8, 0.25], [sx * 1.4, 0.0]], 0.06, strap)
            canvas.stroke([[sx * 0.8, 0.8], [sx * 1.4, 0.95]], 0.06, strap)
        parts.append("head straps")

    body = canvas.mask(lambda c: cv2.fillPoly(c, [canvas._fixed(outline)], 255, cv2.LINE_AA, 4))
    canvas.paint(body, fabric)
    canvas.stroke(outline, 0.025, base * 0.8, closed=True)
    if style == "surgical":
        for k, yk in enumerate((0.35, 0.52, 0.69)):
            xs = np.linspace(-0.9, 0.9, 20)
            line = np.stack([xs, yk + 0.03 * (k - 1) * (1 - xs**2)], 1)
            canvas.stroke(line, 0.02, base * 0.72)
            canvas.stroke(line + [0, -0.025], 0.015, np.minimum(base * 1.1 + 8, 255))
        canvas.stroke([[-0.3, 0.05], [0.3, 0.05]], 0.03, np.minimum(base * 1.12 + 10, 255))
        parts.append("nose wire")
    elif style == "KN95":
        canvas.stroke([[0.0, 0.0], [0.0, 1.0]], 0.02, base * 0.7)
    elif style == "N95":
        a = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        canvas.stroke(np.stack([0.8 * np.sin(a), 0.5 - 0.46 * np.cos(a)], 1), 0.02, base * 0.85,
                      closed=True)
        canvas.stroke([[-0.25, 0.07], [0.25, 0.07]], 0.05, parse_colour("#c9cdd2")[1])
        parts.append("nose clip")
        if rng.random() < 0.35:
            canvas.circle((0.0, 0.6), 0.2, parse_colour("#9aa0a6")[1])
            canvas.circle((0.0, 0.6), 0.15, parse_colour("#c4c8cc")[1])
            parts.append("valve")
    elif style == "cloth":
        canvas.stroke([[0.0, 0.03], [0.0, 1.0]], 0.015, base * 0.75)
    elif style == "gas":
        filt = parse_colour(("#c8467a", "#7151a0", "#6e7449", "#d6b84c")[int(rng.integers(4))])[1]
        for sx in (-1, 1):
            canvas.circle((sx * 0.72, 0.64), 0.25, filt * 0.55)
            canvas.circle((sx * 0.74, 0.62), 0.21, filt)
            canvas.circle((sx * 0.74, 0.62), 0.08, filt * 0.7)
        canvas.circle((0.0, 0.8), 0.15, base * 0.6 + 10)
        parts += ["filters", "exhalation valve"]
    return canvas, parts


def warp_mask(
    image: np.ndarray,
    landmarks: np.ndarray,
    options: MaskOptions,
    rng: np.random.Generator,
    key_points: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """Place the flat mask of `options` on the face with these 68 landmarks (image pixels)."""
    from fmr.masks.geometry import check_landmarks, face_frame

    points = check_landmarks(landmarks)
    unit = face_frame(points).unit  # raises FaceError for faces too small to mask
    targets = _targets(points, options.coverage)
    height, width = image.shape[:2]

    # Brightness and contrast are matched once, for the whole mask (as MaskTheFace does).
    face_box = cv2.boundingRect(np.round(points).astype(np.int32))
    x, y, w, h = face_box
    face = image[max(y, 0) : max(y + h, 1), max(x, 0) : max(x + w, 1)].astype(np.float32)
    if face.size == 0:
        raise FaceError("the mask would fall outside the image (is the face mostly cut off?)")
    gain = float(np.clip((luminance(face).mean() / 150.0) ** 0.5, 0.45, 1.1))
    references = key_colours(image, key_points, np.median(face.reshape(-1, 3), axis=0))
    flat_gain = np.full(3, gain, np.float32)
    base = guard_contrast(options.rgb, references, flat_gain)
    secondary = guard_contrast(options.secondary, references, flat_gain)

    scale = float(np.clip(1.3 * unit, 24, 320))
    canvas, parts = draw_flat_mask(options, rng, scale, base, secondary)
    homography, _ = cv2.findHomography(canvas.px(ANCHORS), targets, 0)
    if homography is None or not np.isfinite(homography).all():
        raise FaceError("the face's landmarks are degenerate; cannot place a mask")
    corners = cv2.perspectiveTransform(
        np.array([[[0, 0]], [[canvas.w, 0]], [[canvas.w, canvas.h]], [[0, canvas.h]]],
                 np.float64), homography).reshape(-1, 2)
    x0 = max(int(np.floor(corners[:, 0].min())) - 1, 0)
    y0 = max(int(np.floor(corners[:, 1].min())) - 1, 0)
    x1 = min(int(np.ceil(corners[:, 0].max())) + 2, width)
    y1 = min(int(np.ceil(corners[:, 1].max())) + 2, height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise FaceError("the mask would fall outside the image (is the face mostly cut off?)")
    shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64) @ homography
    rgba = np.dstack([canvas.rgb * canvas.alpha[..., None], canvas.alpha])  # premultiplied
    warped = cv2.warpPerspective(rgba, shift, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    alpha = np.clip(warped[..., 3], 0, 1)
    colour = warped[..., :3] / np.maximum(alpha, 1e-4)[..., None] * gain
    roi = image[y0:y1, x0:x1].astype(np.float32)
    out = image.copy()
    colour = np.clip(colour, 0, 255)
    if key_points is not None:
        colour = ensure_visible(colour, roi, alpha, np.asarray(key_points) - (x0, y0))
    blended = roi * (1 - alpha[..., None]) + colour * alpha[..., None]
    out[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    guarded = bool(np.abs(base - options.rgb).max() > 0.5)
    return out, {"contrast_guard": guarded, "parts": ", ".join(parts)}
