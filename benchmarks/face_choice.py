"""Which face each multi-face policy picks, and whether it is the labelled person, on the
training-side photos that show several likely faces (never LFW folds 6-10).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/face_choice.py [--cache /tmp/face_choice]

Photos: every LFW photo of a person outside pairs.txt folds 6-10, and every celeba299 photo
(`fmr.data.splits.shared_split`: its training and validation identities). Each is detected
once (MTCNN, `fmr.faces.detect_faces` with its defaults, as `fmr embed` runs it); the photos
with two or more likely faces (`fmr.faces.policy.likely_faces`) are judged.

Who the labelled person is, in a photo with several faces: the face whose dlib descriptor is
nearest the mean descriptor of the person's other photos that show only one likely face, by
centred cosine (descriptors minus their mean over all those one-face photos: dlib's descriptors
share one large common direction, which plain cosine mostly measures), when that similarity is
at least 0.3 and every other face of the photo is at least 0.1 less. Photos of people without
such other photos (one-photo people above all), and photos where no face is that near or two
are about as near, cannot be judged and are counted apart.

Masked: the same judged photos with a synthetic surgical mask drawn on the labelled person
(`fmr.masks.mask_face`, seeded per photo) and detected again; a policy is right when its face
is the masked one (box IoU >= 0.3 with the person's unmasked box, as `fmr verify` finds a
masked face again). A masked person MTCNN no longer finds counts as wrong for every policy.

Prints markdown tables (docs/face_choice.md holds the published run) and writes the per-photo
picks to CACHE/picks.json. Detections and descriptors are cached in CACHE (default
/tmp/face_choice), so reruns take seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

POLICIES = ("main", "largest", "center")
# Centred cosine to the person's mean: the labelled face reaches this, and beats the others by
# the margin (dlib's centred same-person similarities sit mostly above 0.3, other people's
# below; a photo where two faces come close is left out, not guessed).
MATCH_SIMILARITY = 0.3
MATCH_MARGIN = 0.1


def _faces_to_arrays(faces) -> dict:
    return {
        "box": np.array([f.box for f in faces], np.float32).reshape(-1, 4),
        "score": np.array([f.score for f in faces], np.float32),
        "landmarks": np.array([f.landmarks for f in faces], np.float32).reshape(-1, 5, 2),
        "source": [f.source for f in faces],
    }


def _arrays_to_faces(data: dict) -> list:
    from fmr.faces.detect import Face

    return [
        Face(box, float(score), points, source)
        for box, score, points, source in zip(
            data["box"], data["score"], data["landmarks"], data["source"], strict=True
        )
    ]


def training_side_photos(root: Path) -> list[tuple[str, Path]]:
    """(identity key, photo) for every LFW photo of a person outside folds 6-10 and every
    celeba299 photo."""
    from fmr.data.splits import shared_split

    split = shared_split(root)
    photos = []
    for part in (split.train, split.validation):
        for key, paths in part.items():
            photos.extend((key, p) for p in paths)
    assert not {k.split("/", 1)[1] for k, _ in photos if k.startswith("lfw/")} & split.eval_people
    return sorted(photos)


def detect_all(photos: list[tuple[str, Path]], cache: Path) -> dict[str, dict]:
    """{photo path: {"shape", faces arrays}}, from CACHE/detections.pkl when it is there."""
    from tqdm import tqdm

    from fmr.faces import detect_faces, load_image

    file = cache / "detections.pkl"
    found = pickle.loads(file.read_bytes()) if file.is_file() else {}
    todo = [p for _, p in photos if str(p) not in found]
    for index, path in enumerate(tqdm(todo, desc="detect", file=sys.stderr, mininterval=10)):
        image = load_image(path)
        found[str(path)] = {"shape": image.shape, **_faces_to_arrays(detect_faces(image))}
        if index % 2000 == 1999:
            file.write_bytes(pickle.dumps(found))
    if todo:
        file.write_bytes(pickle.dumps(found))
    return found


class Descriptors:
    """dlib descriptors of (photo, face box) pairs, cached in CACHE/descriptors.pkl."""

    def __init__(self, cache: Path) -> None:
        from fmr.verify.dlib_reference import DlibReference

        self.file = cache / "descriptors.pkl"
        self.table = pickle.loads(self.file.read_bytes()) if self.file.is_file() else {}
        self.reference = DlibReference()
        self.added = 0

    def get(self, key: str, image_loader, face) -> np.ndarray:
        full = f"{key}|{','.join(f'{v:.1f}' for v in face.box)}"
        if full not in self.table:
            self.table[full] = self.reference.embed(image_loader(), face)
            self.added += 1
            if self.added % 2000 == 0:
                self.save()
        return self.table[full]

    def save(self) -> None:
        self.file.write_bytes(pickle.dumps(self.table))


def box_iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _loader(path: str):
    from fmr.faces import load_image

    memo: list = []

    def load():
        if not memo:
            memo.append(load_image(path))
        return memo[0]

    return load


def judge(photos, detections, descriptors: Descriptors) -> tuple[list[dict], dict]:
    """One record per photo with several likely faces: the labelled face (or why there is
    none), and each policy's pick."""
    from fmr.faces.policy import in_frame, likely_faces, select_face

    by_person: dict[str, list[str]] = {}
    for key, path in photos:
        by_person.setdefault(key, []).append(str(path))
    likely = {
        path: likely_faces(_arrays_to_faces(d), d["shape"])[0] for path, d in detections.items()
    }
    several = [(k, str(p)) for k, p in photos if len(likely[str(p)]) >= 2]
    counts = {"photos": len(photos), "several": len(several), "one_photo_person": 0,
              "no_reference": 0, "not_found": 0, "ambiguous": 0}
    references = {}
    for key, path in several:
        others = [p for p in by_person[key] if p != path and len(likely[p]) == 1]
        if len(by_person[key]) == 1:
            counts["one_photo_person"] += 1
        elif not others:
            counts["no_reference"] += 1
        else:
            references[path] = [descriptors.get(p, _loader(p), likely[p][0]) for p in others]
    centre = np.mean([v for vectors in references.values() for v in vectors], axis=0)

    def centred(vector: np.ndarray) -> np.ndarray:
        vector = vector - centre
        return vector / np.linalg.norm(vector)

    records = []
    for key, path in several:
        if path not in references:
            continue
        reference = centred(np.mean([centred(v) for v in references[path]], axis=0))
        load = _loader(path)
        faces = likely[path]
        similarity = np.array([centred(descriptors.get(path, load, f)) @ reference for f in faces])
        order = np.argsort(-similarity)
        if similarity[order[0]] < MATCH_SIMILARITY:
            counts["not_found"] += 1
            continue
        if similarity[order[1]] > similarity[order[0]] - MATCH_MARGIN:
            counts["ambiguous"] += 1
            continue
        truth = int(order[0])
        shape = detections[path]["shape"]
        record = {
            "identity": key, "path": path, "faces": len(faces), "truth": truth,
            "truth_in_frame": in_frame(faces[truth], shape),
            "edge_cut": [not in_frame(f, shape) for f in faces],
            "similarity": [round(float(v), 3) for v in similarity],
            "scores": [round(float(f.score), 3) for f in faces],
            "boxes": [[round(float(v), 1) for v in f.box] for f in faces],
        }
        for policy in POLICIES:
            pick = select_face(faces, shape, policy)
            record[policy] = next(i for i, f in enumerate(faces) if f is pick)
        records.append(record)
    return records, counts


