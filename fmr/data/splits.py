"""The shared-data split: who trains, who validates, who is only ever evaluated.

- evaluation: LFW View-2 folds 6-10 (the last 3,000 pairs). Nobody in them trains or tunes.
- validation: `VALIDATION_IDENTITIES` CelebA identities (chosen with the seed), with all their
  same-person pairs and as many different-person pairs. Thresholds, checkpoint selection and
  tuning use only this.
- training: every other CelebA identity, every LFW person not in folds 6-10, and the extra
  CelebA people of `celeba_extra/` where the data folder has it (5,262 people, aligned CelebA
  photos at half resolution; their identity numbers are not those of `celeba299/`).

The data folder layout is described in ../shared/data/README.md (`FMR_DATA_DIR` overrides it).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path

from fmr.data.lfw import Pair, people_in, read_pairs
from fmr.errors import DataError

EVAL_FOLDS = (6, 7, 8, 9, 10)
VALIDATION_IDENTITIES = 40
EXTRA_CELEBA = Path("celeba_extra") / "images"  # optional: more training-side CelebA people
SPLIT_SEED = 0


@dataclass
class SharedSplit:
    """Image lists per identity. Identity keys: `lfw/<Name>` and `celeba/<id>`."""

    train: dict[str, list[Path]] = field(default_factory=dict)
    validation: dict[str, list[Path]] = field(default_factory=dict)
    eval_pairs: list[Pair] = field(default_factory=list)
    eval_people: set[str] = field(default_factory=set)
    validation_pairs: list[tuple[Path, Path, bool]] = field(default_factory=list)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def shared_split(
    data_root: str | Path,
    *,
    validation_identities: int = VALIDATION_IDENTITIES,
    seed: int = SPLIT_SEED,
) -> SharedSplit:
    """Build the split from `data_root` (holding `lfw/`, `celeba299/` and optionally
    `celeba_extra/`). Deterministic; the validation identities come from `celeba299/` only, so
    adding `celeba_extra/` changes no validation or evaluation split."""
    root = Path(data_root)
    lfw_images, pairs_file = root / "lfw" / "images", root / "lfw" / "pairs.txt"
    celeba_images = root / "celeba299" / "images"
    for needed in (lfw_images, pairs_file, celeba_images):
        if not needed.exists():
            raise DataError(f"{needed} not found: is {root} the shared data folder?")
    pairs = read_pairs(pairs_file)
    eval_pairs = [p for p in pairs if p.fold in EVAL_FOLDS]
    eval_people = people_in(eval_pairs)

    split = SharedSplit(eval_pairs=eval_pairs, eval_people=eval_people)
    celeba_ids = sorted((d.name for d in celeba_images.iterdir() if d.is_dir()), key=str)
    rng = random.Random(seed)
    validation_ids = set(rng.sample(celeba_ids, min(validation_identities, len(celeba_ids))))
    for identity in celeba_ids:
        target = split.validation if identity in validation_ids else split.train
        target[f"celeba/{identity}"] = _images(celeba_images / identity)
    for person in sorted(d.name for d in lfw_images.iterdir() if d.is_dir()):
        if person not in eval_people:
            split.train[f"lfw/{person}"] = _images(lfw_images / person)
    extra_images = root / EXTRA_CELEBA
    if extra_images.is_dir():
        for identity in sorted(d.name for d in extra_images.iterdir() if d.is_dir()):
            split.train[f"celeba_extra/{identity}"] = _images(extra_images / identity)
    split.validation_pairs = validation_pairs(split.validation, seed=seed)
    return split


def validation_pairs(
    identities: dict[str, list[Path]], *, seed: int = SPLIT_SEED
) -> list[tuple[Path, Path, bool]]:
    """All same-person pairs of `identities`, plus as many different-person pairs (seeded)."""
    genuine = [
        (a, b, True) for images in identities.values() for a, b in itertools.combinations(images, 2)
    ]
    rng = random.Random(seed + 1)
    names = sorted(identities)
    impostor: set[tuple[Path, Path]] = set()
    while len(impostor) < len(genuine) and len(names) > 1:
        x, y = rng.sample(names, 2)
        impostor.add((rng.choice(identities[x]), rng.choice(identities[y])))
    return genuine + [(a, b, False) for a, b in sorted(impostor)]


# ---------------------------------------------------------------------------------------------
# Evaluation people in other layouts, and a training-side identity folder


def evaluation_people(data_root: str | Path) -> set[str]:
    """The LFW names of everyone in pair folds 6-10 (`EVAL_FOLDS`) of `data_root`'s pairs.txt.
    Raises DataError when the shared data's pairs file is not there."""
    pairs_file = Path(data_root) / "lfw" / "pairs.txt"
    if not pairs_file.is_file():
        raise DataError(
            f"{pairs_file} not found: the LFW evaluation people (pair folds 6-10) cannot be "
            "excluded without the shared data (set FMR_DATA_DIR)"
        )
    return people_in([p for p in read_pairs(pairs_file) if p.fold in EVAL_FOLDS])


