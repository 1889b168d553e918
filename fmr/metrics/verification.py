"""Verification metrics: small pure functions on similarity scores, in the style of scikit-learn.
(Closed-set identification against class centres is in `fmr.metrics.closed_set`.)

Conventions shared by every function here:

- A *score* is a cosine similarity in [-1, 1] (any real number works); higher means "more alike".
- A pair is accepted as "same person" when ``score >= threshold``.
- ``genuine``: scores of same-person pairs; ``impostor``: scores of different-person pairs.
  Both are 1-D arrays; they are never modified.
- FAR (false accept rate) at threshold t: the fraction of impostor scores >= t.
  FRR (false reject rate): the fraction of genuine scores < t. TAR = 1 - FRR.
- Rates are fractions in [0, 1]; angles are in degrees.

Impostor sets are large (all cross-identity pairs of a few thousand images are millions of
scores), so everything works on sorted arrays with `np.searchsorted`: no Python loops over pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_FAR_TARGETS = (1e-1, 1e-2, 1e-3, 1e-4)


def _scores(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(array).any():
        raise ValueError(f"{name} contains NaN scores; drop or replace failed pairs first")
    return array


def _labels(values, size: int) -> np.ndarray:
    array = np.asarray(values).reshape(-1).astype(bool)
    if array.size != size:
        raise ValueError(f"{size} scores but {array.size} labels")
    return array


# --------------------------------------------------------------------------------------------
# Accuracy and the LFW k-fold protocol
# --------------------------------------------------------------------------------------------


def accuracy_at_threshold(scores, labels, threshold: float) -> float:
    """Fraction of pairs classified correctly by ``score >= threshold`` (labels: True = same)."""
    scores = _scores(scores, "scores")
    labels = _labels(labels, scores.size)
    if scores.size == 0:
        raise ValueError("no pairs to score")
    return float(np.mean((scores >= threshold) == labels))


def best_threshold(scores, labels) -> tuple[float, float]:
    """The threshold with the highest accuracy on these pairs, and that accuracy.

    scores: (N,) similarities; labels: (N,) bool, True for same-person pairs. Candidate
    thresholds are the midpoints between consecutive distinct scores, the lowest score (accept
    all) and the next float above the highest (reject all), so every distinct decision is tried
    exactly once. Among equally accurate candidates the median one (by position) is returned,
    which keeps the threshold in the middle of a flat optimum rather than at its edge.
    Returns (threshold, accuracy in [0, 1]).
    """
    scores = _scores(scores, "scores")
    labels = _labels(labels, scores.size)
    n = scores.size
    if n == 0:
        raise ValueError("no pairs to choose a threshold on")
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], labels[order]
    # cut i: pairs s[i:] are accepted. correct(i) = genuine in s[i:] + impostors in s[:i].
    genuine_at_or_above = np.concatenate([np.cumsum(y[::-1])[::-1], [0]])
    impostor_below = np.concatenate([[0], np.cumsum(~y)])
    correct = genuine_at_or_above + impostor_below
    # A cut between two equal scores is not a decision a threshold can make.
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = s[1:] > s[:-1]
    candidates = np.flatnonzero(valid & (correct == correct[valid].max()))
    cut = int(candidates[(candidates.size - 1) // 2])
    if cut == 0:
        threshold = s[0]
    elif cut == n:
        threshold = np.nextafter(s[-1], np.inf)
    else:
        threshold = (s[cut - 1] + s[cut]) / 2
    return float(threshold), float(correct[cut] / n)


@dataclass(frozen=True)
class KFoldAccuracy:
    """Result of `kfold_accuracy`. accuracies and thresholds: one per fold, in `folds` order."""

    mean: float
    std: float
    accuracies: tuple[float, ...]
    thresholds: tuple[float, ...]
    folds: tuple[int, ...]

    def to_dict(self) -> dict:
        return {
            "mean": self.mean,
            "std": self.std,
            "folds": [
                {"fold": f, "accuracy": a, "threshold": t}
                for f, a, t in zip(self.folds, self.accuracies, self.thresholds, strict=True)
            ],
        }


def kfold_accuracy(scores, labels, n_folds: int = 10, folds=None) -> KFoldAccuracy:
    """LFW-protocol accuracy: each fold is scored at the threshold chosen on the other folds.

    scores: (N,) similarities; labels: (N,) bool (True = same person). folds: optional (N,) fold
    number of each pair (for LFW, the folds of the pairs file); without it the pairs are split in
    input order into `n_folds` contiguous blocks, as the pairs file lays them out. For each fold,
    `best_threshold` runs on the pairs of all other folds only; the fold's accuracy is measured
    at that threshold. `std` is the population standard deviation over folds (ddof=0, as in the
    LFW and insightface reports).
    """
    scores = _scores(scores, "scores")
    labels = _labels(labels, scores.size)
    if folds is None:
        if not 2 <= n_folds <= scores.size:
            raise ValueError(f"cannot split {scores.size} pairs into {n_folds} folds")
        fold_of = np.arange(scores.size) * n_folds // scores.size
    else:
        fold_of = np.asarray(folds).reshape(-1)
        if fold_of.size != scores.size:
            raise ValueError(f"{scores.size} scores but {fold_of.size} fold numbers")
    fold_ids = np.unique(fold_of)
    if fold_ids.size < 2:
        raise ValueError("the k-fold protocol needs at least two folds")
    accuracies, thresholds = [], []
    for fold in fold_ids:
        test = fold_of == fold
        threshold, _ = best_threshold(scores[~test], labels[~test])
        thresholds.append(threshold)
        accuracies.append(accuracy_at_threshold(scores[test], labels[test], threshold))
    acc = np.array(accuracies)
    return KFoldAccuracy(
        mean=float(acc.mean()),
        std=float(acc.std()),
        accuracies=tuple(accuracies),
        thresholds=tuple(thresholds),
        folds=tuple(int(f) for f in fold_ids),
    )


# --------------------------------------------------------------------------------------------
# Error rates, ROC, TAR at FAR, EER
# --------------------------------------------------------------------------------------------


def error_rates(genuine, impostor, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """FAR and FRR at each threshold.

    genuine (G,), impostor (I,) scores; thresholds: scalar or (T,). Returns (far, frr), each
    (T,) float64: far = fraction of impostors >= t, frr = fraction of genuine < t.
    """
    genuine = np.sort(_scores(genuine, "genuine"))
    impostor = np.sort(_scores(impostor, "impostor"))
    if genuine.size == 0 or impostor.size == 0:
        raise ValueError("need at least one genuine and one impostor score")
    t = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    far = (impostor.size - np.searchsorted(impostor, t, side="left")) / impostor.size
    frr = np.searchsorted(genuine, t, side="left") / genuine.size
    return far, frr


def roc_curve(genuine, impostor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every operating point: (far, tar, thresholds), thresholds decreasing.

    One point per distinct score (accepting pairs with score >= threshold), plus a first point
    above every score (far = tar = 0). far and tar are non-decreasing; the last point has far =
    tar = 1. For millions of impostors this has millions of points: plot `roc_at_far` instead.
    """
    genuine = _scores(genuine, "genuine")
    impostor = _scores(impostor, "impostor")
    distinct = np.unique(np.concatenate([genuine, impostor]))[::-1]
    thresholds = np.concatenate([[np.nextafter(distinct[0], np.inf)], distinct])
    far, frr = error_rates(genuine, impostor, thresholds)
    return far, 1.0 - frr, thresholds


