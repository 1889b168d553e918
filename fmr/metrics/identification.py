"""1:N identification: a probe searched in a gallery of enrolled people.

numpy only, like the rest of `fmr.metrics`. Scores are cosine similarities in [-1, 1].

Terms (ISO/IEC 19795-1, NIST FRVT 1:N):
- gallery: enrolled entries (embeddings), each labelled with its person; a person may have
  several entries. Search is by brute force (every probe against every entry) and ranks
  people, not entries: a person scores the best of their entries (`person_similarities`).
- mated probe: a probe whose person is enrolled; non-mated probe: one whose person is not.
- rank of a mated probe: 1 + the number of OTHER enrolled people scoring at least as high as
  the right one (ties count against the probe, as in `fmr.metrics.closed_set`); inf when it
  cannot be found (its image failed, or its person has no gallery entry).
- CMC, cumulative match characteristic: the share of mated probes with rank <= k, k = 1, 2...
- FPIR, false positive identification rate: the share of non-mated probes whose best gallery
  score reaches the threshold (score >= threshold).
- DIR, detection and identification rate: the share of mated probes whose right person is at
  rank 1 with a score at or above the threshold.

Failed images (no face found, unreadable) follow `fmr.eval.protocols.pair_metrics`, which
scores a pair with a failed image `FAILED_SCORE` = -1, the least similar possible: a failed
probe scores -1 against every entry, so a failed mated probe is never identified (rank inf)
and a failed non-mated probe is always rejected (its top score -1 is below every threshold
these functions choose). A gallery image that failed is not enrolled: callers leave it out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from fmr.metrics.calibration import threshold_for_far
from fmr.metrics.closed_set import true_class_rank
from fmr.metrics.vectors import unit_rows
from fmr.metrics.verification import threshold_at_far

FAILED_SCORE = -1.0  # the score of a failed probe against any entry (as pair_metrics scores it)


def comparison_far_for_fpir(fpir: float, gallery_size: int) -> float:
    """The per-comparison false accept rate that gives `fpir` against `gallery_size` entries.

    A non-mated probe is falsely identified when any of the gallery's entries scores at or above
    the threshold. Treating the comparisons as independent, FPIR = 1 - (1 - FAR) ** size, so
    FAR = 1 - (1 - FPIR) ** (1 / size). Several photos of one person are correlated, which makes
    the real FPIR lower: counting entries rather than people errs on the safe side.
    fpir: in (0, 1); gallery_size: entries (embeddings) >= 1. Returns a FAR in (0, fpir].
    """
    if not 0.0 < fpir < 1.0:
        raise ValueError(f"fpir must be in (0, 1), got {fpir}")
    if gallery_size < 1:
        raise ValueError(f"gallery_size must be at least 1, got {gallery_size}")
    # -expm1(log1p(-p) / n) keeps precision when FAR is tiny (large galleries).
    return -math.expm1(math.log1p(-fpir) / gallery_size)


def open_set_threshold(calibration: dict, fpir: float, gallery_size: int) -> dict:
    """The similarity threshold for an open-set decision at `fpir` in a gallery of
    `gallery_size` entries, read from a verification calibration (`fmr.metrics.calibration`,
    measured on validation identities: never on the people being searched).

    Returns {"threshold": cosine, "fpir": fpir, "comparison_far": the per-comparison FAR,
    "measurable": False when that FAR is below one validation impostor pair in n (the
    threshold is then the highest the calibration can support, and the real FPIR may exceed
    the target), "gallery_size": gallery_size}.
    """
    far = comparison_far_for_fpir(fpir, gallery_size)
    floor = 1.0 / float(calibration["n_impostor"])
    return {
        "threshold": threshold_for_far(calibration, max(far, floor)),
        "fpir": float(fpir),
        "comparison_far": far,
        "measurable": far >= floor,
        "gallery_size": int(gallery_size),
    }


# --------------------------------------------------------------------------------------------
# Search: similarities, people, ranks
# --------------------------------------------------------------------------------------------


def gallery_similarities(probes, gallery, probe_ok=None) -> np.ndarray:
    """Cosine similarity of every probe to every gallery entry, by brute force.

    probes: (P, D); gallery: (G, D), every row embedded (rows are L2-normalised here, so any
    norm will do; an all-zero gallery row raises ValueError). probe_ok: (P,) bool, False for
    probes whose image failed (their row may hold anything, zeros included): they score
    `FAILED_SCORE` (-1) against every entry. Returns (P, G) float64 in [-1, 1].
    """
    probes = np.asarray(probes, dtype=np.float64)
    if probes.ndim != 2:
        raise ValueError(f"probes must be a 2-D array (P, D), got shape {probes.shape}")
    ok = (np.ones(probes.shape[0], dtype=bool) if probe_ok is None
          else np.asarray(probe_ok, dtype=bool).reshape(-1))
    if ok.size != probes.shape[0]:
        raise ValueError(f"{probes.shape[0]} probes but {ok.size} probe_ok flags")
    unit_gallery = unit_rows(gallery, "gallery")
    if unit_gallery.shape[1] != probes.shape[1]:
        raise ValueError(
            f"probes have {probes.shape[1]} dimensions but the gallery has {unit_gallery.shape[1]}"
        )
    scores = np.full((probes.shape[0], unit_gallery.shape[0]), FAILED_SCORE)
    if ok.any():
        scores[ok] = np.clip(unit_rows(probes[ok], "probes") @ unit_gallery.T, -1.0, 1.0)
    return scores


def person_similarities(similarities, gallery_labels) -> tuple[np.ndarray, np.ndarray]:
    """Each probe's best score per gallery person (the max over that person's entries).

    similarities: (P, G) scores of probes against entries; gallery_labels: (G,) the person of
    each entry (ints or strings). Returns (scores (P, K) float64, people (K,)): the K distinct
    labels sorted (`np.unique`), column k holding the best score of people[k]'s entries.
    """
    scores = np.asarray(similarities, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"similarities must be (P, G), got shape {scores.shape}")
    labels = np.asarray(gallery_labels).reshape(-1)
    if labels.size != scores.shape[1]:
        raise ValueError(f"{scores.shape[1]} gallery columns but {labels.size} gallery labels")
    if labels.size == 0:
        raise ValueError("the gallery is empty")
    people, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inverse[order]) != 0])
    if scores.shape[0] == 0:
        return np.empty((0, people.size)), people
    return np.maximum.reduceat(scores[:, order], starts, axis=1), people


def mated_ranks(similarities, gallery_labels, probe_labels, probe_ok=None) -> np.ndarray:
    """The 1-based rank of each probe's own person among the gallery's people.

    similarities: (P, G) scores against entries; gallery_labels: (G,) person of each entry;
    probe_labels: (P,) person of each probe; probe_ok: (P,) bool, False where the probe's
    image failed. People are ranked by their best entry (`person_similarities`); rank = 1 +
    the number of other people scoring at least as high as the right one (ties count
    against: a probe scoring every person the same ranks last, never first). Returns (P,)
    float64: ranks in [1, K] for K people, inf for a failed probe or one whose person has no
    gallery entry (never identified at any rank).
    """
    scores, people = person_similarities(similarities, gallery_labels)
    probe_labels = np.asarray(probe_labels).reshape(-1)
    if probe_labels.size != scores.shape[0]:
        raise ValueError(f"{scores.shape[0]} probes but {probe_labels.size} probe labels")
    ok = (np.ones(probe_labels.size, dtype=bool) if probe_ok is None
          else np.asarray(probe_ok, dtype=bool).reshape(-1))
    if ok.size != probe_labels.size:
        raise ValueError(f"{probe_labels.size} probes but {ok.size} probe_ok flags")
    column = np.clip(np.searchsorted(people, probe_labels), 0, people.size - 1)
    found = ok & (people[column] == probe_labels)
    ranks = np.full(probe_labels.size, np.inf)
    if found.any():
        ranks[found] = true_class_rank(scores[found], column[found]) + 1.0
    return ranks


def top_matches(similarities, gallery_labels) -> tuple[np.ndarray, np.ndarray]:
    """Each probe's best-scoring gallery person and that score (an open-set search's answer).

    similarities: (P, G); gallery_labels: (G,). Returns (top_scores (P,) float64, top_people
    (P,)): the highest score over all entries, and its person (among tied people, the first
    in sorted label order; `mated_ranks` counts such ties against the probe).
    """
    scores, people = person_similarities(similarities, gallery_labels)
    if scores.shape[0] == 0:
        return np.empty(0), people[:0]
    best = np.argmax(scores, axis=1)
    return scores[np.arange(scores.shape[0]), best], people[best]


def _ranks(ranks) -> np.ndarray:
    ranks = np.asarray(ranks, dtype=np.float64).reshape(-1)
    if ranks.size == 0:
        raise ValueError("no mated probes")
    if np.isnan(ranks).any() or (ranks < 1).any():
        raise ValueError("ranks are 1-based (>= 1, inf for never identified)")
    return ranks


def rank_k_rate(ranks, k: int) -> float:
    """The share of mated probes identified within the first k people (rank <= k).

    ranks: (P,) 1-based ranks from `mated_ranks` (inf: never identified, counted as a miss).
    k >= 1. Returns a fraction in [0, 1]; rank 1 is the top-1 identification rate.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return float(np.mean(_ranks(ranks) <= k))


