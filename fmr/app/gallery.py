"""The compare-backbones gallery: embeddings of several people's photos, unmasked and masked,
and the small summaries the page draws (similarity matrices, a 2-D projection, score drop)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class GalleryFace:
    """One face of the gallery. person: who it is; name: short label ("Obama 2");
    masked: whether a synthetic mask was drawn; closeup: a small RGB picture of the face."""

    person: str
    name: str
    masked: bool
    closeup: np.ndarray


def similarity_matrix(embeddings: np.ndarray) -> np.ndarray:
    """(N, N) cosine similarities of (N, D) unit-norm embeddings."""
    vectors = np.asarray(embeddings, dtype=np.float64)
    return np.clip(vectors @ vectors.T, -1.0, 1.0)


def project_2d(embeddings: np.ndarray) -> np.ndarray:
    """(N, 2) coordinates of (N, D) embeddings on their two principal components (PCA of the
    centred vectors via SVD). Signs are fixed so the largest coordinate of each axis is
    positive, which keeps the picture stable between reruns."""
    vectors = np.asarray(embeddings, dtype=np.float64)
    centred = vectors - vectors.mean(axis=0, keepdims=True)
    if len(vectors) < 2:
        return np.zeros((len(vectors), 2))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:2]
    if components.shape[0] < 2:
        components = np.vstack([components, np.zeros_like(components)])
    points = centred @ components.T
    signs = np.sign(points[np.abs(points).argmax(axis=0), [0, 1]])
    return points * np.where(signs == 0, 1.0, signs)


def score_drop_rows(
    unmasked: np.ndarray, masked: np.ndarray, people: list[str], backbone: str
) -> list[dict]:
    """Mean similarities that show what a mask costs one backbone.

    unmasked, masked: (N, D) unit-norm embeddings of the same N photos without and with a
    synthetic mask; people: (N,) who each photo shows. Kinds: same person (two different
    photos, both unmasked), same person (one of them masked), a photo against its own masked
    copy, different people (both unmasked). Returns {"backbone", "kind", "mean", "count"} rows
    (kinds without any pair are left out).
    """
    people_arr = np.asarray(people)
    same = people_arr[:, None] == people_arr[None, :]
    off_diagonal = ~np.eye(len(people), dtype=bool)
    plain = unmasked @ unmasked.T
    probe = masked @ unmasked.T  # row: masked photo i, column: unmasked photo j
    kinds = (
        ("same person, both unmasked", plain, same & off_diagonal & np.triu(off_diagonal)),
        ("same person, one masked", probe, same & off_diagonal),
        ("photo vs its own masked copy", probe, np.eye(len(people), dtype=bool)),
        ("different people, both unmasked", plain, ~same & np.triu(off_diagonal)),
    )
    rows = []
    for kind, scores, keep in kinds:
        if keep.any():
            rows.append({"backbone": backbone, "kind": kind, "mean": float(scores[keep].mean()),
                         "count": int(keep.sum())})
    return rows
