"""Train the mask detector (does a face wear a mask?) and write checkpoints/mask_detector.*.

    python scripts/train_mask_detector.py                  # about 15 minutes on one core
    python scripts/train_mask_detector.py --steps 300      # a quick trial

Data: training-side photos of the shared split only (`fmr.data.splits.shared_split(...)
.train`: LFW people outside pair folds 6-10 and the CelebA subset's training identities);
the split's validation identities give the validation set that picks the checkpoint. Each
photo is detected and aligned (`fmr.faces`) to the 112x112 template; then

- positives: fmr's synthetic masks, every style (KN95 included) and both renderers ("fmr"
  and "warp"), with the style's colours or any named colour and every pattern: drawn on the
  photo with dlib's landmarks and the face found again by MTCNN (so the crop is aligned on
  the masked face, as a real masked photo is), drawn on the aligned crop
  (`fmr.masks.mask_aligned`), and drawn on the fly during training (`fmr.masks.tensor.
  mask_batch`); plus plain "generic" masks of any colour and texture drawn here, so the
  detector learns a cover over nose and mouth rather than fmr's drawings.
- negatives: the plain crops, and the same crops with ordinary things drawn on them that are
  not masks: a hand over the mouth or chin, a scarf or collar low on the chin, a microphone,
  sunglasses or glasses, a beard or stubble, a dark shadow on the lower face, a hat brim.

Every training sample is then degraded like a web photo: misalignment (rotation, scale,
shift), mirror, low resolution, blur, JPEG, colour, brightness, contrast, grey, noise.

The prepared crops are cached under --cache (default /tmp/fmr-maskdet/) so reruns skip the
detection. Training: AdamW, cosine schedule, binary cross-entropy; the validation loss every
--eval-every steps picks the step whose weights are kept; the validation accuracy at the
decision threshold 0.5 is recorded in the card. Writes --out (safetensors, fp16) and the JSON
card beside it.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

CACHE_VERSION = 1
SIZE = 112
# Low-resolution faces are simulated at these sides (pixels of the 64x64 input) and back up.
LOW_RESOLUTIONS = (8, 10, 12, 15, 19, 24, 30, 38, 48, 60)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# Photos and crops


def choose_photos(identities: dict[str, list[Path]], count: int, per_identity: int,
                  rng: np.random.Generator) -> list[Path]:
    """Up to `per_identity` random photos of each identity, then `count` of those at random."""
    pool = []
    for key in sorted(identities):
        photos = list(identities[key])
        order = rng.permutation(len(photos))[:per_identity]
        pool.extend(photos[i] for i in order)
    order = rng.permutation(len(pool))[:count]
    return [pool[i] for i in sorted(order)]


def random_mask_options(rng: np.random.Generator) -> dict:
    """Style, renderer and options for one synthetic mask: all styles and both renderers, the
    style's usual colours or (a third of the time) any named colour, any pattern sometimes."""
    from fmr.masks import COLOURS, MASK_STYLES, PATTERNS, RENDERERS

    options = {
        "style": str(MASK_STYLES[rng.integers(len(MASK_STYLES))]),
        "renderer": str(RENDERERS[rng.integers(len(RENDERERS))]),
    }
    if rng.random() < 0.35:
        options["colour"] = str(list(COLOURS)[rng.integers(len(COLOURS))])
    if rng.random() < 0.25 and options["style"] in ("surgical", "KN95", "cloth"):
        options["pattern"] = str(PATTERNS[rng.integers(len(PATTERNS))])
    if rng.random() < 0.3:  # worn low (nose out) to high (just under the eyes)
        low = float(rng.uniform(0.0, 0.7))
        options["coverage"] = (low, min(1.0, low + 0.3))
    return options


