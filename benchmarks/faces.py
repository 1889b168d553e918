"""Detection + alignment time per photo: fmr.faces (MTCNN + 5-point similarity warp) against
dlib's HOG detector + 5-point shape predictor + get_face_chip (the usual reference pipeline).

    .venv/bin/python benchmarks/faces.py [--lfw 200] [--threads 1]

Prints a markdown table: median and 90th percentile milliseconds per photo on the 17 photos
of ../shared/data/photos (full-size, up to 1.5 MP) and on LFW photos (250x250), and the
share of photos where a face was found. Decoding is not timed (both pipelines get the array).
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time

import numpy as np


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def time_pipeline(images: list[np.ndarray], run) -> tuple[list[float], int]:
    run(images[0])  # warm-up: model loading is not part of the per-photo time
    times, found = [], 0
    for image in images:
        start = time.perf_counter()
        found += run(image)
        times.append(time.perf_counter() - start)
    return times, found


def fmr_pipeline(image: np.ndarray) -> bool:
    from fmr.faces import align_face, detect_faces

    faces = detect_faces(image)
    if not faces:
        return False
    align_face(image, faces[0].landmarks)
    return True


def dlib_pipeline(image: np.ndarray) -> bool:
    import dlib

    from fmr.faces.landmarks import shape_predictor

    global _hog
    if "_hog" not in globals():
        _hog = dlib.get_frontal_face_detector()
    boxes = _hog(image, 1)
    if len(boxes) == 0:
        return False
    shape = shape_predictor(5)(image, boxes[0])
    dlib.get_face_chip(image, shape, size=150, padding=0.25)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=int, default=200, help="number of LFW photos (default 200)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1 core)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from fmr.faces import load_image
    from fmr.settings import data_dir

    torch.set_num_threads(args.threads)
    root = data_dir()
    photo_files = sorted((root / "photos").glob("*/*.*"))
    lfw_files = sorted((root / "lfw" / "images").glob("*/*.jpg"))
    lfw_files = random.Random(args.seed).sample(lfw_files, min(args.lfw, len(lfw_files)))
    sets = {
        f"photos/ ({len(photo_files)}, full size)": [load_image(p) for p in photo_files],
        f"LFW ({len(lfw_files)}, 250x250)": [load_image(p) for p in lfw_files],
    }
    pipelines = {
        "fmr: MTCNN + 5-point warp (112x112)": fmr_pipeline,
        "dlib: HOG + 5-point chip (150x150)": dlib_pipeline,
    }
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {args.threads}")
    print()
    print("| pipeline | images | median ms/photo | p90 ms/photo | faces found |")
    print("|---|---|---|---|---|")
    for set_name, images in sets.items():
        for name, run in pipelines.items():
            times, found = time_pipeline(images, run)
            print(
                f"| {name} | {set_name} | {statistics.median(times) * 1e3:.1f} | "
                f"{_percentile(times, 90) * 1e3:.1f} | {found}/{len(images)} |"
            )


if __name__ == "__main__":
    main()
