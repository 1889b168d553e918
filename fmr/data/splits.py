"""The shared-data split: who trains, who validates, who is only ever evaluated.

- evaluation: LFW View-2 folds 6-10 (the last 3,000 pairs). Nobody in them trains or tunes.
- validation: `VALIDATION_IDENTITIES` CelebA identities (chosen with the seed), with all their
  same-person pairs and as many different-person pairs. Thresholds, checkpoint selection and
  tuning use only this.
- training: every other CelebA identity, and every LFW person not in folds 6-10.

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
    """Build the split from `data_root` (holding `lfw/` and `celeba299/`). Deterministic."""
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
