"""Evaluation protocols: which pairs, which images, in which condition, and their metrics.

- `lfw_pairs`: the LFW View-2 protocol (a pairs file and the image folder), restricted to some
  folds (the project evaluates on folds 6-10 only).
- `validation_images`: the shared split's validation identities (calibration data).
- `Condition`, `EmbeddingTable`: how images are shown to the models (unmasked, or a synthetic
  mask with a fixed seed per image) and their embeddings; `fmr.pipelines.embedding` computes
  them (`embed_images`, `validation_scores`): this module loads no model.
- `pair_metrics`: k-fold accuracy on the listed pairs, and TAR at FAR / ROC / EER over ALL
  pairs of the evaluation images (a masked probe against the unmasked gallery when one side is
  masked), score and angle distributions, and how the calibrated threshold fares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmr import metrics
from fmr.data.lfw import lfw_image_path, read_pairs
from fmr.errors import DataError, FmrError
from fmr.metrics import angles as angle_stats

FAILED_PAIR_SCORE = -1.0  # a pair whose image failed is scored as the least similar possible


# --------------------------------------------------------------------------------------------
# Pairs and images
# --------------------------------------------------------------------------------------------


@dataclass
class PairSet:
    """Pairs over a list of distinct images.

    images: (M,) image paths; identities: (M,) person of each image. first, second: (P,) indices
    into images; same: (P,) bool; fold: (P,) fold number of each pair.
    """

    images: list[Path]
    identities: list[str]
    first: np.ndarray
    second: np.ndarray
    same: np.ndarray
    fold: np.ndarray
    root: Path
    description: str = ""


def parse_folds(text: str | None, available: Sequence[int]) -> list[int]:
    """ "6-10", "1,3,5", "all" (or None) -> fold numbers, checked against `available`."""
    available = sorted(set(int(f) for f in available))
    if text is None or text.strip().lower() == "all":
        return available
    folds: set[int] = set()
    try:
        for part in text.split(","):
            if "-" in part:
                low, high = (int(v) for v in part.split("-", 1))
                folds.update(range(low, high + 1))
            elif part.strip():
                folds.add(int(part))
    except ValueError as exc:
        raise FmrError(
            f"--folds {text!r}: expected a range such as 6-10, a list such as 1,2,3, or all"
        ) from exc
    unknown = sorted(folds - set(available))
    if unknown or not folds:
        raise FmrError(f"--folds {text!r}: the pairs file has folds {available[0]}-{available[-1]}")
    return sorted(folds)


def lfw_pairs(
    pairs_file: str | Path, root: str | Path, folds: str | Sequence[int] | None = "6-10"
) -> PairSet:
    """The LFW View-2 pairs of `folds` ("6-10", "all", or a list), images under `root`
    (`root/<Name>/<Name>_<NNNN>.jpg`). Raises `DataError` when images are missing."""
    pairs = read_pairs(pairs_file)
    available = sorted({p.fold for p in pairs})
    chosen = set(
        folds if not isinstance(folds, str) and folds is not None else parse_folds(folds, available)
    )
    pairs = [p for p in pairs if p.fold in chosen]
    root = Path(root)
    index: dict[Path, int] = {}
    images: list[Path] = []
    identities: list[str] = []

    def image_id(name: str, number: int) -> int:
        path = lfw_image_path(root, name, number)
        if path not in index:
            index[path] = len(images)
            images.append(path)
            identities.append(name)
        return index[path]

    first = np.array([image_id(p.name_a, p.index_a) for p in pairs], dtype=np.int64)
    second = np.array([image_id(p.name_b, p.index_b) for p in pairs], dtype=np.int64)
    missing = [p for p in images if not p.is_file()]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(images)} images of {pairs_file} are missing under {root} "
            f"(first: {missing[0]}); --root must be the folder holding <Name>/<Name>_0001.jpg"
        )
    return PairSet(
        images=images,
        identities=identities,
        first=first,
        second=second,
        same=np.array([p.same for p in pairs], dtype=bool),
        fold=np.array([p.fold for p in pairs], dtype=np.int64),
        root=root,
        description=f"LFW View-2 pairs, folds {','.join(map(str, sorted(chosen)))} of {pairs_file}",
    )


def validation_images(data_root: str | Path) -> tuple[list[Path], list[str], str]:
    """Images and identities of the shared split's validation people (calibration data), and a
    description of them."""
    from fmr.data.splits import shared_split

    split = shared_split(data_root)
    paths = [p for identity in sorted(split.validation) for p in split.validation[identity]]
    identities = [
        identity for identity in sorted(split.validation) for _ in split.validation[identity]
    ]
    description = (
        f"validation split: {len(split.validation)} CelebA identities, {len(paths)} photos "
        "(fmr.data.splits.shared_split); genuine = all same-identity pairs, impostor = all "
        "cross-identity pairs"
    )
    return paths, identities, description


# --------------------------------------------------------------------------------------------
# Conditions and embeddings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """How images are shown to the models: unmasked (style None) or with a synthetic mask of
    `style` ("random": one of the evaluation styles per image) drawn by `renderer`, seeded per
    image from `seed` and the image's path."""

    style: str | None = None
    renderer: str = "fmr"
    seed: int = 0

    @property
    def key(self) -> str:
        return "unmasked" if self.style is None else f"{self.style}-{self.renderer}-seed{self.seed}"

    @property
    def label(self) -> str:
        return (
            "unmasked" if self.style is None else f"masked ({self.style}, {self.renderer} renderer)"
        )

    def to_dict(self) -> dict:
        if self.style is None:
            return {"masked": False}
        return {"masked": True, "style": self.style, "renderer": self.renderer, "seed": self.seed}