def cmc_curve(ranks, max_rank: int) -> np.ndarray:
    """The cumulative match characteristic: `rank_k_rate` for k = 1 .. max_rank.

    ranks: (P,) from `mated_ranks`. Returns (max_rank,) float64 fractions, non-decreasing;
    the last is 1 when every probe is embedded, its person enrolled, and max_rank >= K.
    """
    if max_rank < 1:
        raise ValueError(f"max_rank must be at least 1, got {max_rank}")
    ranks = _ranks(ranks)
    counts = np.bincount(np.minimum(ranks[np.isfinite(ranks)], max_rank + 1).astype(np.int64),
                         minlength=max_rank + 2)
    return np.cumsum(counts[1 : max_rank + 1]) / ranks.size


# --------------------------------------------------------------------------------------------
# Open set: thresholds, FPIR, DIR
# --------------------------------------------------------------------------------------------


def _top_scores(values, name: str) -> np.ndarray:
    scores = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(scores).any():
        raise ValueError(f"{name} contains NaN")
    return scores


def fpir_threshold(nonmated_top_scores, fpir: float) -> float:
    """The lowest threshold whose FPIR on these non-mated probes is at most `fpir`.

    nonmated_top_scores: (N,) each non-mated probe's best gallery score (`FAILED_SCORE` for a
    failed probe); fpir: in (0, 1). At most m = floor(fpir * N) probes may be falsely
    identified (score >= threshold): the threshold is the next float above the (m+1)-th
    highest score, so ties there are all rejected and the achieved FPIR is <= fpir (lower
    when ties straddle the cut; m = 0 puts it just above the highest score). The same rule
    as `fmr.metrics.threshold_at_far`.
    """
    if not 0.0 < fpir < 1.0:
        raise ValueError(f"fpir must be in (0, 1), got {fpir}")
    scores = _top_scores(nonmated_top_scores, "nonmated_top_scores")
    if scores.size == 0:
        raise ValueError("need at least one non-mated probe")
    return float(threshold_at_far(scores, fpir))


