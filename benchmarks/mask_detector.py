"""The mask detector on real photos, and MTCNN's misses on masked faces (before and after the
second detection pass).

    .venv/bin/python benchmarks/mask_detector.py                  # about 5 minutes on one core
    .venv/bin/python benchmarks/mask_detector.py --synthetic 100  # fewer synthetic photos

(a) Real masks: every photo of `masks_real/with_mask` and `masks_real/without_mask` in the
shared data (FMR_DATA_DIR; web photos, 100 with a real mask, 100 without; never used for
training or choices). Each goes through fmr's face path (`detect_faces`, the largest likely
face, `align_face`) and the shipped mask detector (`fmr.verify.mask_detector`, or
--checkpoint): accuracy at probability >= 0.5 on the photos with a face found, per class, and
how many photos had no face found.
(b) MTCNN's miss rate: the share of photos without a face found, with the first pass only
(`detect_faces(..., retry=False)`: the normal thresholds, then the padded copy) and with the
second pass at lower thresholds (`retry=True`, the default), on the real masked photos, on the
real unmasked ones, and on synthetic masks: --synthetic training-side photos (LFW people
outside folds 6-10 and CelebA validation identities, the first photo of each, in name order)
whose face was found unmasked, each masked on the photo with a random style (all five) and
renderer (fmr or warp), seeded: a miss is a masked photo where no face overlaps the unmasked
face's box (IoU >= 0.3).
(c) False detections the second pass adds: detections on --non-faces images without a face
(smooth noise, stripes, blobs and gradients drawn with a fixed seed), first pass and with the
second.

Prints a markdown table and (--json) writes every figure and each real photo's probability.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MASKED_FOLDER, UNMASKED_FOLDER = "with_mask", "without_mask"


def _photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def real_photos(root: Path, detector) -> dict:
    """Faces found (first pass, both passes) and mask probabilities of the real photos."""
    from fmr.faces import align_face, detect_faces, load_image
    from fmr.faces.policy import select_face

    out = {}
    for label, folder in ((True, MASKED_FOLDER), (False, UNMASKED_FOLDER)):
        rows = []
        for path in _photos(root / folder):
            image = load_image(path)
            first = detect_faces(image, retry=False)
            faces = first or detect_faces(image)
            row = {"photo": f"{folder}/{path.name}", "size": list(image.shape[1::-1]),
                   "found_first_pass": bool(first), "found": bool(faces), "probability": None}
            if faces:
                face = select_face(faces, image.shape, name=path.name)
                crop = align_face(image, face.landmarks)
                row["probability"] = round(float(detector.probabilities(crop[None])[0]), 4)
            rows.append(row)
        out[folder] = {"masked": label, "photos": rows}
    return out


def synthetic_masked(count: int, seed: int) -> dict:
    """MTCNN on `count` training-side photos masked on the photo: misses with and without the
    second pass."""
    from fmr.data.splits import shared_split
    from fmr.faces import detect_faces, load_image
    from fmr.faces.policy import select_face
    from fmr.masks import MASK_STYLES, RENDERERS, mask_face
    from fmr.settings import data_dir
    from fmr.verify.pipeline import box_iou

    split = shared_split(data_dir())
    lfw = [split.train[k][0] for k in sorted(split.train) if k.startswith("lfw/")]
    celeba = [p for k in sorted(split.validation) for p in split.validation[k]]
    paths = [p for pair in zip(lfw, celeba, strict=False) for p in pair][:count]
    rng = np.random.default_rng(seed)
    done = missed_first = missed = 0
    by_style: dict[str, list[int]] = {}
    for path in paths:
        image = load_image(path)
        try:
            face = select_face(detect_faces(image), image.shape, name=path.name)
        except Exception:
            continue  # no face to mask
        style = str(MASK_STYLES[rng.integers(len(MASK_STYLES))])
        renderer = str(RENDERERS[rng.integers(len(RENDERERS))])
        try:
            masked, _ = mask_face(image, face, style, rng, renderer=renderer)
        except Exception:
            continue
        done += 1

        def hit(found, face=face) -> bool:
            return any(box_iou(f.box, face.box) >= 0.3 for f in found)

        first = hit(detect_faces(masked, retry=False))
        both = first or hit(detect_faces(masked))
        missed_first += not first
        missed += not both
        by_style.setdefault(f"{style} ({renderer})", [0, 0, 0])
        by_style[f"{style} ({renderer})"][0] += 1
        by_style[f"{style} ({renderer})"][1] += not first
        by_style[f"{style} ({renderer})"][2] += not both
    return {"photos": done, "missed_first_pass": missed_first, "missed": missed,
            "by_style": {k: {"photos": v[0], "missed_first_pass": v[1], "missed": v[2]}
                         for k, v in sorted(by_style.items())}}


def non_face_images(count: int, seed: int) -> list[np.ndarray]:
    """Images without a face: smooth noise, stripes, blobs, gradients (seeded)."""
    import cv2

    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        h, w = int(rng.integers(120, 400)), int(rng.integers(120, 400))
        kind = index % 4
        if kind == 0:
            noise = rng.standard_normal((h, w, 3)).astype(np.float32)
            image = cv2.GaussianBlur(noise, (0, 0), rng.uniform(1, 8))
            image = (image - image.min()) / (np.ptp(image) + 1e-6) * 255
        elif kind == 1:
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            angle, period = rng.uniform(0, np.pi), rng.uniform(6, 60)
            wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
            image = (wave[..., None] * 0.5 + 0.5) * rng.uniform(0, 255, 3)
        elif kind == 2:
            image = np.full((h, w, 3), rng.uniform(0, 255, 3), np.float32)
            for _ in range(int(rng.integers(3, 15))):
                centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
                axes = (int(rng.integers(5, 60)), int(rng.integers(5, 60)))
                cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360,
                            rng.uniform(0, 255, 3).tolist(), -1)
        else:
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            image = np.stack([xx / w * 255, yy / h * 255, np.full_like(xx, rng.uniform(0, 255))],
                             axis=2)
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return images


def false_detections(count: int, seed: int) -> dict:
    from fmr.faces import detect_faces

    images = non_face_images(count, seed)
    first = sum(bool(detect_faces(image, retry=False)) for image in images)
    both = sum(bool(detect_faces(image)) for image in images)
    return {"images": len(images), "with_a_detection_first_pass": first,
            "with_a_detection": both}


def summarise(real: dict) -> dict:
    summary = {}
    correct_all = found_all = 0
    for folder, data in real.items():
        rows = data["photos"]
        found = [r for r in rows if r["found"]]
        correct = sum((r["probability"] >= 0.5) == data["masked"] for r in found)
        summary[folder] = {
            "photos": len(rows),
            "no_face_first_pass": sum(not r["found_first_pass"] for r in rows),
            "no_face": sum(not r["found"] for r in rows),
            "faces": len(found),
            "correct": correct,
            "accuracy": round(correct / max(1, len(found)), 4),
        }
        correct_all += correct
        found_all += len(found)
    summary["all"] = {"faces": found_all, "correct": correct_all,
                      "accuracy": round(correct_all / max(1, found_all), 4)}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None,
                        help="mask detector file (default: the shipped one)")
    parser.add_argument("--synthetic", type=int, default=400,
                        help="training-side photos to mask for MTCNN's miss rate (0: skip)")
    parser.add_argument("--non-faces", type=int, default=200,
                        help="images without a face for false detections (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="write every figure here")
    args = parser.parse_args(argv)

    import torch

    from fmr.settings import data_dir
    from fmr.verify.mask_detector import MaskDetector, load_mask_detector

    torch.set_num_threads(args.threads)
    root = data_dir() / "masks_real"
    if not root.is_dir():
        print(f"{root} not found: set FMR_DATA_DIR to the shared data folder", file=sys.stderr)
        return 2
    detector = MaskDetector(args.checkpoint) if args.checkpoint else load_mask_detector(True)
    start = time.time()
    real = real_photos(root, detector)
    summary = summarise(real)
    result = {"checkpoint": str(detector.path.name), "real": summary, "photos": real}
    if args.synthetic:
        result["synthetic"] = synthetic_masked(args.synthetic, args.seed)
    if args.non_faces:
        result["non_faces"] = false_detections(args.non_faces, args.seed)
    result["seconds"] = round(time.time() - start, 1)

    masked, unmasked, total = summary[MASKED_FOLDER], summary[UNMASKED_FOLDER], summary["all"]
    print(f"mask detector {detector.path.name} on masks_real ({time.time() - start:.0f} s)\n")
    print("| photos | faces found | mask detector accuracy (p >= 0.5) |")
    print("|---|---|---|")
    for name, row in ((MASKED_FOLDER, masked), (UNMASKED_FOLDER, unmasked)):
        print(f"| {name} ({row['photos']}) | {row['faces']} ({row['no_face']} without a face) "
              f"| {row['accuracy']:.1%} ({row['correct']}/{row['faces']}) |")
    print(f"| all ({masked['photos'] + unmasked['photos']}) | {total['faces']} "
          f"| **{total['accuracy']:.1%}** ({total['correct']}/{total['faces']}) |")
    print("\n| MTCNN: photos without a face found | first pass only | with the second pass |")
    print("|---|---|---|")
    for name, row in ((MASKED_FOLDER, masked), (UNMASKED_FOLDER, unmasked)):
        print(f"| real, {name} | {row['no_face_first_pass']}/{row['photos']} "
              f"({row['no_face_first_pass'] / row['photos']:.1%}) | {row['no_face']}/"
              f"{row['photos']} ({row['no_face'] / row['photos']:.1%}) |")
    if args.synthetic:
        s = result["synthetic"]
        print(f"| synthetic masks, training side | {s['missed_first_pass']}/{s['photos']} "
              f"({s['missed_first_pass'] / max(1, s['photos']):.1%}) | {s['missed']}/"
              f"{s['photos']} ({s['missed'] / max(1, s['photos']):.1%}) |")
    if args.non_faces:
        n = result["non_faces"]
        print(f"| images without a face: any detection (false) | "
              f"{n['with_a_detection_first_pass']}/{n['images']} | "
              f"{n['with_a_detection']}/{n['images']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