def prepare_photos(paths: list[Path], photo_masks: int, rng: np.random.Generator,
                   label: str) -> dict:
    """Detect and align every photo; draw a synthetic mask on the first `photo_masks` photos
    with a face and find the face again in the masked photo. Returns plain crops, masked crops
    and counts (faces not found, masked faces not found again)."""
    from fmr.faces import align_face, detect_faces, load_image
    from fmr.faces.policy import select_face
    from fmr.masks import mask_face
    from fmr.verify.pipeline import box_iou

    plain, masked = [], []
    no_face = redetect_missed = mask_failed = 0
    start = time.time()
    for index, path in enumerate(paths):
        if index and index % 250 == 0:
            log(f"  {label}: {index}/{len(paths)} photos ({time.time() - start:.0f} s)")
        try:
            image = load_image(path)
            face = select_face(detect_faces(image), image.shape, "largest", str(path))
        except Exception:
            no_face += 1
            continue
        plain.append(align_face(image, face.landmarks))
        if len(masked) >= photo_masks:
            continue
        options = random_mask_options(rng)
        style = options.pop("style")
        try:
            covered, _ = mask_face(image, face, style, rng, **options)
        except Exception:
            mask_failed += 1
            continue
        found = detect_faces(covered)
        best = max(found, key=lambda f: box_iou(f.box, face.box), default=None)
        if best is not None and box_iou(best.box, face.box) >= 0.3:
            masked.append(align_face(covered, best.landmarks))
        else:
            redetect_missed += 1
            masked.append(align_face(covered, face.landmarks))
    log(f"  {label}: {len(paths)} photos, {no_face} without a face, {len(masked)} masked on "
        f"the photo ({redetect_missed} not found again, {mask_failed} not maskable), "
        f"{time.time() - start:.0f} s")
    empty = np.zeros((0, SIZE, SIZE, 3), np.uint8)
    return {"plain": np.stack(plain) if plain else empty,
            "photo_masked": np.stack(masked) if masked else empty, "no_face": no_face,
            "redetect_missed": redetect_missed, "photo_masks": len(masked)}


def crop_masks(crops: np.ndarray, per_crop: int, rng: np.random.Generator) -> np.ndarray:
    """`per_crop` synthetic masks (`fmr.masks.mask_aligned`, random style, renderer, options)
    on each aligned crop."""
    from fmr.masks import mask_aligned

    out = []
    for crop in crops:
        for _ in range(per_crop):
            options = random_mask_options(rng)
            style = options.pop("style")
            try:
                out.append(mask_aligned(crop, style, rng, **options)[0])
            except Exception:
                continue
    return np.stack(out)


# ---------------------------------------------------------------------------------------------
# Things drawn on aligned crops (template coordinates: eyes at y 52, nose tip 72, mouth 92)


def _template():
    from fmr.masks.template import TEMPLATE_LANDMARKS68

    return TEMPLATE_LANDMARKS68


def _skin(crop: np.ndarray) -> np.ndarray:
    cheeks = np.concatenate([crop[62:80, 28:40].reshape(-1, 3), crop[62:80, 72:84].reshape(-1, 3)])
    return np.median(cheeks, axis=0).astype(np.float32)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:
        from fmr.masks import COLOURS, parse_colour

        return parse_colour(list(COLOURS.values())[rng.integers(len(COLOURS))])[1]
    return rng.uniform(0, 255, 3).astype(np.float32)


