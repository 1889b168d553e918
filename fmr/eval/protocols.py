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
- `identification_sets`, `identification_metrics`: 1:N identification on the pair set's images
  (closed set: rank-1, rank-5, CMC; open set: DIR at FPIR, and how the calibrated open-set
  threshold does), an unmasked gallery searched with probes in the probe condition.
"""

from __future__ import annotations

import hashlib
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

    def restricted(self, rows: np.ndarray) -> EmbeddingTable:
        """A copy in which only `rows` stay embedded; the others become not embedded (ok
        False, no reason), as if this table had been scattered from those rows alone."""
        keep = np.zeros(self.ok.size, dtype=bool)
        keep[np.asarray(rows, dtype=np.int64)] = True
        probability = None
        if self.mask_probability is not None:
            probability = np.where(keep, self.mask_probability, np.nan).astype(np.float32)
        return EmbeddingTable(
            embeddings=np.where(keep[:, None], self.embeddings, 0).astype(np.float32),
            ok=self.ok & keep,
            reasons=[r if k else "" for r, k in zip(self.reasons, keep, strict=True)],
            masks=[m if k else "" for m, k in zip(self.masks, keep, strict=True)]
            if self.masks else [],
            mask_probability=probability,
        )


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


# --------------------------------------------------------------------------------------------
# 1:N identification on the pair set's images
# --------------------------------------------------------------------------------------------

IDENTIFICATION_SEED = 0  # which half of the repeated people is enrolled in the open set
FPIR_TARGETS = (0.01, 0.1)  # DIR is reported at these FPIRs (thresholds set on the non-mated)
CALIBRATED_FPIR = 0.01  # the calibrated open-set threshold is read for this FPIR
CMC_MAX_RANK = 20
IDENTIFICATION_PROTOCOL = (
    "1:N search by brute force over the pair set's images; gallery images unmasked, one per "
    "person (the first by path), probes in the probe condition; people ranked by their best "
    "entry (ties count against). Closed set: every person enrolled (single-image people are "
    "distractors), probes = the other images of people with 2+ images; rank-k = share of "
    "probes whose person is among the k best. Open set: half of the 2+-image people enrolled "
    "(SHA-256 of seed:name), their other images mated probes; all images of the other half and "
    "of single-image people non-mated probes. FPIR = share of non-mated probes whose best "
    "score >= threshold; DIR = share of mated probes whose person is rank 1 with score >= "
    "threshold. A failed gallery image is not enrolled; a failed probe scores -1 (a mated one "
    "is missed, a non-mated one rejected)."
)


def enrolled_half(people: Sequence[str], seed: int = IDENTIFICATION_SEED) -> list[str]:
    """The open set's enrolled half of `people`: the len // 2 whose SHA-256 of "seed:name" is
    lowest, sorted by name. It depends only on the names and the seed (not on their order, the
    folds or the backbone), so every run and backbone enrols the same people."""
    people = sorted(set(people))

    def digest(name: str) -> str:
        return hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()

    return sorted(sorted(people, key=digest)[: len(people) // 2])


@dataclass(frozen=True)
class IdentificationSets:
    """The 1:N identification protocol on a pair set's images. Every array holds rows of
    `PairSet.images` (int64, ascending).

    Each person's gallery image is their first image by path. Closed set: `closed_gallery`
    holds one image of EVERY person (people with a single image are distractors: in the
    gallery, never searched for); `closed_probes` are the other images of the people with two
    or more. Open set: the repeated people (two or more images) are split in halves
    (`enrolled_half`); `open_gallery` holds one image of each enrolled person, `open_mated`
    their other images; `open_nonmated` holds every image of the other half and of the
    single-image people, none of whom is enrolled.
    """

    closed_gallery: np.ndarray
    closed_probes: np.ndarray
    open_gallery: np.ndarray
    open_mated: np.ndarray
    open_nonmated: np.ndarray
    enrolled: tuple[str, ...]
    n_people: int
    n_repeated: int
    seed: int

    @property
    def gallery_rows(self) -> np.ndarray:
        """Every row embedded for a gallery (unmasked): the closed set's gallery, which
        holds the open set's."""
        return np.union1d(self.closed_gallery, self.open_gallery)

    @property
    def probe_rows(self) -> np.ndarray:
        """Every row searched as a probe (in the probe condition), closed or open set."""
        return np.union1d(np.union1d(self.closed_probes, self.open_mated), self.open_nonmated)

    def sizes(self) -> dict:
        return {
            "n_images": int(np.union1d(self.gallery_rows, self.probe_rows).size),
            "n_people": self.n_people,
            "n_people_with_2_or_more_images": self.n_repeated,
            "n_people_with_1_image": self.n_people - self.n_repeated,
            "closed_set": {"n_gallery": int(self.closed_gallery.size),
                           "n_probes": int(self.closed_probes.size)},
            "open_set": {"n_enrolled": len(self.enrolled),
                         "n_gallery": int(self.open_gallery.size),
                         "n_mated": int(self.open_mated.size),
                         "n_nonmated": int(self.open_nonmated.size),
                         "n_nonmated_people": self.n_people - len(self.enrolled)},
        }


