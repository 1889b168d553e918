"""The LFW View-2 verification protocol (pairs.txt) and LFW's file layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fmr.errors import DataError


@dataclass(frozen=True)
class Pair:
    """One protocol pair. fold: 1-based fold number; same: True for a same-person pair."""

    name_a: str
    index_a: int
    name_b: str
    index_b: int
    same: bool
    fold: int

    def paths(self, root: str | Path) -> tuple[Path, Path]:
        return lfw_image_path(root, self.name_a, self.index_a), lfw_image_path(
            root, self.name_b, self.index_b
        )


def lfw_image_path(root: str | Path, name: str, index: int) -> Path:
    """`root/<Name>/<Name>_<NNNN>.jpg`, the LFW layout (`root` is the images folder)."""
    return Path(root) / name / f"{name}_{index:04d}.jpg"


def read_pairs(path: str | Path) -> list[Pair]:
    """Parse an LFW-style pairs file: header `folds n`, then per fold n same and n different lines.

    Same-person lines are `Name i j`, different-person lines `NameA i NameB j`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: pairs file not found")
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if not lines or len(lines[0]) != 2:
        raise DataError(f"{path}: expected a header line 'FOLDS PAIRS_PER_SIDE' (e.g. '10 300')")
    folds, per_side = int(lines[0][0]), int(lines[0][1])
    body = lines[1:]
    if len(body) != folds * 2 * per_side:
        raise DataError(
            f"{path}: header promises {folds} folds x {2 * per_side} pairs, found {len(body)} lines"
        )
    pairs = []
    for i, parts in enumerate(body):
        fold = i // (2 * per_side) + 1
        if len(parts) == 3:
            pairs.append(Pair(parts[0], int(parts[1]), parts[0], int(parts[2]), True, fold))
        elif len(parts) == 4:
            pairs.append(Pair(parts[0], int(parts[1]), parts[2], int(parts[3]), False, fold))
        else:
            raise DataError(f"{path}: line {i + 2} is neither 'Name i j' nor 'NameA i NameB j'")
    return pairs


def people_in(pairs: list[Pair]) -> set[str]:
    return {p.name_a for p in pairs} | {p.name_b for p in pairs}