def fpir_at_threshold(nonmated_top_scores, threshold: float) -> float:
    """The share of non-mated probes whose best gallery score is >= threshold.

    nonmated_top_scores: (N,), N >= 1. Returns a fraction in [0, 1].
    """
    scores = _top_scores(nonmated_top_scores, "nonmated_top_scores")
    if scores.size == 0:
        raise ValueError("need at least one non-mated probe")
    return float(np.mean(scores >= threshold))


def dir_at_threshold(mated_top_person_correct, mated_top_scores, threshold: float) -> float:
    """Detection and identification rate: the share of mated probes whose best gallery
    person is their own (`mated_ranks` == 1: ties count against) AND whose best score is >=
    threshold.

    mated_top_person_correct: (M,) bool; mated_top_scores: (M,) each probe's best score (for a
    correct probe, its own person's). M >= 1. Returns a fraction in [0, 1].
    """
    correct = np.asarray(mated_top_person_correct, dtype=bool).reshape(-1)
    scores = _top_scores(mated_top_scores, "mated_top_scores")
    if correct.size != scores.size:
        raise ValueError(f"{correct.size} correctness flags but {scores.size} top scores")
    if correct.size == 0:
        raise ValueError("need at least one mated probe")
    return float(np.mean(correct & (scores >= threshold)))


@dataclass(frozen=True)
class OpenSetPoint:
    """One open-set operating point: at `threshold`, the non-mated probes' measured `fpir`
    (<= `fpir_target` when the threshold was set on them) and the mated probes' `dir`;
    fractions in [0, 1] over `n_mated` and `n_nonmated` probes. measurable: False when
    fpir_target * n_nonmated < 1 (no false positive allowed: the threshold sits just above
    the highest non-mated score)."""

    fpir_target: float
    threshold: float
    fpir: float
    dir: float
    n_mated: int
    n_nonmated: int
    measurable: bool

    def to_dict(self) -> dict:
        return asdict(self)


def dir_at_fpir(
    mated_top_person_correct,
    mated_top_scores,
    nonmated_top_scores,
    fpir_targets: float | Sequence[float] = (0.01, 0.1),
) -> list[OpenSetPoint]:
    """DIR at each target FPIR, the threshold set empirically on the non-mated probes
    (`fpir_threshold`), and the FPIR achieved there.

    mated_top_person_correct, mated_top_scores: (M,) as for `dir_at_threshold`;
    nonmated_top_scores: (N,). Returns one `OpenSetPoint` per target, in order.
    """
    nonmated = _top_scores(nonmated_top_scores, "nonmated_top_scores")
    targets = [float(fpir_targets)] if np.isscalar(fpir_targets) else [float(t) for t in
                                                                       fpir_targets]
    points = []
    for target in targets:
        threshold = fpir_threshold(nonmated, target)
        points.append(OpenSetPoint(
            fpir_target=target,
            threshold=threshold,
            fpir=fpir_at_threshold(nonmated, threshold),
            dir=dir_at_threshold(mated_top_person_correct, mated_top_scores, threshold),
            n_mated=int(np.asarray(mated_top_scores).size),
            n_nonmated=int(nonmated.size),
            measurable=math.floor(target * nonmated.size + 1e-9) >= 1,
        ))
    return points
