"""1:N identification: a probe searched in a gallery of enrolled people.

numpy only, like the rest of `fmr.metrics`. Scores are cosine similarities in [-1, 1].

Open-set terms (ISO/IEC 19795-1, NIST FRVT 1:N):
- FPIR, false positive identification rate: the share of non-mated probes (people not in the
  gallery) whose best gallery score reaches the threshold.
- DIR, detection and identification rate: the share of mated probes whose right person is at
  rank 1 with a score at or above the threshold.
"""

from __future__ import annotations

import math

from fmr.metrics.calibration import threshold_for_far


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