def identification_sets(pairs: PairSet, seed: int = IDENTIFICATION_SEED) -> IdentificationSets:
    """The gallery and probe images of the 1:N protocol on `pairs`' images (see
    `IdentificationSets`); deterministic (paths, names and the seed only)."""
    by_person: dict[str, list[int]] = {}
    for row, person in enumerate(pairs.identities):
        by_person.setdefault(person, []).append(row)
    for rows in by_person.values():
        rows.sort(key=lambda row: str(pairs.images[row]))
    repeated = [person for person, rows in by_person.items() if len(rows) >= 2]
    enrolled = enrolled_half(repeated, seed)
    chosen = set(enrolled)

    def rows_of(people, part) -> np.ndarray:
        picked = [row for person in people for row in part(by_person[person])]
        return np.array(sorted(picked), dtype=np.int64)

    first, rest, every = (lambda r: r[:1]), (lambda r: r[1:]), (lambda r: r)
    return IdentificationSets(
        closed_gallery=rows_of(by_person, first),
        closed_probes=rows_of(repeated, rest),
        open_gallery=rows_of(enrolled, first),
        open_mated=rows_of(enrolled, rest),
        open_nonmated=rows_of([p for p in by_person if p not in chosen], every),
        enrolled=tuple(enrolled),
        n_people=len(by_person),
        n_repeated=len(repeated),
        seed=seed,
    )


def _search(gallery_rows, gallery, probe_rows, probe):
    """Enrolled gallery rows (failed ones left out: not enrolled), and the probes' scores
    against them: (enrolled rows, similarities (P, G), probe ok (P,))."""
    enrolled = gallery_rows[gallery.ok[gallery_rows]]
    probe_ok = probe.ok[probe_rows]
    similarities = metrics.gallery_similarities(
        probe.embeddings[probe_rows], gallery.embeddings[enrolled], probe_ok
    )
    return enrolled, similarities, probe_ok


