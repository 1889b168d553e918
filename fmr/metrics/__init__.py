"""The maths of measuring a face model: numpy only (no torch, no models, no files).

- `fmr.metrics.verification`: scores of pairs -> accuracy (k-fold), ROC, TAR at FAR, EER,
  all-pair scores, angles from cosines.
- `fmr.metrics.calibration`: validation scores -> a threshold, an inconclusive band and "how
  sure" (the dict stored in a model card), and the verdict for one score.
- `fmr.metrics.angles`: angles between embeddings and class centres.
- `fmr.metrics.closed_set`: top-1 / top-5 identification against class centres.
- `fmr.metrics.identification`: 1:N search of probes in a gallery of people (brute force):
  ranks, CMC, rank-k rates; open set: FPIR thresholds, DIR at FPIR, and the threshold for a
  stated FPIR read from a validation calibration.

The most used functions are importable from here: `from fmr.metrics import kfold_accuracy`.
This is the bottom of fmr's layers: it imports nothing from fmr (see docs/architecture.md).
"""

from fmr.metrics.angles import angle_histogram, angles_to_centres, leave_one_out_centre_angles
from fmr.metrics.calibration import calibrate, decide, far_at_score, frr_at_score
from fmr.metrics.closed_set import (
    ClosedSetAccuracy,
    centre_similarities,
    class_centres,
    closed_set_accuracy,
    top_k_accuracy,
    true_class_rank,
)
from fmr.metrics.identification import (
    OpenSetPoint,
    cmc_curve,
    dir_at_fpir,
    dir_at_threshold,
    fpir_at_threshold,
    fpir_threshold,
    gallery_similarities,
    mated_ranks,
    open_set_threshold,
    person_similarities,
    rank_k_rate,
    top_matches,
)
from fmr.metrics.verification import (
    DEFAULT_FAR_TARGETS,
    KFoldAccuracy,
    OperatingPoint,
    accuracy_at_threshold,
    all_pair_scores,
    angle_statistics,
    best_threshold,
    cosine_to_degrees,
    equal_error_rate,
    error_rates,
    kfold_accuracy,
    roc_at_far,
    roc_curve,
    score_histogram,
    tar_at_far,
    threshold_at_far,
)

__all__ = [
    "DEFAULT_FAR_TARGETS",
    "ClosedSetAccuracy",
    "KFoldAccuracy",
    "OpenSetPoint",
    "OperatingPoint",
    "accuracy_at_threshold",
    "all_pair_scores",
    "angle_histogram",
    "angle_statistics",
    "angles_to_centres",
    "best_threshold",
    "calibrate",
    "centre_similarities",
    "class_centres",
    "closed_set_accuracy",
    "cmc_curve",
    "cosine_to_degrees",
    "decide",
    "dir_at_fpir",
    "dir_at_threshold",
    "equal_error_rate",
    "error_rates",
    "far_at_score",
    "fpir_at_threshold",
    "fpir_threshold",
    "frr_at_score",
    "gallery_similarities",
    "kfold_accuracy",
    "leave_one_out_centre_angles",
    "mated_ranks",
    "open_set_threshold",
    "person_similarities",
    "rank_k_rate",
    "roc_at_far",
    "roc_curve",
    "score_histogram",
    "tar_at_far",
    "threshold_at_far",
    "top_k_accuracy",
    "top_matches",
    "true_class_rank",
]
