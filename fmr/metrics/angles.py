"""Angle statistics in degrees: between pairs, and between embeddings and their class centres.

The ArcFace paper shows how training pulls each embedding towards its class centre (the row of
the classification head's weight for its identity) and pushes classes apart. Two views:

- `angles_to_centres`: with a trained head, the angle between each embedding and the
  normalised weight row of its label.
- `leave_one_out_centre_angles`: without a head (evaluation data), the centre of an identity
  is estimated by the mean of its OTHER images' embeddings, so an image never counts towards
  its own centre.
"""

from __future__ import annotations

import numpy as np

from fmr.metrics.verification import cosine_to_degrees, score_histogram

ANGLE_BINS = 90  # 2-degree bins over [0, 180] by default


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def angles_to_centres(
    embeddings: np.ndarray, labels: np.ndarray, centres: np.ndarray
) -> np.ndarray:
    """Angle in degrees between each embedding (N, D) and the centre of its label.

    centres: (C, D) class centres (e.g. a margin head's weight); labels: (N,) ints in [0, C).
    Rows with a negative label (no class) get NaN. Returns (N,) float64.
    """
    labels = np.asarray(labels).reshape(-1)
    out = np.full(labels.shape, np.nan)
    known = labels >= 0
    if known.any():
        e = _unit_rows(embeddings)[known]
        c = _unit_rows(centres)[labels[known]]
        out[known] = cosine_to_degrees((e * c).sum(axis=1))
    return out


def leave_one_out_centre_angles(
    probe: np.ndarray,
    gallery: np.ndarray,
    identities,
    min_images: int = 2,
    *,
    probe_identities=None,
    probe_rows=None,
) -> np.ndarray:
    """Angle in degrees between each probe embedding and its identity's centre, estimated from
    the gallery embeddings of the identity's other images.

    gallery: (N, D) embeddings with `identities` (N,). probe: (M, D); without
    `probe_identities` the probes are the same N images (the same array for one condition,
    e.g. masked probes of an unmasked gallery otherwise); with it, `probe_identities` (M,)
    labels them and `probe_rows` (M,) gives each probe's own gallery row (-1: none), which
    is left out of its centre. Probes whose identity has fewer than `min_images` gallery
    images besides their own get NaN.
    """
    gallery_ids = np.asarray(identities).reshape(-1)
    if probe_identities is None:
        probe_ids, rows = gallery_ids, np.arange(gallery_ids.size)
    else:
        probe_ids = np.asarray(probe_identities).reshape(-1)
        rows = np.full(probe_ids.size, -1) if probe_rows is None else np.asarray(probe_rows)
    _, codes = np.unique(np.concatenate([gallery_ids, probe_ids]), return_inverse=True)
    gallery_codes, probe_codes = codes[: gallery_ids.size], codes[gallery_ids.size :]
    g = _unit_rows(gallery)
    sums = np.zeros((int(codes.max()) + 1 if codes.size else 0, g.shape[1]))
    np.add.at(sums, gallery_codes, g)
    counts = np.bincount(gallery_codes, minlength=sums.shape[0])
    own = rows >= 0
    others = sums[probe_codes]
    others[own] -= g[rows[own]]
    remaining = counts[probe_codes] - own
    angles = cosine_to_degrees((_unit_rows(probe) * _unit_rows(others)).sum(axis=1))
    angles[remaining < min_images - 1] = np.nan
    return angles


def angle_histogram(angles_deg, max_deg: float = 180.0) -> dict:
    """Counts of angles in `ANGLE_BINS` equal bins over [0, max_deg] (NaN dropped; larger angles
    land in the last bin): {"edges_deg", "counts"}."""
    angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
    angles = angles[~np.isnan(angles)]
    counts, edges = score_histogram(angles, ANGLE_BINS, (0.0, float(max_deg)))
    return {"edges_deg": edges.round(4).tolist(), "counts": counts.tolist()}
