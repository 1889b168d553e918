"""From two photos to verdicts: load, detect, (mask), embed with each backbone, compare.

This is the one face pipeline: `fmr verify`, the evaluation runner and the app (`fmr.app.photos`,
which caches each step per photo) all prepare a face with `prepare_face` / `prepare_detected`
and compare with `fmr.verify.compare`, so a photo gives the same face, mask and score
everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fmr.errors import CheckpointError, FaceError, FmrError
from fmr.faces.detect import Face, detect_faces
from fmr.faces.io import load_image, source_name
from fmr.faces.policy import likely_faces, select_face
from fmr.verify.compare import compare
from fmr.verify.embedder import Embedder, load_backbone
from fmr.verify.lookup import FAMILIES, missing_reason
from fmr.verify.mask_detector import face_mask_probability, mask_decision

# A face re-found on the masked photo must overlap the original box this much to be the same face.
REDETECT_MIN_IOU = 0.3


@dataclass
class PreparedFace:
    """A face ready to embed. image: the photo as embedded (masked when a mask was asked for),
    RGB uint8; face: where the face is in it; faces_found: the likely faces in the photo
    (`fmr.faces.policy.likely_faces`); unlikely_ignored: detections that did not look like
    faces; mask: the synthetic mask's description or None; mask_probability: the mask
    detector's probability that the face (as embedded) wears a mask, None when no detector
    is shipped (`fmr.verify.mask_detector`)."""

    name: str
    image: np.ndarray
    face: Face
    faces_found: int
    mask: dict | None = None
    unlikely_ignored: int = 0
    face_index: int = 0  # which of the likely faces (the main one first) this is
    mask_probability: float | None = None

    def to_dict(self) -> dict:
        height, width = self.image.shape[:2]
        return {
            "input": self.name,
            "size": [int(width), int(height)],
            "faces_found": self.faces_found,
            "unlikely_ignored": self.unlikely_ignored,
            "face": self.face.to_dict(),
            "mask": self.mask,
            "mask_probability": (None if self.mask_probability is None
                                 else round(float(self.mask_probability), 4)),
        }


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def side_rng(seed: int, side: int) -> np.random.Generator:
    """The random generator for the synthetic mask on photo `side` (0: A, 1: B) of a pair."""
    return np.random.default_rng([seed, side])


def mask_and_redetect(
    image: np.ndarray,
    face: Face,
    style: str,
    *,
    renderer: str = "fmr",
    rng: np.random.Generator | int | None = None,
    min_face_size: int = 20,
    name: str = "image",
    **options,
) -> tuple[np.ndarray, Face, dict]:
    """Draw a synthetic mask on `face` and find the face again in the masked photo.

    A real masked photo goes through detection with the mask on, so the masked face is detected
    again (the face overlapping the original box most, IoU >= 0.3); when the detector misses it,
    the unmasked detection is kept and `info["redetected"]` is False. An aligned crop's template
    face (`face.source == "template"`) is kept as it is: its face is where the template says.
    options: colour, coverage, pattern... as `fmr.masks.apply_mask` takes them.
    Returns (masked image, face to embed, mask info).
    """
    from fmr.masks import mask_face

    try:
        masked, info = mask_face(image, face, style, rng, renderer=renderer, **options)
    except FaceError as exc:  # the mask code does not know the file's name
        raise FaceError(f"{name}: cannot draw a {style} mask ({exc})") from exc
    info = dict(info)
    if face.source == "template":  # an aligned crop: its face is where the template says
        info["redetected"] = False
        return masked, face, info
    found = detect_faces(masked, min_face_size=min_face_size)
    best = max(found, key=lambda f: box_iou(f.box, face.box), default=None)
    if best is not None and box_iou(best.box, face.box) >= REDETECT_MIN_IOU:
        info["redetected"] = True
        return masked, best, info
    info["redetected"] = False
    return masked, face, info


def prepare_face(source, *, name: str | None = None, min_face_size: int = 20,
                 **options) -> PreparedFace:
    """Load a photo (path, bytes, open file or RGB uint8 array), detect its faces, pick one by
    `policy`, and optionally draw a synthetic mask of style `mask` (seeded by `seed`;
    `mask_options`: colour, coverage, pattern). options: as `prepare_detected` takes them.

    Raises `FaceError` naming the input when it cannot be read or shows no face.
    """
    if isinstance(source, np.ndarray):
        label = name or "image"
        if source.ndim != 3 or source.shape[2] != 3 or source.dtype != np.uint8:
            raise FmrError(
                f"{label}: expected an RGB uint8 array (H, W, 3), got {source.dtype} {source.shape}"
            )
        image = source
    else:
        label = source_name(source, name)
        image = load_image(source, name=label)
    faces = detect_faces(image, min_face_size=min_face_size)
    return prepare_detected(image, faces, name=label, min_face_size=min_face_size, **options)


def prepare_detected(
    image: np.ndarray,
    faces: list[Face],
    *,
    name: str = "image",
    face_index: int | None = None,
    policy: str = "main",
    mask: str | None = None,
    mask_renderer: str = "fmr",
    seed: int | np.random.Generator | None = 0,
    min_face_size: int = 20,
    mask_options: dict | None = None,
) -> PreparedFace:
    """`prepare_face` after detection: `faces` are `detect_faces(image)` (or the likely ones).

    face_index: which of the likely faces (`likely_faces`: the main one first) to use; None:
    choose by `policy`. The chosen face's mask probability (`PreparedFace.mask_probability`) is
    measured on the photo as embedded, synthetic mask included.
    """
    likely, ignored = likely_faces(faces, image.shape)
    if face_index is None:
        face = select_face(faces, image.shape, policy, name)
        index = next(i for i, candidate in enumerate(likely) if candidate is face)
    else:
        if not likely:
            face = select_face(faces, image.shape, policy, name)  # raises: no face
        index = min(max(int(face_index), 0), len(likely) - 1)
        face = likely[index]
    info = None
    if mask:
        image, face, info = mask_and_redetect(
            image,
            face,
            mask,
            renderer=mask_renderer,
            rng=seed,
            min_face_size=min_face_size,
            name=name,
            **(mask_options or {}),
        )
    probability = face_mask_probability(image, face)
    return PreparedFace(name, image, face, len(likely), info, ignored, index, probability)


def resolve_backbones(backbones) -> tuple[list[Embedder], list[dict]]:
    """Embedders for `backbones`, and the families that are missing (with the reason).

    backbones: "all" (every family that has a checkpoint), a family name, a checkpoint path,
    an `Embedder`, or a list of those. Only "all" tolerates missing families; naming a missing
    one raises `CheckpointError`.
    """
    if isinstance(backbones, (str, os.PathLike, Embedder)):
        backbones = [backbones]
    embedders: list[Embedder] = []
    missing: list[dict] = []
    for item in backbones:
        if isinstance(item, Embedder):
            embedders.append(item)
        elif str(item) == "all":
            for family in FAMILIES:
                reason = missing_reason(family)
                if reason is None:
                    embedders.append(load_backbone(family))
                else:
                    missing.append({"backbone": family, "reason": reason})
        else:
            embedders.append(load_backbone(item))
    if not embedders:
        reasons = "; ".join(m["reason"] for m in missing)
        raise CheckpointError(f"no backbone could be loaded: {reasons}")
    return embedders, missing


def verify_pair(
    image_a,
    image_b,
    backbones: str | Sequence | Embedder = "all",
    mask_a: str | None = None,
    mask_b: str | None = None,
    policy: str = "main",
    *,
    threshold_far: float | None = None,
    mask_renderer: str = "fmr",
    seed: int = 0,
    name_a: str | None = None,
    name_b: str | None = None,
    mask_options: dict | None = None,
) -> dict:
    """Are the faces in two photos the same person? One result per backbone.

    image_a, image_b: paths, bytes, open files or RGB uint8 arrays. backbones: see
    `resolve_backbones`. mask_a / mask_b: a mask style to draw on that photo first (drawn with
    `side_rng(seed, 0)` and `side_rng(seed, 1)`; mask_options: colour, coverage, pattern).
    Returns the `fmr verify --json` object: {"a": {...}, "b": {...}, "results": [{"backbone",
    "name", "checkpoint", "similarity", "angle_deg", "threshold", "verdict", "far_at_score",
    "frr_at_score", "band", "threshold_far", "calibration", "explanation"}], "missing":
    [{"backbone", "reason"}]}; "a" and "b" carry each face's "mask_probability". With a
    synthetic mask on either photo, or a face the mask detector finds masked (probability >=
    0.5), the backbones' masked calibrations decide where they have one ("calibration":
    "masked", "calibration_reason" says why; `fmr.verify.mask_detector.mask_decision`).
    Raises `FmrError` subclasses for unreadable photos, no face, bad checkpoints.
    """
    embedders, missing = resolve_backbones(backbones)
    a = prepare_face(
        image_a,
        name=name_a or ("image A" if isinstance(image_a, np.ndarray) else None),
        policy=policy,
        mask=mask_a,
        mask_renderer=mask_renderer,
        seed=side_rng(seed, 0),
        mask_options=mask_options,
    )
    b = prepare_face(
        image_b,
        name=name_b or ("image B" if isinstance(image_b, np.ndarray) else None),
        policy=policy,
        mask=mask_b,
        mask_renderer=mask_renderer,
        seed=side_rng(seed, 1),
        mask_options=mask_options,
    )
    decision = mask_decision([a, b])
    results = []
    for embedder in embedders:
        emb_a, emb_b = embedder.embed_faces([(a.image, a.face), (b.image, b.face)])
        comparison = compare(emb_a, emb_b, embedder, threshold_far,
                             masked=decision.masked, mask_reason=decision.reason)
        result = {
            "backbone": embedder.family,
            "name": embedder.name,
            "checkpoint": str(embedder.path),
            **comparison.to_dict(),
            "explanation": comparison.explanation(),
        }
        results.append(result)
    return {"a": a.to_dict(), "b": b.to_dict(), "results": results, "missing": missing}
