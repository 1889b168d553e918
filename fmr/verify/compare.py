"""Comparing two embeddings: similarity, angle, calibrated verdict and how sure it is."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from fmr.metrics import cosine_to_degrees
from fmr.metrics.calibration import decide, far_at_score, frr_at_score


@dataclass(frozen=True)
class Comparison:
    """The answer for one pair of faces and one model.

    similarity: cosine similarity in [-1, 1]. angle_deg: the angle between the embeddings in
    degrees. threshold: the calibrated score at or above which the verdict is "same" (None when
    the model has no calibration). verdict: "same", "different" or "inconclusive".
    far_at_score: the share of different-person validation pairs that score this high or higher
    (how often a "same" at this score would be a stranger); frr_at_score: the share of
    same-person validation pairs that score lower (how often a "different" here would miss).
    band: the inconclusive band [low, high); threshold_far: the FAR the threshold is set for.
    calibration: "unmasked" (pairs of unmasked validation photos) or "masked" (a masked
    validation photo against an unmasked one), the one the verdict used; calibration_reason:
    why, in words (e.g. "photo B wears a mask (detected, 97%)").
    """

    similarity: float
    angle_deg: float
    threshold: float | None
    verdict: str
    far_at_score: float | None
    frr_at_score: float | None
    band: tuple[float, float] | None = None
    threshold_far: float | None = None
    n_impostor: int | None = None
    n_genuine: int | None = None
    note: str = ""
    calibration: str = "unmasked"  # which calibration decided: see `compare`
    calibration_reason: str = ""

    def to_dict(self) -> dict:
        data = asdict(self)
        data["band"] = list(self.band) if self.band is not None else None
        return data

    def explanation(self) -> str:
        """How sure the verdict is, in words."""
        if self.threshold is None:
            return self.note
        impostors = "different-person validation pairs"
        genuines = "same-person validation pairs"
        if self.verdict == "same":
            if self.far_at_score == 0:
                return f"none of {self.n_impostor:,} {impostors} score this high"
            return (
                f"{_share(self.far_at_score, impostors)} score this high or higher "
                "(how often a stranger gets this score)"
            )
        if self.verdict == "different":
            if self.frr_at_score == 0:
                return f"none of {self.n_genuine:,} {genuines} score this low"
            return (
                f"{_share(self.frr_at_score, genuines)} score this low or lower "
                "(how often the same person gets this score)"
            )
        return (
            f"between the two: {_share(self.far_at_score, impostors)} score this high or higher, "
            f"and {_share(self.frr_at_score, genuines)} score this low or lower"
        )


def _share(rate: float | None, of: str) -> str:
    """ "1.2% of <of>" or "1 in 838 <of>"."""
    if rate is None:
        return f"an unknown share of {of}"
    if rate >= 0.01:
        return f"{rate * 100:.1f}% of {of}"
    if rate <= 0:
        return f"none of the {of}"
    return f"1 in {round(1 / rate):,} {of}"


def compare(
    emb_a: np.ndarray,
    emb_b: np.ndarray,
    embedder,
    threshold_far: float | None = None,
    *,
    masked: bool = False,
    mask_reason: str = "",
) -> Comparison:
    """Compare two unit-norm embeddings with the calibration of `embedder`.

    embedder: an `Embedder` (its card's calibration is used) or a calibration dict from
    `fmr.metrics.calibration.calibrate`. threshold_far: decide at the threshold for this FAR
    instead of the calibrated one (e.g. 1e-4 for a stricter "same"). masked: a photo of the
    pair wears a mask (synthetic, or found by the mask detector: `fmr.verify.mask_detector.
    mask_decision`); the embedder's masked calibration decides when it has one (a masked face
    scores lower against its owner, so the unmasked threshold would call too many pairs
    "different"). mask_reason: why the pair counts as masked or not (`calibration_reason`).
    """
    a = np.asarray(emb_a, dtype=np.float64).reshape(-1)
    b = np.asarray(emb_b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"embeddings of different sizes: {a.size} and {b.size}")
    similarity = float(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1.0, 1.0))
    angle = float(cosine_to_degrees(similarity))
    used = "unmasked"
    reason = mask_reason or ("a photo of the pair wears a mask" if masked
                             else "no mask on either photo")
    if isinstance(embedder, dict):
        calibration = embedder
        reason = "the calibration given"
    elif masked and getattr(embedder, "calibration_masked", None):
        calibration, used = embedder.calibration_masked, "masked"
    else:
        calibration = embedder.calibration
        if masked:
            reason += ", but this model has no masked calibration"
    if not calibration:
        name = getattr(embedder, "name", "this model")
        family = getattr(embedder, "family", "")
        target = (
            "--backbone dlib"
            if family == "dlib"
            else f"--checkpoint {getattr(embedder, 'path', 'FILE')}"
        )
        return Comparison(
            similarity,
            angle,
            None,
            "inconclusive",
            None,
            None,
            calibration_reason=reason,
            note=f"{name} has no calibration, so its score cannot be turned into a verdict; "
            f"calibrate it with `fmr eval --calibrate-only {target} --out DIR`",
        )
    verdict, threshold, low = decide(calibration, similarity, threshold_far)
    return Comparison(
        similarity=similarity,
        angle_deg=angle,
        threshold=threshold,
        verdict=verdict,
        far_at_score=far_at_score(calibration, similarity),
        frr_at_score=frr_at_score(calibration, similarity),
        band=(low, threshold),
        threshold_far=float(
            threshold_far if threshold_far is not None else calibration["target_far"]
        ),
        n_impostor=int(calibration["n_impostor"]),
        n_genuine=int(calibration["n_genuine"]),
        calibration=used,
        calibration_reason=reason,
    )
