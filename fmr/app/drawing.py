"""Pictures for the pages: face boxes on photos, thumbnails, face close-ups."""

from __future__ import annotations

import cv2
import numpy as np

from fmr.faces.detect import Face

SELECTED_COLOUR = (46, 160, 67)  # RGB green: the face being compared
OTHER_COLOUR = (250, 250, 250)  # RGB near-white: other faces in the photo
DISPLAY_MAX_SIDE = 900  # photos are shown at most this big (sending 12 MP to a browser is slow)


def thumbnail(image: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """`image` scaled down (never up) so its longer side is at most `max_side` pixels."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def width_for_height(image: np.ndarray, height: int) -> int:
    """The display width that shows `image` `height` pixels tall (for st.image(width=...))."""
    return max(1, round(image.shape[1] * height / image.shape[0]))


def draw_faces(
    image: np.ndarray,
    faces: list[Face],
    selected: int | None = 0,
    max_side: int = DISPLAY_MAX_SIDE,
) -> np.ndarray:
    """A display copy of `image` (at most `max_side` pixels) with every face box drawn, the
    `selected` one in green, the others in white, numbered from 1 when there are several."""
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    canvas = thumbnail(image, max_side).copy()  # never draw on the caller's (cached) image
    thickness = max(2, round(max(canvas.shape[:2]) / 250))
    for index, face in enumerate(faces):
        colour = SELECTED_COLOUR if index == selected else OTHER_COLOUR
        x1, y1, x2, y2 = (int(round(v * scale)) for v in face.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        if len(faces) > 1:
            label = str(index + 1)
            font_scale = max(0.6, (x2 - x1) / 120)
            (w, h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
            top = max(0, y1 - h - base - 2 * thickness)
            cv2.rectangle(canvas, (x1, top), (x1 + w + 2 * thickness, y1), colour, -1)
            cv2.putText(
                canvas,
                label,
                (x1 + thickness, y1 - base - thickness),
                cv2.FONT_HERSHEY_SIMPLEX,
                font_scale,
                (0, 0, 0),
                thickness,
                cv2.LINE_AA,
            )
    return canvas


def face_closeup(
    image: np.ndarray, face: Face, size: int = 224, margin: float = 0.45
) -> np.ndarray:
    """A square close-up of `face` (its box grown by `margin` on every side), `size` pixels.

    Pixels outside the photo are filled with the photo's edge colours (replicated).
    """
    x1, y1, x2, y2 = (float(v) for v in face.box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(x2 - x1, y2 - y1) * (0.5 + margin)
    scale = size / (2 * half)
    matrix = np.array([[scale, 0, size / 2 - cx * scale], [0, scale, size / 2 - cy * scale]])
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE
    )


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 image (for download buttons)."""
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB image
        raise ValueError("could not encode the image as PNG")
    return buffer.tobytes()