class EvaluationPeople:
    """Tells whether a photo or an identity folder shows an LFW evaluation person, whatever
    the layout: a folder named after the person (`Name`, or `lfw-Name` as
    `training_side_identities` names them), a file named as LFW names them (`Name_0001.jpg`),
    or a symbolic link that resolves into `<data_root>/lfw/images/<Name>/`."""

    def __init__(self, data_root: str | Path):
        self.data_root = Path(data_root).resolve()
        self.lfw_images = self.data_root / "lfw" / "images"
        self.people = evaluation_people(self.data_root)

    def named(self, name: str) -> str | None:
        """The evaluation person an identity folder's name means, or None."""
        for candidate in (name, name.removeprefix("lfw-"), name.removeprefix("lfw_")):
            if candidate in self.people:
                return candidate
        return None

    def shown_in(self, photo: str | Path) -> str | None:
        """The evaluation person a photo is of (by its LFW file name or its resolved path)."""
        photo = Path(photo)
        stem = photo.stem
        if "_" in stem and stem.rsplit("_", 1)[0] in self.people:
            return stem.rsplit("_", 1)[0]
        resolved = photo.resolve()
        try:
            parts = resolved.relative_to(self.lfw_images).parts
        except ValueError:
            return None
        return parts[0] if parts and parts[0] in self.people else None

    def identity(self, folder_name: str, photos) -> str | None:
        """The evaluation person an identity (its folder name and photos) involves, or None."""
        return self.named(folder_name) or next(
            (p for p in map(self.shown_in, photos) if p is not None), None)


def training_side_identities(
    data_root: str | Path,
    *,
    min_photos: int = 10,
    include_validation: bool = False,
    seed: int = SPLIT_SEED,
) -> dict[str, list[Path]]:
    """Training-side people of the shared data with at least `min_photos` photos each.

    Keys are folder names: `celeba-<id>` (CelebA subset identities), `celeba_extra-<id>` (the
    extra CelebA people) and `lfw-<Name>` (LFW people not in pair folds 6-10). The validation
    identities of `shared_split` stay out unless `include_validation` (keeping them out keeps
    `fmr eval --calibrate`, which calibrates on them, honest for models trained on this).
    Values: the photo paths, sorted.
    """
    split = shared_split(data_root, seed=seed)
    identities = dict(split.train)
    if include_validation:
        identities.update(split.validation)
    chosen = {}
    for key in sorted(identities):
        photos = identities[key]
        if len(photos) >= min_photos:
            source, name = key.split("/", 1)
            chosen[f"{source}-{name}"] = photos
    overlap = {k for k in chosen if k.startswith("lfw-")} & {f"lfw-{p}" for p in split.eval_people}
    if overlap:  # shared_split guarantees this; checked again because it must never happen
        raise DataError(f"evaluation people among the training-side identities: {sorted(overlap)}")
    return chosen


def link_identity_folder(identities: dict[str, list[Path]], out: str | Path) -> Path:
    """Lay `identities` ({folder name: photos}) out as `out/<name>/<photo>` symbolic links to
    the photos (absolute), one sub-folder per identity: the input `fmr prepare --preset
    original` takes. `out` must be empty or absent. Returns `out`."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: not empty; give a new folder for the identity links")
    for name, photos in identities.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for photo in photos:
            (folder / photo.name).symlink_to(Path(photo).resolve())
    return out