def threshold_at_far(impostor, target_far) -> np.ndarray | float:
    """The lowest threshold whose FAR is at most `target_far` on these impostor scores.

    With I impostor scores, at most floor(target_far * I) of them may be accepted: the threshold
    sits just above the next one (the next float up), so ties never push the FAR over the
    target. target_far: scalar or (T,) in [0, 1]; returns the same shape.
    """
    impostor = np.sort(_scores(impostor, "impostor"))[::-1]
    if impostor.size == 0:
        raise ValueError("need at least one impostor score")
    targets = np.asarray(target_far, dtype=np.float64)
    if ((targets < 0) | (targets > 1)).any():
        raise ValueError("target FAR must be in [0, 1]")
    allowed = np.floor(targets * impostor.size + 1e-9).astype(np.int64)  # false accepts allowed
    # allowed == I: every impostor may be accepted, so the lowest score itself is the threshold.
    first_rejected = impostor[np.minimum(allowed, impostor.size - 1)]
    result = np.where(allowed >= impostor.size, impostor[-1], np.nextafter(first_rejected, np.inf))
    return float(result) if result.ndim == 0 else result


@dataclass(frozen=True)
class OperatingPoint:
    """One TAR-at-FAR point. far/tar/frr are measured at `threshold` (far <= far_target).

    measurable: False when there are too few impostor scores for the target (fewer than one
    false accept would be allowed), in which case the point is the reject-nothing-more bound.
    """

    far_target: float
    threshold: float
    far: float
    tar: float
    frr: float
    measurable: bool

    def to_dict(self) -> dict:
        return asdict(self)


