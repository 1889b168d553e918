"""Who is this? A probe's embedding searched in a gallery: the best-matching people and the
open-set decision (that person, or "not in the gallery").

The decision logic, one implementation for `fmr gallery search` and the app:

    matches = search_people(gallery, embeddings, top=5)        # per probe, best person first
    calibration, used, why = pick_calibration(embedder, masked, mask_reason)
    result = decide(matches[0], calibration, fpir=0.01, gallery_size=len(gallery))
    # or all of it at once, for probes already embedded:
    results = identify(gallery, embeddings, embedder, masked=[...], mask_reasons=[...])

The threshold comes from the backbone's calibration (validation identities, never the gallery's
people) through `fmr.metrics.identification.open_set_threshold`, for the FPIR asked and the
gallery's number of entries: a bigger gallery gives a stranger more chances to score high, so
its threshold is higher. A probe that wears a mask (found by the mask detector, or a synthetic
one was drawn) is decided with the masked calibration when the backbone has one, as `fmr verify`
does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from fmr.metrics import cosine_to_degrees
from fmr.metrics.identification import open_set_threshold

DEFAULT_TOP = 5
DEFAULT_FPIR = 0.01
# Entries searched per person asked for at first; doubled until `top` distinct people are found.
ENTRIES_PER_PERSON = 4


@dataclass(frozen=True)
class Match:
    """One person found for a probe: their best-scoring photo, its cosine similarity, the angle
    between the embeddings in degrees, and that entry's id."""

    person: str
    photo: str
    similarity: float
    angle_deg: float
    entry_id: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Identification:
    """The answer for one probe.

    probe: how the probe is named; matches: the top people, best first; decision: the person at
    rank 1 when their similarity reaches the threshold, else None ("not in the gallery");
    threshold: that similarity (None when the backbone has no calibration, and then no
    decision is made: `note` says so); fpir: the false positive identification rate it is set
    for, in a gallery of gallery_size entries (comparison_far: the per-comparison false accept
    rate that gives; measurable: False when the calibration has too few impostor pairs to
    measure it, so the real FPIR may exceed the target); calibration: "unmasked" or "masked",
    calibration_reason: why; mask_probability: the mask detector's probability that the
    probe's face wears a mask (None: no detector); mask: the synthetic mask drawn on it, if
    any; error: why the probe could not be searched ('' when it was).
    """

    probe: str
    matches: list[Match] = field(default_factory=list)
    decision: str | None = None
    threshold: float | None = None
    fpir: float = DEFAULT_FPIR
    comparison_far: float | None = None
    measurable: bool | None = None
    gallery_size: int = 0
    calibration: str = "unmasked"
    calibration_reason: str = ""
    mask_probability: float | None = None
    mask: str | None = None
    error: str = ""
    note: str = ""

    def to_dict(self) -> dict:
        """The `fmr gallery search --json` object of this probe."""
        data = {
            "probe": self.probe,
            "decision": self.decision,
            "matches": [m.to_dict() for m in self.matches],
            "threshold": self.threshold,
            "fpir": self.fpir,
            "comparison_far": self.comparison_far,
            "measurable": self.measurable,
            "gallery_size": self.gallery_size,
            "calibration": self.calibration,
            "calibration_reason": self.calibration_reason,
            "mask_probability": (None if self.mask_probability is None
                                 else round(float(self.mask_probability), 4)),
            "mask": self.mask,
        }
        if self.error:
            data["error"] = self.error
        if self.note:
            data["note"] = self.note
        return data

    def verdict(self) -> str:
        """The decision in words."""
        if self.error:
            return f"not searched: {self.error}"
        if self.threshold is None:
            return f"no decision: {self.note}"
        best = self.matches[0] if self.matches else None
        if self.decision is not None:
            return (f"{self.decision} (similarity {best.similarity:.3f} >= threshold "
                    f"{self.threshold:.3f})")
        closest = (f"; the closest, {best.person}, scores {best.similarity:.3f} < threshold "
                   f"{self.threshold:.3f}" if best else "")
        return f"not in the gallery{closest}"


def search_people(gallery, embeddings, top: int = DEFAULT_TOP) -> list[list[Match]]:
    """The `top` best-matching people for each probe embedding (Q, D) or (D,) float32 unit
    rows: entries grouped by person, each person scored by their best entry. Returns Q lists of
    `Match`, best first (shorter when the gallery has fewer people)."""
    queries = np.asarray(embeddings, dtype=np.float32)
    queries = queries.reshape(1, -1) if queries.ndim == 1 else queries
    top = max(1, int(top))
    results: list[list[Match]] = [[] for _ in range(len(queries))]
    if not len(gallery) or not len(queries):
        return results
    entries = len(gallery)
    pending = list(range(len(queries)))
    k = min(entries, top * ENTRIES_PER_PERSON)
    while pending:
        scores, ids = gallery.search(queries[pending], k)
        still = []
        for probe, row_scores, row_ids in zip(pending, scores, ids, strict=True):
            found: dict[str, Match] = {}
            for score, entry_id in zip(row_scores, row_ids, strict=True):
                if entry_id < 0:
                    break
                row = gallery.row_of(int(entry_id))
                person = gallery.people[row]
                if person not in found:
                    similarity = float(np.clip(score, -1.0, 1.0))
                    found[person] = Match(person, gallery.photos[row], similarity,
                                          float(cosine_to_degrees(similarity)), int(entry_id))
                    if len(found) == top:
                        break
            exhausted = k >= entries or (row_ids < 0).any()
            if len(found) < top and not exhausted:
                still.append(probe)  # one person's many photos filled the list: look further
            else:
                results[probe] = list(found.values())
        pending = still
        k = min(entries, k * 2)
    return results