def _texture(rng: np.random.Generator, colour: np.ndarray) -> np.ndarray:
    """A (112, 112, 3) float fabric: plain with grain, stripes, checks, blotches or print."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    base = np.broadcast_to(colour, (SIZE, SIZE, 3)).astype(np.float32).copy()
    kind = rng.integers(5)
    second = _random_colour(rng)
    if kind == 1:  # stripes
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 14)
        wave = (np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) > 0)
        base[wave] = second
    elif kind == 2:  # checks
        period = rng.uniform(5, 14)
        wave = ((xx // period + yy // period) % 2).astype(bool)
        base[wave] = base[wave] * 0.5 + second * 0.5
    elif kind == 3:  # blotches (camouflage, tie-dye, prints)
        noise = cv2.GaussianBlur(rng.standard_normal((SIZE, SIZE)).astype(np.float32), (0, 0),
                                 rng.uniform(2, 6))
        weight = np.clip(noise / (noise.std() + 1e-6), 0, 1)[..., None]
        base = base * (1 - weight) + second * weight
    elif kind == 4:  # a printed motif: small discs or letters
        for _ in range(rng.integers(3, 12)):
            centre = (int(rng.integers(0, SIZE)), int(rng.integers(0, SIZE)))
            if rng.random() < 0.5:
                cv2.circle(base, centre, int(rng.integers(2, 8)), second.tolist(), -1, cv2.LINE_AA)
            else:
                cv2.putText(base, chr(int(rng.integers(65, 91))), centre,
                            cv2.FONT_HERSHEY_SIMPLEX, rng.uniform(0.3, 0.9), second.tolist(),
                            int(rng.integers(1, 3)), cv2.LINE_AA)
    grain = rng.standard_normal((SIZE, SIZE, 1)).astype(np.float32) * rng.uniform(0, 10)
    return base + grain


def _blend(crop: np.ndarray, colour_image: np.ndarray, alpha: np.ndarray,
           rng: np.random.Generator, shade: bool = True) -> np.ndarray:
    alpha = cv2.GaussianBlur(alpha.astype(np.float32), (0, 0), rng.uniform(0.4, 1.2))
    colour_image = np.asarray(colour_image, dtype=np.float32)
    if shade:  # light from one side, darker at the edges of the shape
        yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE - 0.5
        angle = rng.uniform(0, 2 * np.pi)
        light = 1 + rng.uniform(0, 0.35) * (xx * np.cos(angle) + yy * np.sin(angle))
        colour_image = colour_image * light[..., None]
        # The face's own brightness: a dark photo gets a dark object.
        colour_image = colour_image * np.clip(crop.mean() / 120.0, 0.5, 1.3)
    out = crop.astype(np.float32) * (1 - alpha[..., None]) + colour_image * alpha[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def draw_generic_mask(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plain cover over nose, mouth and chin: any colour, any texture, any top edge between
    the nose bridge and just above the nose tip, sides on the cheeks, ear loops sometimes."""
    t = _template()
    top = rng.uniform(56, 72)
    widen = rng.uniform(-2, 5)
    left = [(t[i, 0] - widen, t[i, 1]) for i in range(1, 9) if t[i, 1] >= top - 4]
    right = [(t[i, 0] + widen, t[i, 1]) for i in range(8, 16) if t[i, 1] >= top - 4]
    bottom_drop = rng.uniform(-4, 6)
    outline = [(t[1, 0] - widen, top + rng.uniform(2, 10))]
    outline += [(x, y + bottom_drop * (y > 100)) for x, y in left]
    outline += [(x, y + bottom_drop * (y > 100)) for x, y in right]
    outline += [(t[15, 0] + widen, top + rng.uniform(2, 10)), (56 + rng.uniform(-3, 3), top)]
    polygon = np.round(np.array(outline, np.float32) * 4).astype(np.int32)
    alpha = np.zeros((SIZE, SIZE), np.float32)
    cv2.fillPoly(alpha, [polygon], 1.0, cv2.LINE_AA, shift=2)
    colour = _random_colour(rng)
    skin = _skin(crop)
    if np.abs(colour - skin).sum() < 60:  # a mask the colour of the skin is not a visible mask
        colour = np.clip(255 - colour, 0, 255)
    fabric = _texture(rng, colour)
    if rng.random() < 0.35:  # pleats
        for y in np.linspace(top + 10, 105, int(rng.integers(2, 5))):
            cv2.line(fabric, (0, int(y)), (SIZE, int(y + rng.uniform(-3, 3))),
                     (colour * 0.75).tolist(), 1, cv2.LINE_AA)
    if rng.random() < 0.5:  # ear loops
        for side in (-1, 1):
            x0 = 56 + side * 40
            cv2.line(alpha, (int(x0), int(top + 6)), (int(56 + side * 60), int(top)), 1.0, 1,
                     cv2.LINE_AA)
    return _blend(crop, fabric, np.clip(alpha, 0, 1) * rng.uniform(0.9, 1.0), rng)


