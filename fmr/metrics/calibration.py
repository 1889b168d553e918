"""Calibration: from validation scores to a threshold, an inconclusive band and "how sure".

`calibrate` turns the genuine and impostor scores of a validation split into a small
JSON-serialisable dict that goes into a checkpoint's model card (`card.calibration`). Everything
`fmr verify` and the app say about one score comes from that dict alone:

- threshold: the lowest score whose false accept rate (FAR) on the validation impostors is at
  most `target_far`. A pair scoring at or above it is "same".
- inconclusive band [low, threshold): scores where both answers are risky. Calling the pair
  "same" would accept more than `target_far` of impostors, and calling it "different" would
  reject more than `inconclusive_frr` of genuine pairs (the fraction of same-person pairs that
  score below `low`). Below `low` the verdict is "different". When the model separates the two
  classes well the band is empty.
- far_at_score / frr_at_score: the validation FAR and FRR at any score, interpolated between
  exact points of the empirical curves (stored at 10 points per decade of FAR or FRR).
- compact histograms of both score distributions (for the app's small chart).

Calibrate on a validation split of training-side identities, never on evaluation data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fmr.metrics.verification import (
    DEFAULT_FAR_TARGETS,
    equal_error_rate,
    error_rates,
    score_histogram,
    tar_at_far,
    threshold_at_far,
)

CALIBRATION_VERSION = 1
HISTOGRAM_BINS = 100
HISTOGRAM_STEP = 0.05  # the histogram starts at a multiple of this below the lowest score
DEFAULT_TARGET_FAR = 1e-3
DEFAULT_INCONCLUSIVE_FRR = 0.05
VERDICTS = ("same", "different", "inconclusive")


def _log_levels(count: int) -> np.ndarray:
    """Rates from 1 down to 1/count, 10 per decade (the finest `count` scores can tell apart)."""
    decades = math.log10(max(count, 1))
    steps = np.arange(0, math.floor(decades * 10 + 1e-9) + 1)
    return 10.0 ** (-steps / 10.0)


def _short(rates: np.ndarray) -> list[float]:
    """Rates to 6 significant digits (the card stays readable)."""
    return [float(f"{r:.6g}") for r in rates]


def _curve_points(genuine: np.ndarray, impostor: np.ndarray) -> tuple[dict, dict]:
    """Exact (score, FAR) and (score, FRR) points, at log-spaced rates, scores increasing."""
    # Level 0 adds the point just above every impostor (FAR 0).
    far_levels = np.append(_log_levels(impostor.size), 0.0)
    far_thresholds = np.unique(np.atleast_1d(threshold_at_far(impostor, far_levels)))
    far, _ = error_rates(genuine, impostor, far_thresholds)
    # FRR level r: the score below which a fraction r of genuine pairs lie (the r-quantile).
    sorted_genuine = np.sort(genuine)
    levels = _log_levels(genuine.size)
    index = np.clip(np.ceil(levels * genuine.size).astype(np.int64), 0, genuine.size - 1)
    index = np.append(index, 0)  # the lowest genuine score: FRR 0
    frr_thresholds = np.unique(sorted_genuine[index])
    _, frr = error_rates(genuine, impostor, frr_thresholds)
    far_curve = {"score": far_thresholds.tolist(), "far": _short(far)}
    frr_curve = {"score": frr_thresholds.tolist(), "frr": _short(frr)}
    return far_curve, frr_curve


def calibrate(
    genuine_scores,
    impostor_scores,
    target_far: float = DEFAULT_TARGET_FAR,
    *,
    inconclusive_frr: float = DEFAULT_INCONCLUSIVE_FRR,
    far_targets: Sequence[float] = DEFAULT_FAR_TARGETS,
    measured_on: str = "",
) -> dict:
    """Calibrate a model from its validation scores.

    genuine_scores (G,), impostor_scores (I,): cosine similarities of same-person and
    different-person validation pairs (impostors: ideally all cross-identity pairs of the
    validation images, so small FARs are measurable). target_far: the FAR the threshold is set
    for. inconclusive_frr: the share of genuine pairs allowed below the "different" edge of the
    inconclusive band. measured_on: a short description of the data, stored as is.

    Returns a JSON-serialisable dict: threshold, far and frr at it, the inconclusive band,
    EER, TAR at `far_targets` (operating_points), the FAR/FRR curves and score histograms.
    Read it with `far_at_score`, `frr_at_score`, `threshold_for_far` and `decide`.
    """
    genuine = np.asarray(genuine_scores, dtype=np.float64).reshape(-1)
    impostor = np.asarray(impostor_scores, dtype=np.float64).reshape(-1)
    genuine, impostor = genuine[~np.isnan(genuine)], impostor[~np.isnan(impostor)]
    if genuine.size < 2 or impostor.size < 2:
        raise ValueError(
            f"calibration needs genuine and impostor scores (got {genuine.size}, {impostor.size})"
        )
    if not 0.0 < target_far < 1.0:
        raise ValueError("target_far must be between 0 and 1")
    threshold = float(threshold_at_far(impostor, target_far))
    far, frr = (float(v[0]) for v in error_rates(genuine, impostor, threshold))
    # "different" edge: the highest score below which at most inconclusive_frr of genuine lie.
    allowed = int(math.floor(inconclusive_frr * genuine.size + 1e-9))
    low = float(np.sort(genuine)[min(allowed, genuine.size - 1)])
    low = min(low, threshold)
    far_low, frr_low = (float(v[0]) for v in error_rates(genuine, impostor, low))
    eer, eer_threshold = equal_error_rate(genuine, impostor)
    far_curve, frr_curve = _curve_points(genuine, impostor)
    # From just below the lowest score to 1: the bins go where the scores are.
    lowest = min(genuine.min(), impostor.min())
    value_range = (max(-1.0, math.floor(lowest / HISTOGRAM_STEP) * HISTOGRAM_STEP), 1.0)
    genuine_hist, _ = score_histogram(genuine, HISTOGRAM_BINS, value_range)
    impostor_hist, _ = score_histogram(impostor, HISTOGRAM_BINS, value_range)
    return {
        "version": CALIBRATION_VERSION,
        "measured_on": measured_on,
        "metric": "cosine similarity; 'same' when score >= threshold",
        "n_genuine": int(genuine.size),
        "n_impostor": int(impostor.size),
        "target_far": float(target_far),
        "threshold": threshold,
        "far": far,
        "frr": frr,
        "inconclusive": {
            "low": low,
            "high": threshold,
            "frr_at_low": frr_low,
            "far_at_low": far_low,
            "max_frr": float(inconclusive_frr),
            "rule": "score >= high: same; score < low: different; otherwise inconclusive",
        },
        "eer": eer,
        "eer_threshold": eer_threshold,
        "operating_points": [p.to_dict() for p in tar_at_far(genuine, impostor, far_targets)],
        "far_curve": far_curve,
        "frr_curve": frr_curve,
        "histogram": {
            "range": [float(v) for v in value_range],
            "bins": HISTOGRAM_BINS,
            "genuine": genuine_hist.tolist(),
            "impostor": impostor_hist.tolist(),
        },
    }


def _interpolate_rate(scores: list[float], rates: list[float], score: float, floor: float) -> float:
    """Rate at `score` by linear interpolation of log10(rate) between exact curve points."""
    xs = np.asarray(scores, dtype=np.float64)
    ys = np.log10(np.maximum(np.asarray(rates, dtype=np.float64), floor))
    return float(10.0 ** np.interp(score, xs, ys))


def far_at_score(calibration: dict, score: float) -> float:
    """Validation FAR at `score`: the share of impostor pairs scoring this high or higher.

    0.0 when the score is above every validation impostor (fewer than 1 in n_impostor).
    """
    curve = calibration["far_curve"]
    n = calibration["n_impostor"]
    scores, rates = curve["score"], curve["far"]
    if score < scores[0]:
        # Below the lowest stored point: read the (coarse) histogram instead.
        return _histogram_tail(calibration, score, "impostor", upper=True)
    if score > scores[-1] or (score == scores[-1] and rates[-1] == 0):
        return 0.0
    # Below one pair in n the data cannot tell: never report less than 1/n above zero.
    return min(1.0, _interpolate_rate(scores, rates, score, 1.0 / n))


def frr_at_score(calibration: dict, score: float) -> float:
    """Validation FRR at `score`: the share of genuine pairs scoring below it (0.0 below all)."""
    curve = calibration["frr_curve"]
    n = calibration["n_genuine"]
    scores, rates = curve["score"], curve["frr"]
    if score > scores[-1]:
        return _histogram_tail(calibration, score, "genuine", upper=False)
    if score < scores[0]:
        return 0.0
    return min(1.0, _interpolate_rate(scores, rates, score, 1.0 / n))


def _histogram_tail(calibration: dict, score: float, side: str, *, upper: bool) -> float:
    """Share of `side` scores >= score (upper) or < score, from the histogram, linear in a bin."""
    hist = calibration["histogram"]
    counts = np.asarray(hist[side], dtype=np.float64)
    low, high = hist["range"]
    position = (np.clip(score, low, high) - low) / (high - low) * counts.size
    whole = int(min(position, counts.size - 1))
    fraction = position - whole
    below = counts[:whole].sum() + fraction * counts[whole]
    share = below / counts.sum()
    return float(1.0 - share if upper else share)


def threshold_for_far(calibration: dict, far: float | None = None) -> float:
    """The threshold for a target FAR: the calibrated one, a stored operating point, or the
    score where the FAR curve reaches `far` (interpolated). None: the calibrated threshold."""
    if far is None or math.isclose(far, calibration["target_far"], rel_tol=1e-9):
        return float(calibration["threshold"])
    for point in calibration.get("operating_points", []):
        if math.isclose(far, point["far_target"], rel_tol=1e-9):
            return float(point["threshold"])
    curve = calibration["far_curve"]
    scores = np.asarray(curve["score"], dtype=np.float64)
    logs = np.log10(
        np.maximum(np.asarray(curve["far"], dtype=np.float64), 0.5 / calibration["n_impostor"])
    )
    # FAR falls as the score rises: interpolate score against log FAR (reversed to increase).
    return float(np.interp(math.log10(max(far, 1e-12)), logs[::-1], scores[::-1]))


def decide(
    calibration: dict, score: float, threshold_far: float | None = None
) -> tuple[str, float, float]:
    """Verdict for one score: ("same" | "different" | "inconclusive", threshold, band low edge).

    threshold_far: a FAR other than the calibrated one (its threshold is read from the curve).
    The band's low edge stays where the genuine scores put it, capped at the threshold.
    """
    threshold = threshold_for_far(calibration, threshold_far)
    low = min(float(calibration["inconclusive"]["low"]), threshold)
    if score >= threshold:
        return "same", threshold, low
    if score < low:
        return "different", threshold, low
    return "inconclusive", threshold, low