def pick_calibration(model, masked: bool, reason: str = "") -> tuple[dict, str, str]:
    """The calibration that decides, "unmasked" or "masked", and why in words. model: an
    `Embedder`, or anything with `calibration` and `calibration_masked` dicts. The masked
    calibration (a masked photo against an unmasked one) decides for a masked probe when the
    model has one, as in `fmr.verify.compare`."""
    reason = reason or ("the probe wears a mask" if masked else "the probe wears no mask")
    masked_calibration = dict(getattr(model, "calibration_masked", None) or {})
    if masked and masked_calibration:
        return masked_calibration, "masked", reason
    if masked:
        reason += ", but this model has no masked calibration"
    return dict(getattr(model, "calibration", None) or {}), "unmasked", reason


def decide(matches: Sequence[Match], calibration: dict, *, fpir: float = DEFAULT_FPIR,
           gallery_size: int) -> dict:
    """The open-set decision for one probe's matches (best first): {"decision": the rank-1
    person when their similarity reaches the threshold for `fpir` in a gallery of
    `gallery_size` entries, else None; "threshold", "fpir", "comparison_far", "measurable",
    "note"}. With an empty calibration no threshold exists: decision and threshold are None
    and the note says how to calibrate."""
    if not calibration:
        return {"decision": None, "threshold": None, "fpir": float(fpir), "comparison_far": None,
                "measurable": None,
                "note": "this model has no calibration, so no similarity can be called a match; "
                        "calibrate it with `fmr eval --calibrate-only`"}
    threshold = open_set_threshold(calibration, fpir, max(1, int(gallery_size)))
    best = matches[0] if matches else None
    decision = best.person if best is not None and best.similarity >= threshold["threshold"] \
        else None
    return {"decision": decision, "threshold": float(threshold["threshold"]),
            "fpir": float(fpir), "comparison_far": float(threshold["comparison_far"]),
            "measurable": bool(threshold["measurable"]), "note": ""}


def identify(
    gallery,
    embeddings,
    model,
    *,
    masked: bool | Sequence[bool] = False,
    mask_reasons: Sequence[str] | None = None,
    top: int = DEFAULT_TOP,
    fpir: float = DEFAULT_FPIR,
    probes: Sequence[str] | None = None,
    mask_probability: Sequence[float | None] | None = None,
    masks: Sequence[str | None] | None = None,
) -> list[Identification]:
    """Search probes already embedded (Q, D) or (D,) and decide each: `search_people`, then
    `pick_calibration` (masked: per probe, or one bool for all; mask_reasons: why, in words),
    then `decide`. model: the gallery's `Embedder` (its calibrations). probes: names for the
    answers; mask_probability, masks: reported as given. Raises ValueError when fpir is not in
    (0, 1)."""
    if not 0.0 < fpir < 1.0:
        raise ValueError(f"fpir must be in (0, 1), got {fpir}")
    queries = np.asarray(embeddings, dtype=np.float32)
    queries = queries.reshape(1, -1) if queries.ndim == 1 else queries
    count = len(queries)
    flags = [bool(masked)] * count if isinstance(masked, (bool, np.bool_)) else list(masked)
    reasons = list(mask_reasons) if mask_reasons is not None else [""] * count
    names = list(probes) if probes is not None else [f"probe {i + 1}" for i in range(count)]
    probabilities = list(mask_probability) if mask_probability is not None else [None] * count
    drawn = list(masks) if masks is not None else [None] * count
    answers = []
    for i, matches in enumerate(search_people(gallery, queries, top)):
        calibration, used, why = pick_calibration(model, flags[i], reasons[i])
        decision = decide(matches, calibration, fpir=fpir, gallery_size=len(gallery))
        answers.append(Identification(
            probe=names[i], matches=matches, decision=decision["decision"],
            threshold=decision["threshold"], fpir=decision["fpir"],
            comparison_far=decision["comparison_far"], measurable=decision["measurable"],
            gallery_size=len(gallery), calibration=used, calibration_reason=why,
            mask_probability=probabilities[i], mask=drawn[i], note=decision["note"],
        ))
    return answers
