"""Sample photos for the app: the shared data's `photos/` folder, when it is there.

The photos are never copied into the repository; a fresh clone without the shared data gets
`samples_note()`, which says how to point the app at them (FMR_DATA_DIR).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fmr.settings import data_dir

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
# Folders of photos/ that are not one person each.
NOT_PEOPLE = {"multi", "edge"}


def photos_root() -> Path:
    """`photos/` in the shared data folder (it may not exist)."""
    return data_dir() / "photos"


def _photos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)


def person_label(folder_name: str) -> str:
    """"kit_harington" -> "Kit Harington"."""
    return folder_name.replace("_", " ").title()


def sample_people() -> dict[str, list[Path]]:
    """Person label -> their photos (one folder per person under photos/); {} when absent."""
    root = photos_root()
    if not root.is_dir():
        return {}
    people = {}
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and folder.name not in NOT_PEOPLE:
            photos = _photos_in(folder)
            if photos:
                people[person_label(folder.name)] = photos
    return people


def group_photos() -> list[Path]:
    """Photos with several people (photos/multi/)."""
    folder = photos_root() / "multi"
    return _photos_in(folder) if folder.is_dir() else []


@dataclass(frozen=True)
class SamplePair:
    """A ready-made pair: label for the menu, the two photos, and what a good model says."""

    label: str
    a: Path
    b: Path
    expected: str  # "same" or "different"


def sample_pairs() -> list[SamplePair]:
    """A few instructive pairs from photos/: same person, different people, a group photo.

    Only pairs whose photos exist are returned ([] without the shared data).
    """
    people = sample_people()
    pairs: list[SamplePair] = []
    for person, photos in people.items():
        if len(photos) >= 2:
            pairs.append(SamplePair(f"{person}: two photos (same person)", *photos[:2], "same"))
    names = list(people)
    for first, second in zip(names, names[1:], strict=False):
        pairs.append(
            SamplePair(
                f"{first} vs {second} (different people)",
                people[first][0],
                people[second][-1],
                "different",
            )
        )
    for group in group_photos():
        for person, photos in people.items():
            if person.split()[0].lower() in group.stem.lower():
                pairs.append(
                    SamplePair(
                        f"{person} vs a group photo (several faces: pick one)",
                        photos[-1],
                        group,
                        "same",
                    )
                )
                break
    return pairs


def samples_note() -> str:
    """What to do when there are no sample photos."""
    return (
        f"No sample photos: the shared data folder ({photos_root()}) is not there. Upload your "
        "own photos, or start the app with FMR_DATA_DIR set to the folder that holds photos/, "
        "lfw/ and celeba299/ (see the README)."
    )