def detect_masked(records: list[dict], cache: Path, seed: int = 0) -> dict[str, dict | str]:
    """{photo: the faces found once a surgical mask is drawn on its labelled face (seeded by
    the photo's name), or why no mask could be drawn}, cached in CACHE/masked.pkl."""
    import zlib

    from tqdm import tqdm

    from fmr.errors import FaceError
    from fmr.faces import detect_faces, load_image
    from fmr.masks import mask_face

    file = cache / "masked.pkl"
    found = pickle.loads(file.read_bytes()) if file.is_file() else {}
    todo = [r for r in records if r["path"] not in found]
    for record in tqdm(todo, desc="masked", file=sys.stderr, mininterval=10):
        image = load_image(record["path"])
        box = np.array(record["boxes"][record["truth"]], np.float32)
        subject = max(detect_faces(image), key=lambda f: box_iou(f.box, box))
        rng = np.random.default_rng([seed, zlib.crc32(record["path"].encode())])
        try:
            masked, _ = mask_face(image, subject, "surgical", rng)
        except FaceError as exc:
            found[record["path"]] = f"no mask: {exc}"
            continue
        found[record["path"]] = {"shape": masked.shape, **_faces_to_arrays(detect_faces(masked))}
    if todo:
        file.write_bytes(pickle.dumps(found))
    return found