def tar_at_far(
    genuine, impostor, far_targets: Sequence[float] = DEFAULT_FAR_TARGETS
) -> list[OperatingPoint]:
    """True accept rate at each target FAR, with the threshold that achieves it.

    genuine (G,), impostor (I,) scores. For each target, the threshold is `threshold_at_far`
    on the impostors; the reported far is the one measured there (<= the target).
    """
    impostor = _scores(impostor, "impostor")
    targets = np.asarray(list(far_targets), dtype=np.float64)
    thresholds = np.atleast_1d(threshold_at_far(impostor, targets))
    far, frr = error_rates(genuine, impostor, thresholds)
    return [
        OperatingPoint(
            far_target=float(target),
            threshold=float(t),
            far=float(fa),
            tar=float(1.0 - fr),
            frr=float(fr),
            measurable=bool(target * impostor.size >= 1.0),
        )
        for target, t, fa, fr in zip(targets, thresholds, far, frr, strict=True)
    ]


def roc_at_far(genuine, impostor, far_grid=None) -> dict[str, np.ndarray]:
    """The ROC sampled at log-spaced FARs, for plots with a log-scale FAR axis.

    far_grid defaults to 10 points per decade from 1/I (the smallest measurable FAR with I
    impostors) up to 1. Returns arrays {"far_target", "far", "tar", "threshold"}, each (K,).
    """
    impostor = _scores(impostor, "impostor")
    if far_grid is None:
        low = np.floor(np.log10(1.0 / impostor.size) * 10) / 10
        far_grid = 10.0 ** np.arange(low, 0.0 + 1e-9, 0.1)
        far_grid = far_grid[far_grid * impostor.size >= 1.0 - 1e-9]
    far_grid = np.asarray(far_grid, dtype=np.float64)
    thresholds = np.atleast_1d(threshold_at_far(impostor, np.clip(far_grid, 0.0, 1.0)))
    far, frr = error_rates(genuine, impostor, thresholds)
    return {"far_target": far_grid, "far": far, "tar": 1.0 - frr, "threshold": thresholds}


def equal_error_rate(genuine, impostor) -> tuple[float, float]:
    """The equal error rate and the threshold where FAR = FRR.

    Sweeping the threshold down through every distinct score, FAR rises from 0 and FRR falls
    to 0; the EER is where the two meet, interpolated linearly between the two operating points
    on either side of the crossing. Returns (eer in [0, 1], threshold). Perfectly separated
    scores give 0; identical genuine and impostor scores give 0.5.
    """
    far, tar, thresholds = roc_curve(genuine, impostor)
    frr = 1.0 - tar
    diff = far - frr  # -1 at the top threshold, +1 at the bottom: it crosses zero once.
    i = int(np.argmax(diff >= 0))
    if diff[i] == 0 or i == 0:
        return float(far[i]), float(thresholds[i])
    alpha = -diff[i - 1] / (diff[i] - diff[i - 1])
    eer = far[i - 1] + alpha * (far[i] - far[i - 1])
    threshold = thresholds[i - 1] + alpha * (thresholds[i] - thresholds[i - 1])
    return float(eer), float(threshold)


# --------------------------------------------------------------------------------------------
# Score distributions and angles
# --------------------------------------------------------------------------------------------


