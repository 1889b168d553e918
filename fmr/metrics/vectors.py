"""Checks and normalisation of embedding matrices shared by the metrics.

numpy only, like the rest of `fmr.metrics`.
"""

from __future__ import annotations

import numpy as np


def unit_rows(values, name: str) -> np.ndarray:
    """`values` as (N, D) float64 rows scaled to unit L2 norm.

    Raises ValueError (naming the argument `name`) for an array that is not 2-D, holds NaN or
    infinite values, or has an all-zero row (which has no direction).
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows, dimensions), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name} has an all-zero row, which has no direction")
    return array / norms