@dataclass
class EmbeddingTable:
    """Embeddings of a list of images for one backbone and condition.

    embeddings: (N, D) float32 unit norm (zeros where failed); ok: (N,) bool; reasons: (N,) str
    (empty when ok); masks: (N,) str, the mask style drawn ('' when unmasked or failed);
    mask_probability: (N,) float32, the mask detector's probability that each face wears a
    mask (NaN where the image failed or it was not measured), or None.
    """

    embeddings: np.ndarray
    ok: np.ndarray
    reasons: list[str]
    masks: list[str] = field(default_factory=list)
    mask_probability: np.ndarray | None = None

    def failures(self, paths: Sequence[Path]) -> list[dict]:
        """The images that failed, with the reason (rows never embedded are not failures)."""
        return [
            {"image": str(path), "reason": reason}
            for path, ok, reason in zip(paths, self.ok, self.reasons, strict=True)
            if not ok and reason
        ]

    def scatter(self, rows: np.ndarray, size: int) -> EmbeddingTable:
        """This table's entries placed at `rows` of a table of `size` images; the other rows
        are not embedded (ok False, no reason)."""
        embeddings = np.zeros((size, self.embeddings.shape[1]), np.float32)
        ok = np.zeros(size, dtype=bool)
        reasons, masks = [""] * size, [""] * size
        embeddings[rows], ok[rows] = self.embeddings, self.ok
        for row, reason, mask in zip(rows, self.reasons, self.masks, strict=True):
            reasons[row], masks[row] = reason, mask
        probability = None
        if self.mask_probability is not None:
            probability = np.full(size, np.nan, np.float32)
            probability[rows] = self.mask_probability
        return EmbeddingTable(embeddings, ok, reasons, masks, probability)


# --------------------------------------------------------------------------------------------
# Metrics of one backbone on one pair set
# --------------------------------------------------------------------------------------------


def _distribution(scores: np.ndarray, value_range: tuple[float, float]) -> dict:
    counts, edges = metrics.score_histogram(scores, 100, value_range)
    return {"edges": edges.round(4).tolist(), "counts": counts.tolist()}


def _ranges(*score_sets: np.ndarray) -> tuple[tuple[float, float], float]:
    """Histogram ranges that fit the scores: (lowest score rounded down to 0.05, 1), and the
    largest angle rounded up to 10 degrees. Backbones differ a lot (dlib's scores sit in
    0.6-1), so fixed [-1, 1] bins would squeeze some into a few bars."""
    lowest = min((float(s.min()) for s in score_sets if s.size), default=-1.0)
    low = max(-1.0, np.floor(lowest / 0.05) * 0.05)
    max_angle = min(180.0, np.ceil(float(metrics.cosine_to_degrees(low)) / 10) * 10)
    return (float(low), 1.0), float(max_angle)