def identification_metrics(
    pairs: PairSet,
    sets: IdentificationSets,
    gallery: EmbeddingTable,
    probe: EmbeddingTable,
    *,
    calibration: dict | None = None,
    calibration_name: str = "calibration",
    fpir_targets: Sequence[float] = FPIR_TARGETS,
    calibrated_fpir: float = CALIBRATED_FPIR,
    max_rank: int = CMC_MAX_RANK,
) -> dict:
    """1:N identification of one backbone on the images of `pairs` (`identification_sets`).

    gallery: unmasked embeddings, at least of `sets.gallery_rows`; probe: embeddings in the
    probe condition, at least of `sets.probe_rows` (the same table when it is unmasked).
    A gallery image that failed is not enrolled (its person's probes are then never found);
    a failed probe scores -1 against every entry, like a failed pair in `pair_metrics`: a
    mated one is a miss, a non-mated one is rejected. Both are counted in the sizes.
    calibration: the card's calibration for this probe condition (`calibration_name` says
    which), from which `fmr.metrics.open_set_threshold` reads the threshold for
    `calibrated_fpir` in a gallery of the open set's enrolled size.
    Returns a JSON-ready dict; rates are fractions in [0, 1], thresholds cosines.
    """
    identities = np.asarray(pairs.identities)
    result: dict = {"protocol": IDENTIFICATION_PROTOCOL, "sizes": sets.sizes(),
                    "seed": sets.seed, "failed_probes_scored_as": FAILED_PAIR_SCORE}

    closed: dict = {"n_gallery_failed": int((~gallery.ok[sets.closed_gallery]).sum()),
                    "n_probes_failed": int((~probe.ok[sets.closed_probes]).sum())}
    enrolled = sets.closed_gallery[gallery.ok[sets.closed_gallery]]
    if sets.closed_probes.size and enrolled.size:
        enrolled, scores, ok = _search(sets.closed_gallery, gallery,
                                       sets.closed_probes, probe)
        ranks = metrics.mated_ranks(scores, identities[enrolled],
                                    identities[sets.closed_probes], ok)
        closed.update(
            rank_1=metrics.rank_k_rate(ranks, 1),
            rank_5=metrics.rank_k_rate(ranks, 5),
            rank_10=metrics.rank_k_rate(ranks, 10),
            cmc=metrics.cmc_curve(ranks, max_rank).tolist(),
        )
    result["closed_set"] = closed

    open_set: dict = {"n_gallery_failed": int((~gallery.ok[sets.open_gallery]).sum()),
                      "n_mated_failed": int((~probe.ok[sets.open_mated]).sum()),
                      "n_nonmated_failed": int((~probe.ok[sets.open_nonmated]).sum())}
    enrolled = sets.open_gallery[gallery.ok[sets.open_gallery]]
    if sets.open_mated.size and sets.open_nonmated.size and enrolled.size:
        enrolled, scores, ok = _search(sets.open_gallery, gallery,
                                       sets.open_mated, probe)
        labels = identities[enrolled]
        ranks = metrics.mated_ranks(scores, labels, identities[sets.open_mated], ok)
        mated_top, _ = metrics.top_matches(scores, labels)
        _, non_scores, _ = _search(sets.open_gallery, gallery,
                                   sets.open_nonmated, probe)
        nonmated_top, _ = metrics.top_matches(non_scores, labels)
        correct = ranks == 1
        open_set.update(
            rank_1=metrics.rank_k_rate(ranks, 1),
            dir_at_fpir=[p.to_dict() for p in
                         metrics.dir_at_fpir(correct, mated_top, nonmated_top, fpir_targets)],
        )
        if calibration:
            point = metrics.open_set_threshold(calibration, calibrated_fpir, enrolled.size)
            threshold = point["threshold"]
            open_set["calibrated"] = {
                "calibration": calibration_name,
                "fpir_target": point["fpir"],
                "threshold": threshold,
                "comparison_far": point["comparison_far"],
                "measurable": point["measurable"],
                "gallery_size": point["gallery_size"],
                "fpir": metrics.fpir_at_threshold(nonmated_top, threshold),
                "dir": metrics.dir_at_threshold(correct, mated_top, threshold),
            }
    result["open_set"] = open_set
    # Failed gallery images are listed with the run's failures; failed probes (they may be
    # in another condition) here.
    result["failed_probes"] = [
        {"image": str(pairs.images[row]), "reason": probe.reasons[row]}
        for row in sets.probe_rows
        if not probe.ok[row] and probe.reasons[row]
    ]
    return result