def draw_hand(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A hand in the face's own skin colour over the mouth, chin or cheek."""
    skin = _skin(crop) * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    alpha = np.zeros((SIZE, SIZE), np.float32)
    cx, cy = 56 + rng.normal(0, 14), rng.uniform(82, 116)
    axes = (int(rng.uniform(18, 30)), int(rng.uniform(13, 22)))
    tilt = rng.uniform(-50, 50)
    cv2.ellipse(alpha, (int(cx), int(cy)), axes, tilt, 0, 360, 1.0, -1, cv2.LINE_AA)
    direction = np.deg2rad(rng.uniform(-160, -20))
    fingers = int(rng.integers(1, 5))
    spread = np.deg2rad(rng.uniform(6, 14))
    length = rng.uniform(18, 36)
    gaps = np.zeros_like(alpha)
    for k in range(fingers):
        angle = direction + (k - (fingers - 1) / 2) * spread
        start = (cx + np.cos(angle) * axes[0] * 0.6, cy + np.sin(angle) * axes[1] * 0.6)
        end = (start[0] + np.cos(angle) * length, start[1] + np.sin(angle) * length)
        thick = int(rng.integers(8, 13))
        cv2.line(alpha, (int(start[0]), int(start[1])), (int(end[0]), int(end[1])), 1.0, thick,
                 cv2.LINE_AA)
        if k:
            cv2.line(gaps, (int(start[0]), int(start[1])), (int(end[0]), int(end[1])), 1.0, 1,
                     cv2.LINE_AA)
    colour = np.broadcast_to(skin, (SIZE, SIZE, 3)).astype(np.float32)
    colour = colour * (1 - 0.35 * cv2.GaussianBlur(gaps, (0, 0), 1.0)[..., None])
    colour = colour + rng.standard_normal((SIZE, SIZE, 1)).astype(np.float32) * 3
    return _blend(crop, colour, alpha, rng)


def draw_scarf_low(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A scarf, collar or turtleneck below the lower lip: chin and neck only."""
    top = rng.uniform(100, 114)
    alpha = np.zeros((SIZE, SIZE), np.float32)
    xs = np.arange(0, SIZE + 8, 8)
    wave = top + rng.uniform(-3, 3) + 6 * np.abs((xs - 56) / 56) ** 2 * rng.uniform(0, 1)
    points = np.array([(0, SIZE + 4), *zip(xs, wave, strict=True), (SIZE, SIZE + 4)], np.float32)
    cv2.fillPoly(alpha, [np.round(points * 4).astype(np.int32)], 1.0, cv2.LINE_AA, shift=2)
    return _blend(crop, _texture(rng, _random_colour(rng)), alpha, rng)


def draw_microphone(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A microphone near the mouth: a round mesh head and a handle."""
    alpha = np.zeros((SIZE, SIZE), np.float32)
    side = rng.choice([-1, 1])
    cx, cy = 56 + side * rng.uniform(0, 26), rng.uniform(90, 112)
    radius = int(rng.uniform(8, 17))
    cv2.circle(alpha, (int(cx), int(cy)), radius, 1.0, -1, cv2.LINE_AA)
    end = (int(cx + side * rng.uniform(0, 20)), SIZE + 10)
    cv2.line(alpha, (int(cx), int(cy)), end, 1.0, int(radius * 0.9), cv2.LINE_AA)
    grey = rng.uniform(20, 200)
    colour = np.full((SIZE, SIZE, 3), grey, np.float32)
    mesh = ((np.add.outer(np.arange(SIZE), np.arange(SIZE)) % 4) == 0)
    colour[mesh] *= 0.7
    return _blend(crop, colour, alpha, rng)


def draw_glasses(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sunglasses (dark lenses) or glasses (rims only)."""
    alpha = np.zeros((SIZE, SIZE), np.float32)
    axes = (int(rng.uniform(13, 18)), int(rng.uniform(9, 13)))
    y = int(52 + rng.uniform(-3, 3))
    dark = rng.random() < 0.6
    for x in (38, 74):
        cv2.ellipse(alpha, (x, y), axes, 0, 0, 360, 1.0, -1 if dark else 2, cv2.LINE_AA)
    cv2.line(alpha, (38 + axes[0], y), (74 - axes[0], y), 1.0, 2, cv2.LINE_AA)
    for x0, x1 in ((38 - axes[0], 0), (74 + axes[0], SIZE)):
        cv2.line(alpha, (x0, y), (x1, y - 2), 1.0, 2, cv2.LINE_AA)
    colour = np.full((SIZE, SIZE, 3), rng.uniform(5, 60), np.float32)
    colour = colour * rng.uniform(0.8, 1.2, 3).astype(np.float32)
    return _blend(crop, colour, alpha * (rng.uniform(0.8, 1.0) if dark else 1.0), rng, False)


def draw_beard(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A beard or stubble on the jaw and chin, the lips left visible."""
    t = _template()
    alpha = np.zeros((SIZE, SIZE), np.float32)
    jaw = t[2:15].copy()
    jaw[:, 1] += rng.uniform(0, 5)
    upper = np.array([(t[14, 0], 80), (56, 80 + rng.uniform(-4, 4)), (t[2, 0], 80)], np.float32)
    cv2.fillPoly(alpha, [np.round(np.vstack([jaw, upper]) * 4).astype(np.int32)], 1.0,
                 cv2.LINE_AA, shift=2)
    cv2.ellipse(alpha, (56, 93), (int(rng.uniform(11, 15)), int(rng.uniform(4, 7))), 0, 0, 360,
                0.0, -1, cv2.LINE_AA)
    strength = rng.uniform(0.6, 0.95) if rng.random() < 0.6 else rng.uniform(0.2, 0.45)
    hair = rng.uniform(10, 110) * rng.uniform(0.8, 1.1, 3).astype(np.float32)
    noise = rng.random((SIZE, SIZE)).astype(np.float32)
    alpha = alpha * strength * (0.6 + 0.4 * noise)
    colour = np.broadcast_to(hair, (SIZE, SIZE, 3)).astype(np.float32)
    return _blend(crop, colour, alpha, rng, False)


def draw_shadow(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A dark shadow over the lower face (or one side of it)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    if rng.random() < 0.5:
        ramp = np.clip((yy - rng.uniform(60, 90)) / rng.uniform(5, 20), 0, 1)
    else:
        ramp = np.clip((xx - 56) * rng.choice([-1, 1]) / rng.uniform(5, 25), 0, 1)
    darken = 1 - ramp * rng.uniform(0.4, 0.85)
    return np.clip(crop.astype(np.float32) * darken[..., None], 0, 255).astype(np.uint8)


def draw_hat(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A hat brim or hood over the forehead."""
    alpha = np.zeros((SIZE, SIZE), np.float32)
    bottom = rng.uniform(20, 42)
    points = np.array([(0, -2), (SIZE, -2), (SIZE, bottom + rng.uniform(-6, 6)),
                       (0, bottom + rng.uniform(-6, 6))], np.float32)
    cv2.fillPoly(alpha, [np.round(points * 4).astype(np.int32)], 1.0, cv2.LINE_AA, shift=2)
    return _blend(crop, _texture(rng, _random_colour(rng)), alpha, rng)


OCCLUDERS = (draw_hand, draw_hand, draw_scarf_low, draw_microphone, draw_glasses, draw_beard,
             draw_shadow, draw_hat)


def occlude(crops: np.ndarray, per_crop: int, rng: np.random.Generator) -> np.ndarray:
    """Each crop `per_crop` times with one or two ordinary (non-mask) things drawn on it."""
    out = []
    for crop in crops:
        for _ in range(per_crop):
            drawn = crop
            for _ in range(1 + int(rng.random() < 0.25)):
                drawn = OCCLUDERS[rng.integers(len(OCCLUDERS))](drawn, rng)
            out.append(drawn)
    return np.stack(out)


def generic_masks(crops: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.stack([draw_generic_mask(crop, rng) for crop in crops])


# ---------------------------------------------------------------------------------------------
# The prepared data, cached


def build_data(args) -> dict:
    from fmr.data.splits import shared_split

    key = (f"v{CACHE_VERSION}-seed{args.seed}-train{args.train_photos}x{args.photo_masks}-"
           f"val{args.val_photos}x{args.val_photo_masks}")
    cache = Path(args.cache) / f"crops-{key}.npz"
    if cache.is_file() and not args.rebuild:
        log(f"prepared crops from {cache}")
        with np.load(cache) as data:
            return {name: data[name] for name in data.files}
    rng = np.random.default_rng(args.seed)
    split = shared_split(args.data)
    log(f"shared split: {len(split.train)} training-side identities, "
        f"{len(split.validation)} validation identities (LFW folds 6-10 people excluded)")
    data: dict[str, np.ndarray] = {}
    for part, identities, count, masks in (
        ("train", split.train, args.train_photos, args.photo_masks),
        ("val", split.validation, args.val_photos, args.val_photo_masks),
    ):
        paths = choose_photos(identities, count, 3 if part == "train" else 30, rng)
        log(f"{part}: detecting and aligning {len(paths)} photos, masking {masks} on the photo")
        prepared = prepare_photos(paths, masks, rng, part)
        plain = prepared["plain"]
        log(f"{part}: synthetic masks on the crops, generic masks, occlusions")
        data[f"{part}_plain"] = plain
        data[f"{part}_photo_masked"] = prepared["photo_masked"]
        data[f"{part}_crop_masked"] = crop_masks(plain, 2 if part == "train" else 1, rng)
        data[f"{part}_generic"] = generic_masks(plain, rng)
        data[f"{part}_occluded"] = occlude(plain, 2 if part == "train" else 1, rng)
        for name in ("no_face", "redetect_missed", "photo_masks"):
            data[f"{part}_{name}"] = np.array(prepared[name])
        data[f"{part}_photos"] = np.array(len(paths))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **data)
    log(f"cached in {cache}")
    return data


# ---------------------------------------------------------------------------------------------
# Web-photo degradation (training augmentation, and a fixed draw for the validation set)


def degrade(crops: np.ndarray, rng: np.random.Generator):
    """(N, 112, 112, 3) uint8 -> (N, 3, 64, 64) float tensor in [0, 255] (the classifier's
    input size, `mask_input`'s resize), each crop JPEG-compressed, misaligned, mirrored,
    shrunk, recoloured and noised at random."""
    import torch
    import torch.nn.functional as F

    from fmr.models.mask_classifier import MASK_INPUT_SIZE

    n, side_out = len(crops), MASK_INPUT_SIZE
    crops = crops.copy()
    for i in range(n):  # JPEG at the photo's quality, before the alignment's resampling
        if rng.random() < 0.5:
            ok, buffer = cv2.imencode(".jpg", crops[i][:, :, ::-1],
                                      [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 95))])
            crops[i] = cv2.imdecode(buffer, cv2.IMREAD_COLOR)[:, :, ::-1]
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(side_out, side_out), mode="bilinear", align_corners=False,
                      antialias=True)  # as mask_input does
    # Misalignment: landmarks of a blurred, turned or masked face are off by a few pixels.
    angle = torch.from_numpy(np.deg2rad(rng.uniform(-14, 14, n))).float()
    scale = torch.from_numpy(rng.uniform(0.86, 1.14, n)).float()
    shift = torch.from_numpy(rng.uniform(-0.1, 0.1, (n, 2))).float()
    flip = torch.from_numpy(np.where(rng.random(n) < 0.5, -1.0, 1.0)).float()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.cos(angle) / scale * flip
    theta[:, 0, 1] = -torch.sin(angle) / scale
    theta[:, 1, 0] = torch.sin(angle) / scale * flip
    theta[:, 1, 1] = torch.cos(angle) / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # Low resolution: a face 14-100 px wide in a web photo, upscaled by the alignment.
    sides = np.exp(rng.uniform(np.log(14), np.log(100), n)) * side_out / SIZE
    sides[rng.random(n) >= 0.6] = side_out
    for side in LOW_RESOLUTIONS:
        rows = torch.from_numpy(np.nonzero((sides <= side) & (sides > side * 0.8))[0])
        if len(rows):
            small = F.interpolate(x[rows], size=(side, side), mode="bilinear", antialias=True,
                                  align_corners=False)
            x[rows] = F.interpolate(small, size=(side_out, side_out), mode="bilinear",
                                    align_corners=False)
    # Colour: brightness, contrast, saturation (grey sometimes), white balance, gamma.
    brightness = torch.from_numpy(rng.uniform(0.55, 1.45, (n, 1, 1, 1))).float()
    contrast = torch.from_numpy(rng.uniform(0.6, 1.4, (n, 1, 1, 1))).float()
    saturation = rng.uniform(0.0, 1.6, n)
    saturation[rng.random(n) < 0.12] = 0.0
    saturation = torch.from_numpy(saturation).float().view(n, 1, 1, 1)
    balance = torch.from_numpy(rng.uniform(0.82, 1.18, (n, 3, 1, 1))).float()
    gamma = torch.from_numpy(rng.uniform(0.7, 1.4, (n, 1, 1, 1))).float()
    grey = x.mean(1, keepdim=True)
    x = grey + (x - grey) * saturation
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (mean + (x - mean) * contrast) * brightness * balance
    x = 255.0 * (x.clamp(0, 255) / 255.0) ** gamma
    noise = torch.from_numpy(rng.uniform(0, 8, (n, 1, 1, 1))).float()
    generator = torch.Generator().manual_seed(int(rng.integers(1 << 62)))
    x = x + torch.randn(x.shape, generator=generator) * noise
    return x.clamp(0, 255)


# ---------------------------------------------------------------------------------------------
# Training


def evaluate(model, x, y) -> tuple[float, float, np.ndarray]:
    import torch
    import torch.nn.functional as F

    from fmr.models.mask_classifier import mask_input, mask_logits

    model.eval()
    with torch.inference_mode():  # as fmr.verify.mask_detector predicts: crop and mirror
        logits = torch.cat([mask_logits(model, mask_input(x[i : i + 256]))
                            for i in range(0, len(x), 256)])
    loss = float(F.binary_cross_entropy_with_logits(logits, y))
    probability = torch.sigmoid(logits).numpy()
    accuracy = float(((probability >= 0.5) == (y.numpy() > 0.5)).mean())
    model.train()
    return loss, accuracy, probability


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="shared data folder (default: FMR_DATA_DIR "
                        "or ../shared/data)")
    parser.add_argument("--out", default=str(ROOT / "checkpoints" / "mask_detector"),
                        help="model file to write (.safetensors and .json; default "
                        "checkpoints/mask_detector)")
    parser.add_argument("--cache", default="/tmp/fmr-maskdet", help="folder for prepared crops")
    parser.add_argument("--rebuild", action="store_true", help="prepare the crops again")
    parser.add_argument("--train-photos", type=int, default=3000)
    parser.add_argument("--photo-masks", type=int, default=3000,
                        help="training photos masked on the photo (dlib landmarks, re-detected)")
    parser.add_argument("--val-photos", type=int, default=600)
    parser.add_argument("--val-photo-masks", type=int, default=300)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=96)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from fmr.masks import MASK_STYLES
    from fmr.masks.tensor import mask_batch
    from fmr.models.mask_classifier import (
        MaskClassifier,
        mask_input,
        save_mask_classifier,
    )
    from fmr.settings import data_dir

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    args.data = Path(args.data) if args.data else data_dir()
    started = time.time()
    data = build_data(args)
    prepared_s = time.time() - started

    positives = {name: data[f"train_{name}"] for name in ("crop_masked", "photo_masked",
                                                          "generic")}
    negatives = {name: data[f"train_{name}"] for name in ("plain", "occluded")}
    # Shares of a batch: half masked faces, half not.
    pos_share = {"crop_masked": 0.12, "photo_masked": 0.25, "generic": 0.05, "on_the_fly": 0.08}
    neg_share = {"plain": 0.28, "occluded": 0.22}
    for name, array in {**positives, **negatives}.items():
        log(f"train {name}: {len(array)} crops")

    val_rng = np.random.default_rng(args.seed + 1000)
    val_pos = np.concatenate([data["val_crop_masked"], data["val_photo_masked"],
                              data["val_generic"]])
    val_neg = np.concatenate([data["val_plain"], data["val_occluded"]])
    val_x = torch.cat([degrade(val_pos, val_rng), degrade(val_neg, val_rng)])
    val_y = torch.cat([torch.ones(len(val_pos)), torch.zeros(len(val_neg))])
    log(f"validation: {len(val_pos)} masked and {len(val_neg)} unmasked crops of "
        f"{len(data['val_plain'])} photos of validation identities")

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed + 1)
    generator = torch.Generator().manual_seed(args.seed)
    model = MaskClassifier(width=args.width)
    parameters = sum(p.numel() for p in model.parameters())
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-3)
    best = (math.inf, 0.0, 0, None)
    history = []
    train_start, train_cpu = time.time(), time.process_time()
    for step in range(1, args.steps + 1):
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / args.steps))
        lr *= min(1.0, step / 100)
        for group in optimiser.param_groups:
            group["lr"] = lr
        parts, labels = [], []
        for name, share in {**pos_share, **neg_share}.items():
            count = max(1, round(share * args.batch))
            source = positives.get(name, negatives.get(name, data["train_plain"]))
            chosen = source[rng.integers(0, len(source), count)]
            if name == "on_the_fly":
                tensor = torch.from_numpy(chosen).permute(0, 3, 1, 2).contiguous()
                chosen = mask_batch(tensor, 1.0, styles=MASK_STYLES, generator=generator)
                chosen = chosen.permute(0, 2, 3, 1).contiguous().numpy()
            parts.append(chosen)
            labels.append(np.full(count, 1.0 if (name in positives or name == "on_the_fly")
                                  else 0.0, np.float32))
        x = degrade(np.concatenate(parts), rng)
        y = torch.from_numpy(np.concatenate(labels))
        logits = model(mask_input(x))
        loss = F.binary_cross_entropy_with_logits(logits, y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % args.eval_every == 0 or step == args.steps:
            val_loss, val_acc, _ = evaluate(model, val_x, val_y)
            history.append({"step": step, "val_loss": round(val_loss, 4),
                            "val_accuracy": round(val_acc, 4)})
            mark = ""
            if val_loss < best[0]:
                best = (val_loss, val_acc, step, copy.deepcopy(model.state_dict()))
                mark = " (best)"
            log(f"step {step}/{args.steps}: train loss {loss.item():.4f}, validation loss "
                f"{val_loss:.4f}, accuracy {val_acc:.4f}{mark}; "
                f"{time.time() - train_start:.0f} s")
    model.load_state_dict(best[3])
    model.eval()
    val_loss, val_acc, probability = evaluate(model, val_x, val_y)
    labels = val_y.numpy() > 0.5
    n_pos = len(val_pos)
    groups = {"crop_masked": data["val_crop_masked"], "photo_masked": data["val_photo_masked"],
              "generic": data["val_generic"], "plain": data["val_plain"],
              "occluded": data["val_occluded"]}
    per_group, offset = {}, 0
    for name, array in groups.items():
        p = probability[offset : offset + len(array)]
        correct = (p >= 0.5) == labels[offset : offset + len(array)]
        per_group[name] = {"crops": len(array), "accuracy": round(float(correct.mean()), 4)}
        offset += len(array)
    assert offset == len(probability) and n_pos == int(labels.sum())
    log(f"kept step {best[2]}: validation loss {val_loss:.4f}, accuracy {val_acc:.4f}; "
        + ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in per_group.items()))

    from fmr import __version__

    train_redetect = int(data["train_redetect_missed"]) / max(1, int(data["train_photo_masks"]) +
                                                              int(data["train_redetect_missed"]))
    card = {
        "name": "mask detector (tiny CNN on the aligned crop)",
        "training": {
            "script": "scripts/train_mask_detector.py",
            "command": "python scripts/train_mask_detector.py " + " ".join(argv or sys.argv[1:]),
            "data": "training-side identities of the shared split (LFW people outside pair "
            "folds 6-10, CelebA subset training identities); validation identities of the split "
            "for choosing the step",
            "photos": int(data["train_photos"]),
            "faces_found": int(len(data["train_plain"])),
            "photos_masked_on_the_photo": int(data["train_photo_masks"]),
            "masked_faces_not_found_again": int(data["train_redetect_missed"]),
            "positives": "fmr synthetic masks, all styles (surgical, N95, KN95, cloth, gas), "
            "renderers fmr and warp, style or any named colours, all patterns; on the photo "
            "(re-detected), on the crop and on the fly (mask_batch); plain generic covers of "
            "any colour and texture",
            "negatives": "plain crops; crops with a hand, a low scarf or collar, a microphone, "
            "sunglasses or glasses, a beard or stubble, a dark shadow, a hat brim",
            "augmentation": "misalignment (rotation +-14 deg, scale 0.86-1.14, shift +-6 px), "
            "mirror, low resolution (14-100 px), JPEG 15-95, brightness, contrast, "
            "saturation/grey, white balance, gamma, noise",
            "steps": args.steps, "batch": args.batch, "lr": args.lr, "seed": args.seed,
            "kept_step": best[2], "parameters": parameters,
            "minutes_preparing": round(prepared_s / 60, 1),
            "minutes_training": round((time.time() - train_start) / 60, 1),
            "cpu_minutes_training": round((time.process_time() - train_cpu) / 60, 1),
            "threads": args.threads,
            "history": history,
        },
        "metrics": {
            "validation": {
                "loss": round(val_loss, 4), "accuracy": round(val_acc, 4),
                "threshold": 0.5, "masked_crops": n_pos,
                "unmasked_crops": int(len(labels) - n_pos),
                "per_group": per_group,
                "note": "crops of the validation identities' photos, degraded like web photos "
                "with a fixed seed",
            },
            "synthetic_masked_not_found_again_train": round(train_redetect, 4),
        },
        "calibration": {},
        "calibration_masked": {},
        "notes": "P(the face wears a mask) from the aligned 112x112 crop; fmr calls a face "
        "masked at probability >= 0.5. Trained on synthetic masks only: real masks are checked "
        "by benchmarks/mask_detector.py (docs/benchmarks.md).",
        "licence": "research and demonstration only (trained on LFW and CelebA photos)",
        "created": datetime.date.today().isoformat(),
        "fmr_version": __version__,
    }
    written = save_mask_classifier(args.out, model, card)
    log(f"wrote {written} ({written.stat().st_size / 1024:.0f} KiB) and "
        f"{written.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