def pair_metrics(
    pairs: PairSet,
    gallery: EmbeddingTable,
    probe: EmbeddingTable,
    *,
    calibration: dict | None = None,
    same_condition: bool = True,
    far_targets: Sequence[float] = metrics.DEFAULT_FAR_TARGETS,
) -> dict:
    """Every metric of one backbone on `pairs`.

    gallery: embeddings of all images in the first photo's condition; probe: in the second
    photo's condition (the same table when both conditions are the same; otherwise at least
    every second photo of a pair is embedded). The listed pairs compare gallery[first] with
    probe[second]. All-pairs metrics score each unordered pair of images once when
    same_condition, else every embedded probe against every gallery image but its own.
    calibration: the card's, to report how its threshold does on this data.
    """
    ok_pairs = gallery.ok[pairs.first] & probe.ok[pairs.second]
    scores = np.einsum("ij,ij->i", gallery.embeddings[pairs.first], probe.embeddings[pairs.second])
    scores = np.where(ok_pairs, scores, FAILED_PAIR_SCORE).astype(np.float64)
    kfold = metrics.kfold_accuracy(scores, pairs.same, folds=pairs.fold)
    listed_genuine, listed_impostor = scores[pairs.same & ok_pairs], scores[~pairs.same & ok_pairs]
    listed = {
        "n_pairs": int(scores.size),
        "n_genuine": int(pairs.same.sum()),
        "n_impostor": int((~pairs.same).sum()),
        "n_failed": int((~ok_pairs).sum()),
        "failed_pairs_scored_as": FAILED_PAIR_SCORE,
        "kfold_accuracy": kfold.to_dict(),
        "eer": None,
        "genuine_angles_deg": metrics.angle_statistics(metrics.cosine_to_degrees(listed_genuine)),
        "impostor_angles_deg": metrics.angle_statistics(metrics.cosine_to_degrees(listed_impostor)),
    }
    if listed_genuine.size and listed_impostor.size:
        eer, eer_threshold = metrics.equal_error_rate(listed_genuine, listed_impostor)
        listed.update(eer=eer, eer_threshold=eer_threshold)

    identities = np.asarray(pairs.identities)
    gallery_rows = np.flatnonzero(gallery.ok)
    gallery_set = (gallery.embeddings[gallery_rows], identities[gallery_rows])
    if same_condition:
        genuine, impostor = metrics.all_pair_scores(*gallery_set)
        centre = angle_stats.leave_one_out_centre_angles(gallery_set[0], *gallery_set)
        probe_rows = gallery_rows
    else:
        # Masked probes (the images embedded in the probe condition) against the gallery.
        probe_rows = np.flatnonzero(probe.ok)
        position = np.full(len(pairs.images), -1)
        position[gallery_rows] = np.arange(gallery_rows.size)
        which = {"probe_identities": identities[probe_rows], "probe_rows": position[probe_rows]}
        probe_embeddings = probe.embeddings[probe_rows]
        genuine, impostor = metrics.all_pair_scores(*gallery_set, probe_embeddings, **which)
        centre = angle_stats.leave_one_out_centre_angles(probe_embeddings, *gallery_set, **which)
    all_pairs: dict = {
        "n_images": int(gallery_rows.size),
        "n_probes": int(probe_rows.size),
        "n_identities": int(np.unique(identities[gallery_rows]).size),
        "n_genuine": int(genuine.size),
        "n_impostor": int(impostor.size),
        "ordered": not same_condition,
        "pairs": "every unordered pair of the evaluation images"
        if same_condition
        else "every probe (second-photo condition) against every gallery image (first-photo "
        "condition) but its own",
    }
    score_range, max_angle = _ranges(listed_genuine, listed_impostor, genuine, impostor)
    listed["genuine_scores"] = _distribution(listed_genuine, score_range)
    listed["impostor_scores"] = _distribution(listed_impostor, score_range)
    if genuine.size and impostor.size:
        eer, eer_threshold = metrics.equal_error_rate(genuine, impostor)
        roc = metrics.roc_at_far(genuine, impostor)
        all_pairs.update(
            eer=eer,
            eer_threshold=eer_threshold,
            tar_at_far=[p.to_dict() for p in metrics.tar_at_far(genuine, impostor, far_targets)],
            roc={k: v.tolist() for k, v in roc.items()},
            genuine_scores=_distribution(genuine, score_range),
            impostor_scores=_distribution(impostor, score_range),
            genuine_angles_deg=metrics.angle_statistics(metrics.cosine_to_degrees(genuine)),
            impostor_angles_deg=metrics.angle_statistics(metrics.cosine_to_degrees(impostor)),
            genuine_angle_histogram=angle_stats.angle_histogram(
                metrics.cosine_to_degrees(genuine), max_angle
            ),
            impostor_angle_histogram=angle_stats.angle_histogram(
                metrics.cosine_to_degrees(impostor), max_angle
            ),
        )
    centre = centre[~np.isnan(centre)]
    angles = {
        "to_identity_centre_deg": metrics.angle_statistics(centre),
        "to_identity_centre_histogram": angle_stats.angle_histogram(centre, max_angle),
        "centre": "mean gallery embedding of the identity's other images (leave-one-out)",
    }
    result = {"listed_pairs": listed, "all_pairs": all_pairs, "angles": angles}
    if calibration:
        result["calibrated"] = calibrated_metrics(
            calibration, scores, pairs.same, ok_pairs, genuine, impostor
        )
    return result


def calibrated_metrics(calibration, scores, same, ok_pairs, genuine, impostor) -> dict:
    """How the card's threshold and inconclusive band (set on validation data) do here."""
    threshold = float(calibration["threshold"])
    low = min(float(calibration["inconclusive"]["low"]), threshold)
    verdict_same, verdict_diff = scores >= threshold, scores < low
    out = {
        "threshold": threshold,
        "target_far": calibration["target_far"],
        "band": [low, threshold],
        "listed_accuracy": float(np.mean(verdict_same == same)),
        "listed_verdicts": {
            label: {
                "same": int((verdict_same & mask).sum()),
                "different": int((verdict_diff & mask).sum()),
                "inconclusive": int((~verdict_same & ~verdict_diff & mask).sum()),
            }
            for label, mask in (("genuine", same), ("impostor", ~same))
        },
        "listed_failed": int((~ok_pairs).sum()),
    }
    if genuine.size and impostor.size:
        far, frr = metrics.error_rates(genuine, impostor, threshold)
        out.update(all_pairs_far=float(far[0]), all_pairs_frr=float(frr[0]))
    return out


CALIBRATION_MASKS = Condition("random", "fmr", 0)  # masked calibration: any style, seeded
