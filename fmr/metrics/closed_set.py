"""Closed-set identification: embeddings against class centres (top-1 / top-5 accuracy).

numpy only, like the rest of `fmr.metrics`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from fmr.metrics.vectors import unit_rows


def class_centres(embeddings, labels, num_classes: int | None = None) -> np.ndarray:
    """The L2-normalised mean embedding of each class.

    embeddings: (N, D) float, any norm (each row is L2-normalised before averaging). labels:
    (N,) int class ids in [0, num_classes). num_classes defaults to max(labels) + 1.
    Returns (C, D) float64 unit rows; a class without embeddings raises ValueError.
    A trained model's centres are its margin head's weights; this is the same idea computed
    from data (for tests, and for models without a head).
    """
    unit = unit_rows(embeddings, "embeddings")
    labels = np.asarray(labels).reshape(-1)
    if labels.size != unit.shape[0]:
        raise ValueError(f"{unit.shape[0]} embeddings but {labels.size} labels")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be class ids >= 0")
    count = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if labels.size and labels.max() >= count:
        raise ValueError(f"label {int(labels.max())} is not below num_classes {count}")
    sums = np.zeros((count, unit.shape[1]))
    np.add.at(sums, labels, unit)
    empty = np.flatnonzero(np.bincount(labels, minlength=count) == 0)
    if empty.size:
        raise ValueError(f"classes without embeddings: {empty[:5].tolist()}")
    return unit_rows(sums, "class means")


def centre_similarities(embeddings, centres) -> np.ndarray:
    """Cosine similarity of every embedding to every class centre.

    embeddings: (N, D); centres: (C, D); neither needs unit norm (both are L2-normalised
    here). Returns (N, C) float64 in [-1, 1].
    """
    unit = unit_rows(embeddings, "embeddings")
    unit_centres = unit_rows(centres, "centres")
    if unit.shape[1] != unit_centres.shape[1]:
        raise ValueError(
            f"embeddings have {unit.shape[1]} dimensions but centres have {unit_centres.shape[1]}"
        )
    return unit @ unit_centres.T


def true_class_rank(similarities, labels) -> np.ndarray:
    """For each row, how many other classes score at least as high as its true class.

    similarities: (N, C) scores (higher = more alike); labels: (N,) true class ids in [0, C).
    Returns (N,) int64 ranks from 0 (the true class strictly best) to C - 1. Ties count
    against the true class, so a model that scores every class the same ranks last, never
    first.
    """
    scores = np.asarray(similarities, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"similarities must be (N, C), got shape {scores.shape}")
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if labels.size != scores.shape[0]:
        raise ValueError(f"{scores.shape[0]} rows of similarities but {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"labels must be class ids in [0, {scores.shape[1]})")
    true = scores[np.arange(labels.size), labels]
    return (scores >= true[:, None]).sum(axis=1).astype(np.int64) - 1


def top_k_accuracy(similarities, labels, k: int = 1) -> float:
    """Fraction of rows whose true class is among the k best-scoring classes.

    similarities: (N, C); labels: (N,) true class ids. Correct when fewer than k other
    classes score at least as high as the true class (`true_class_rank` < k; ties count
    against). k >= C makes every row correct. Returns a fraction in [0, 1].
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    ranks = true_class_rank(similarities, labels)
    if ranks.size == 0:
        raise ValueError("no rows to score")
    return float(np.mean(ranks < k))


@dataclass(frozen=True)
class ClosedSetAccuracy:
    """Result of `closed_set_accuracy`: top-1 and top-5 fractions in [0, 1] over `images`
    embeddings of `identities` distinct true classes, among `classes` candidate centres."""

    top1: float
    top5: float
    images: int
    identities: int
    classes: int

    def to_dict(self) -> dict:
        return asdict(self)


def closed_set_accuracy(embeddings, labels, centres, block_size: int = 4096) -> ClosedSetAccuracy:
    """Closed-set identification accuracy of embeddings against class centres.

    Each embedding (N, D) is assigned the classes of the centres (C, D) with the highest cosine
    similarity (both L2-normalised); labels (N,) are the true class ids in [0, C). top-1: the
    best centre is the true one; top-5: the true centre is among the best five (ties count
    against, see `true_class_rank`; with C <= 5 top-5 is 1). Rows go in blocks of
    `block_size`, one (block, C) product each.
    """
    unit_centres = unit_rows(centres, "centres")
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    unit = np.asarray(embeddings)
    if unit.ndim != 2 or unit.shape[0] != labels.size:
        raise ValueError(f"embeddings {unit.shape} and {labels.size} labels do not match")
    if labels.size == 0:
        raise ValueError("no embeddings to score")
    ranks = np.concatenate([
        true_class_rank(centre_similarities(unit[start : start + block_size], unit_centres),
                        labels[start : start + block_size])
        for start in range(0, labels.size, block_size)
    ])
    return ClosedSetAccuracy(
        top1=float(np.mean(ranks < 1)),
        top5=float(np.mean(ranks < 5)),
        images=int(labels.size),
        identities=int(np.unique(labels).size),
        classes=int(unit_centres.shape[0]),
    )
