"""Draw docs/img/masks.png: every mask style on six faces (four photos, two aligned crops),
first with the "fmr" renderer, then with the "warp" renderer.

    .venv/bin/python scripts/mask_contact_sheet.py [--out docs/img/masks.png] [--seed 0]

Faces come from the shared data (photos/ and training-side LFW people only); photos are shown
cropped around the masked face.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fmr.faces import align_face, detect_faces, landmarks68, load_image  # noqa: E402
from fmr.masks import MASK_STYLES, RENDERERS, apply_mask  # noqa: E402
from fmr.settings import data_dir  # noqa: E402

PHOTOS = (
    "photos/obama/obama.jpg",
    "photos/rose_leslie/img2.jpg",
    "photos/kit_harington/john1.jpeg",
    "lfw/images/Denzel_Washington/Denzel_Washington_0001.jpg",
)
CROPS = (
    "lfw/images/Lucy_Liu/Lucy_Liu_0001.jpg",
    "lfw/images/Hu_Jintao/Hu_Jintao_0001.jpg",
)
TILE = 144
LABEL = 96


def _face_tile(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + 0.08 * (y2 - y1)
    half = 0.8 * max(x2 - x1, y2 - y1)
    h, w = image.shape[:2]
    pad = int(np.ceil(half)) + 1
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    x0, y0 = int(round(cx - half)) + pad, int(round(cy - half)) + pad
    side = int(round(2 * half))
    tile = padded[y0 : y0 + side, x0 : x0 + side]
    return cv2.resize(tile, (TILE, TILE), interpolation=cv2.INTER_AREA)


def _label(text: str, height: int) -> np.ndarray:
    panel = np.full((height, LABEL, 3), 250, np.uint8)
    for i, line in enumerate(text.split("\n")):
        cv2.putText(panel, line, (8, height // 2 - 6 + 20 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (30, 30, 30), 1, cv2.LINE_AA)
    return panel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "masks.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = data_dir()

    faces = []  # (image, box, landmarks) for photos; (crop, None, "template") for crops
    for name in PHOTOS:
        image = load_image(root / name)
        face = detect_faces(image)[0]
        faces.append((image, face.box, landmarks68(image, face.box)))
    for name in CROPS:
        image = load_image(root / name)
        crop = align_face(image, detect_faces(image)[0].landmarks)
        faces.append((crop, None, "template"))

    rows = []
    for renderer in RENDERERS:
        for s, style in enumerate(MASK_STYLES):
            tiles = [_label(f"{style}\n({renderer})", TILE)]
            for f, (image, box, points) in enumerate(faces):
                seed = args.seed * 1000 + s * 10 + f
                masked, _ = apply_mask(image, points, style, seed, renderer=renderer)
                if box is None:
                    tile = cv2.resize(masked, (TILE, TILE), interpolation=cv2.INTER_CUBIC)
                else:
                    tile = _face_tile(masked, box)
                tiles.append(tile)
            rows.append(np.hstack(tiles))
        rows.append(np.full((6, rows[-1].shape[1], 3), 255, np.uint8))
    header = np.full((26, rows[0].shape[1], 3), 255, np.uint8)
    cv2.putText(header, "photos", (LABEL + 2 * TILE - 24, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (30, 30, 30), 1, cv2.LINE_AA)
    cv2.putText(header, "aligned 112x112 crops", (LABEL + 4 * TILE + 50, 18),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (30, 30, 30), 1, cv2.LINE_AA)
    sheet = np.vstack([header, *rows[:-1]])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # An adaptive palette keeps the file small; masks and faces survive it well.
    palette = Image.fromarray(sheet).quantize(
        colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG
    )
    palette.save(args.out, optimize=True)
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