def score_histogram(
    scores, bins: int = 100, value_range=(-1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Counts (bins,) int64 and edges (bins + 1,) of scores; values outside the range are clipped
    into the end bins so every score is counted."""
    scores = _scores(scores, "scores")
    low, high = value_range
    clipped = np.clip(scores, low, high)
    counts, edges = np.histogram(clipped, bins=bins, range=(low, high))
    return counts.astype(np.int64), edges


def cosine_to_degrees(similarity):
    """Angle in degrees between unit vectors with this cosine similarity (clipped to [-1, 1])."""
    return np.degrees(np.arccos(np.clip(np.asarray(similarity, dtype=np.float64), -1.0, 1.0)))


def angle_statistics(angles_deg) -> dict[str, float]:
    """Summary of angles in degrees: count, mean, std, min, 5th/50th/95th percentile, max."""
    angles = _scores(angles_deg, "angles")
    if angles.size == 0:
        return {"count": 0}
    p5, p50, p95 = np.percentile(angles, [5, 50, 95])
    return {
        "count": int(angles.size),
        "mean": float(angles.mean()),
        "std": float(angles.std()),
        "min": float(angles.min()),
        "p5": float(p5),
        "median": float(p50),
        "p95": float(p95),
        "max": float(angles.max()),
    }


# --------------------------------------------------------------------------------------------
# All pairs of a set of embeddings
# --------------------------------------------------------------------------------------------


def all_pair_scores(
    embeddings: np.ndarray,
    identities,
    probe_embeddings: np.ndarray | None = None,
    *,
    probe_identities=None,
    probe_rows=None,
    block_size: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor cosine scores over all pairs of a set of images.

    embeddings: (N, D) unit-norm rows, one per image (the gallery); identities: (N,) labels.
    Without `probe_embeddings`, every unordered pair {i, j} (i < j) is scored once.
    With `probe_embeddings` (M, D), images in another condition (say masked): every ordered
    pair (probe, gallery image) is scored, except a probe against its own gallery image.
    Without `probe_identities` the probes are the same N images in the same order; otherwise
    `probe_identities` (M,) labels them and `probe_rows` (M,) gives each probe's own gallery
    row (-1 when it has none). Same identity -> genuine, otherwise impostor.
    Works in row blocks of `block_size`, one matrix product each.
    Returns (genuine, impostor) float32 arrays.
    """
    gallery = np.ascontiguousarray(embeddings, dtype=np.float32)
    gallery_ids = np.asarray(identities).reshape(-1)
    n = gallery.shape[0]
    if gallery_ids.size != n:
        raise ValueError(f"{n} embeddings but {gallery_ids.size} identities")
    if probe_embeddings is None:
        probes, probe_ids, own_row = gallery, gallery_ids, np.arange(n)
    else:
        probes = np.ascontiguousarray(probe_embeddings, dtype=np.float32)
        if probe_identities is None:
            probe_ids, own_row = gallery_ids, np.arange(n)
        else:
            probe_ids = np.asarray(probe_identities).reshape(-1)
            rows = np.full(probe_ids.size, -1) if probe_rows is None else probe_rows
            own_row = np.asarray(rows).reshape(-1)
        if (
            not probes.shape[0] == probe_ids.size == own_row.size
            or probes.shape[1:] != gallery.shape[1:]
        ):
            raise ValueError(
                f"probe embeddings {probes.shape}, {probe_ids.size} probe identities and "
                f"{own_row.size} rows do not match each other or the gallery {gallery.shape}"
            )
    _, codes = np.unique(np.concatenate([gallery_ids, probe_ids]), return_inverse=True)
    gallery_codes, probe_codes = codes[:n], codes[n:]
    columns = np.arange(n)
    genuine_parts, impostor_parts = [], []
    for start in range(0, probes.shape[0], block_size):
        stop = min(probes.shape[0], start + block_size)
        rows = own_row[start:stop]
        scores = probes[start:stop] @ gallery.T
        if probe_embeddings is None:
            keep = columns[None, :] > rows[:, None]
        else:
            keep = columns[None, :] != rows[:, None]
        same = probe_codes[start:stop, None] == gallery_codes[None, :]
        genuine_parts.append(scores[keep & same])
        impostor_parts.append(scores[keep & ~same])
    empty = np.zeros(0, np.float32)
    return (
        np.concatenate(genuine_parts) if genuine_parts else empty,
        np.concatenate(impostor_parts) if impostor_parts else empty,
    )