def judge_masked(records: list[dict], cache: Path) -> list[dict]:
    """Each policy's pick once the labelled face of each judged photo wears a mask."""
    from fmr.faces.detect import Face
    from fmr.faces.policy import in_frame, likely_faces, select_face
    from fmr.verify.pipeline import REDETECT_MIN_IOU

    detections = detect_masked(records, cache)
    results = []
    for record in records:
        box = np.array(record["boxes"][record["truth"]], np.float32)
        found = detections[record["path"]]
        if isinstance(found, str):
            results.append({"path": record["path"], "status": found})
            continue
        faces, shape = _arrays_to_faces(found), found["shape"]
        result = {"path": record["path"], "status": "ok"}
        hits = [f for f in faces if box_iou(f.box, box) >= REDETECT_MIN_IOU]
        if not hits:
            result["status"] = "masked face not found"
        else:
            result["masked_score"] = round(float(max(f.score for f in hits)), 3)
        likely, _ = likely_faces(faces, shape)
        result["faces"] = len(likely)
        result["bystander_cut"] = any(
            not in_frame(f, shape) and box_iou(f.box, box) < REDETECT_MIN_IOU for f in likely
        )
        result["subject_in_frame"] = bool(hits) and in_frame(hits[0], shape)
        for policy in POLICIES:
            pick: Face = select_face(faces, shape, policy)
            result[policy] = bool(hits) and box_iou(pick.box, box) >= REDETECT_MIN_IOU
        results.append(result)
    return results


def _table(rows: list[dict], title: str) -> str:
    """A markdown table: per policy, right picks over all rows and per source (LFW, CelebA)."""
    lfw = [r for r in rows if "/lfw/" in r["path"]]
    celeba = [r for r in rows if "/lfw/" not in r["path"]]

    def share(part: list[dict], policy: str) -> str:
        right = sum(1 for r in part if r[policy])
        return f"{right:,} of {len(part):,} ({100 * right / max(len(part), 1):.2f}%)"

    lines = [title, "", "| policy | photos with several faces | right picks | wrong picks | "
             "right on LFW | right on CelebA |", "|---|---:|---:|---:|---:|---:|"]
    for policy in POLICIES:
        right = sum(1 for r in rows if r[policy])
        lines.append(f"| `{policy}` | {len(rows):,} | {right:,} ({100 * right / len(rows):.2f}%) "
                     f"| {len(rows) - right:,} | {share(lfw, policy)} | {share(celeba, policy)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="shared data folder (default: FMR_DATA_DIR)")
    parser.add_argument("--cache", default="/tmp/face_choice", help="cache folder")
    parser.add_argument("--no-masks", action="store_true", help="skip the masked check")
    args = parser.parse_args()

    from fmr.settings import data_dir

    root = Path(args.data) if args.data else data_dir()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    photos = training_side_photos(root)
    detections = detect_all(photos, cache)
    descriptors = Descriptors(cache)
    records, counts = judge(photos, detections, descriptors)
    descriptors.save()
    sources = {"lfw": 0, "celeba": 0}
    for key, _ in photos:
        sources[key.split("/", 1)[0]] += 1
    rows = [{"path": r["path"], **{p: r[p] == r["truth"] for p in POLICIES}} for r in records]
    print(f"{counts['photos']:,} training-side photos ({sources['lfw']:,} LFW outside folds "
          f"6-10, {sources['celeba']:,} celeba299); {counts['several']:,} show two or more likely "
          f"faces. Not judged: {counts['one_photo_person']} of people with one photo, "
          f"{counts['no_reference']} of people without another one-face photo, "
          f"{counts['not_found']} where no face reaches {MATCH_SIMILARITY} (centred cosine) to "
          f"the person's other photos, {counts['ambiguous']} where two faces come within "
          f"{MATCH_MARGIN}.\n")
    print(_table(rows, f"Unmasked: {len(records):,} judged photos"))
    differ = [r for r in records if len({r[p] for p in POLICIES}) > 1]
    print(f"\nPolicies disagree on {len(differ)} photos; the labelled face is cut by the edge in "
          f"{sum(not r['truth_in_frame'] for r in records)}.")
    output = {"counts": counts, "records": records}
    if not args.no_masks:
        masked = judge_masked(records, cache)
        usable = [m for m in masked if not m["status"].startswith("no mask")]
        print()
        print(_table(usable, f"Surgical mask on the labelled person: {len(usable):,} photos "
                     f"({len(masked) - len(usable)} could not take a mask; "
                     f"{sum(m['status'] != 'ok' for m in usable)} masked faces MTCNN no longer "
                     "finds count as wrong)"))
        cut = [m for m in usable if m["bystander_cut"] and m["subject_in_frame"]]
        if cut:
            print()
            print(_table(cut, f"Of those, a masked person in frame beside a bystander cut by the "
                         f"edge: {len(cut)} photos"))
        output["masked"] = masked
    (cache / "picks.json").write_text(json.dumps(output, indent=1))
    print(f"\n({time.perf_counter() - start:.0f} s; picks in {cache / 'picks.json'}; "
          f"{os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
