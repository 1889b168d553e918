"""fmr training packs: aligned crops in standard RecordIO, plus what training needs beside them.

A pack is a folder (written by `fmr prepare`, read by `train.py --data`):

- `meta.json`: `"format": "fmr-pack"`, `version`, preset, seed, JPEG quality, counts, the
  identity key of each class (`classes`), the validation identities, the teacher model.
- `train.rec` + `train.idx`: training crops in insightface's layout: record 0 is a header
  `[first identity key, end key]`, images are keys 1..N sorted by class, then one record per
  class holds its image-key range. Labels are classes 0..C-1; trailing images with label -1
  have no class (identities with one photo, kept only for distillation).
- `teacher.npy` (optional): (N, D) float16, the teacher's unit-norm descriptor of image key
  i+1 (dlib's ResNet, D = 128); NaN rows where there is none.
- `canvas.rec` + `canvas.idx`, `chips.npy` (optional, `fmr prepare --canvases`): for each
  training image, its face on a wider, sharper canvas (`fmr.faces.align.WIDE_CANVAS`: the
  template with a 24-pixel margin at 1.5x, 240x240 JPEG) and the (N, 2, 3) float32 map from
  dlib's 150x150 chip pixels to template coordinates: what an online teacher needs to see the
  same augmented view as the student.
- `val_canvas.rec` + `val_canvas.idx`, `val_chips.npy` (with `--canvases`): the same for the
  validation images, for networks that read dlib's chip (`train.py mask-finetune`).
- `val.rec` + `val.idx`: validation crops, same layout; labels index `meta.json`'s
  `validation_identities`. In an `original`-preset pack these are held-out photos of the
  pack's own classes (`held_out_classes` maps them to class ids, for closed-set accuracy).
- `val_pairs.txt`: one `i j same` line per validation pair (0-based positions in `val.rec`,
  same = 1 or 0).
- `manifest.csv`, `dropped.csv`: what `fmr prepare` did with every photo and identity, and why.

All crops are 112x112 RGB on the ArcFace template, JPEG-encoded and unmasked (training draws
masks on the fly). A folder holding only `train.rec` + `train.idx` reads the same way, without
the extras.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmr.data.recordio import read_image_set, write_image_set
from fmr.errors import DataError

PACK_FORMAT = "fmr-pack"
PACK_VERSION = 1
META_FILE = "meta.json"
TRAIN_REC = "train.rec"
VAL_REC = "val.rec"
TEACHER_FILE = "teacher.npy"
CANVAS_REC = "canvas.rec"
CHIPS_FILE = "chips.npy"
VAL_CANVAS_REC = "val_canvas.rec"
VAL_CHIPS_FILE = "val_chips.npy"
VAL_PAIRS_FILE = "val_pairs.txt"
CROP_SIZE = 112


def is_pack(path: str | os.PathLike) -> bool:
    """True when `path` is a folder with an fmr pack's `meta.json`."""
    meta = Path(path) / META_FILE
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("format") == PACK_FORMAT
    except (OSError, ValueError):
        return False


def read_meta(path: str | os.PathLike) -> dict:
    meta_path = Path(path) / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{meta_path}: cannot read the pack description ({exc})") from exc
    if meta.get("format") != PACK_FORMAT:
        raise DataError(f"{meta_path}: not an fmr pack (format {meta.get('format')!r})")
    if int(meta.get("version", 0)) > PACK_VERSION:
        raise DataError(
            f"{meta_path}: pack version {meta['version']} is newer than this fmr reads "
            f"({PACK_VERSION}); update fmr or run `fmr prepare` again"
        )
    return meta


def write_pack_images(
    out_dir: str | os.PathLike,
    name: str,
    images: Sequence[bytes],
    labels: Sequence[int],
) -> Path:
    """Write `<out_dir>/<name>.rec/.idx` (see `fmr.data.recordio.write_image_set`)."""
    rec = Path(out_dir) / f"{name}.rec"
    write_image_set(rec, images, labels)
    return rec


def write_pairs(path: str | os.PathLike, pairs: Sequence[tuple[int, int, bool]]) -> None:
    lines = [f"{int(i)} {int(j)} {int(bool(same))}" for i, j, same in pairs]
    Path(path).write_text("\n".join(lines) + ("\n" if lines else ""))


def read_pairs_file(path: str | os.PathLike, num_images: int) -> np.ndarray:
    """Read `val_pairs.txt` into an (P, 3) int64 array of (i, j, same)."""
    path = Path(path)
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            i, j, same = (int(v) for v in parts)
        except ValueError:
            raise DataError(f"{path}: line {number} is not 'i j same': {line!r}") from None
        if not (0 <= i < num_images and 0 <= j < num_images) or same not in (0, 1):
            raise DataError(
                f"{path}: line {number} refers to image {max(i, j)} or label {same}, but the "
                f"validation set has {num_images} images and labels are 0/1"
            )
        rows.append((i, j, same))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


@dataclass
class ValidationSet:
    """Verification pairs over aligned crops.

    images: (N, 112, 112, 3) uint8 RGB. labels: (N,) identity index. pairs: (P, 2) int64 image
    positions. same: (P,) bool.
    """

    images: np.ndarray
    labels: np.ndarray
    pairs: np.ndarray
    same: np.ndarray
    source: Path
    description: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pairs)


def decode_crop(data: bytes, name: str = "image", size: int = CROP_SIZE) -> np.ndarray:
    """Decode JPEG/PNG bytes to a (size, size, 3) RGB uint8 crop (resized if another size)."""
    import cv2

    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if array is None:
        raise DataError(f"{name}: the image bytes cannot be decoded")
    if array.shape[:2] != (size, size):
        array = cv2.resize(array, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


def read_validation(path: str | os.PathLike) -> ValidationSet | None:
    """The validation pairs of a pack (or of a folder holding `val.rec/.idx` + `val_pairs.txt`).

    Returns None when `path` has no validation files; raises `DataError` when they are broken.
    """
    folder = Path(path)
    rec, pairs_file = folder / VAL_REC, folder / VAL_PAIRS_FILE
    if not rec.is_file() and not pairs_file.is_file():
        return None
    for needed in (rec, rec.with_suffix(".idx"), pairs_file):
        if not needed.is_file():
            raise DataError(f"{needed}: missing (validation needs val.rec, val.idx, val_pairs.txt)")
    records = read_image_set(rec)
    images = np.stack(
        [decode_crop(records.payload(i), f"{rec} image {i}") for i in range(len(records.keys))]
    )
    table = read_pairs_file(pairs_file, len(images))
    if len(table) == 0:
        raise DataError(f"{pairs_file}: no pairs listed")
    description = {"path": str(folder), "images": len(images), "pairs": len(table)}
    if is_pack(folder):
        description["identities"] = len(read_meta(folder).get("validation_identities", []))
    return ValidationSet(
        images=images,
        labels=records.labels,
        pairs=table[:, :2],
        same=table[:, 2].astype(bool),
        source=folder,
        description=description,
    )


def read_teacher(path: str | os.PathLike, num_images: int) -> np.ndarray | None:
    """The pack's teacher descriptors (N, D) float16, or None when the pack has none."""
    file = Path(path) / TEACHER_FILE
    if not file.is_file():
        return None
    teacher = np.load(file)
    if teacher.ndim != 2 or teacher.shape[0] != num_images:
        raise DataError(
            f"{file}: shape {teacher.shape} does not match the {num_images} training images; "
            "run `fmr prepare` again"
        )
    return teacher


@dataclass
class Canvases:
    """A pack's canvases (see the module docstring): `decode(i)` gives image i's (S, S, 3) RGB
    uint8 canvas; `chips` is (N, 2, 3) float32."""

    records: object  # fmr.data.recordio.ImageRecords
    chips: np.ndarray
    size: int

    def decode(self, i: int) -> np.ndarray:
        return decode_crop(self.records.payload(int(i)), f"canvas {i}", self.size)


def read_canvases(path: str | os.PathLike, num_images: int, size: int,
                  validation: bool = False) -> Canvases | None:
    """The pack's canvases (`size` pixels a side, from meta.json) of its training images, or of
    its validation images with `validation`; None when it was prepared without them."""
    folder = Path(path)
    rec, chips_file = ((folder / VAL_CANVAS_REC, folder / VAL_CHIPS_FILE) if validation
                       else (folder / CANVAS_REC, folder / CHIPS_FILE))
    if not rec.is_file():
        return None
    if not chips_file.is_file():
        raise DataError(f"{chips_file}: missing beside {rec}; run `fmr prepare --canvases` again")
    records = read_image_set(rec)
    chips = np.load(chips_file)
    if len(records.keys) != num_images or chips.shape != (num_images, 2, 3):
        raise DataError(
            f"{rec}: {len(records.keys)} canvases and chips {chips.shape} for {num_images} "
            "images; run `fmr prepare --canvases` again"
        )
    return Canvases(records, chips.astype(np.float32), int(size))


HELD_OUT_PRESETS = ("original",)  # packs whose validation photos are held out of their classes


@dataclass
class HeldOutClasses:
    """The validation photos of a pack with a held-out split, as class ids.

    class_ids: (N,) int64, the class (index into `names`) of each validation image, in val.rec
    order. names: the pack's classes (meta.json `classes`), C identity names."""

    class_ids: np.ndarray
    names: list[str]

    @property
    def identities(self) -> int:
        return int(np.unique(self.class_ids).size)


def held_out_classes(meta: dict, validation_labels: np.ndarray) -> HeldOutClasses | None:
    """Map a pack's validation labels (indices into `validation_identities`) to its classes.

    Returns None when the pack has no held-out split (its preset is not one of
    `HELD_OUT_PRESETS`: its validation people are not its classes). Raises DataError when a
    validation identity is not a class or a label is out of range."""
    if meta.get("preset") not in HELD_OUT_PRESETS:
        return None
    names = [str(n) for n in meta.get("classes", [])]
    validation = [str(n) for n in meta.get("validation_identities", [])]
    class_of = {name: i for i, name in enumerate(names)}
    missing = [n for n in validation if n not in class_of]
    if missing:
        raise DataError(
            f"validation identities that are not classes of the pack: {missing[:5]}; the "
            "pack is inconsistent, run `fmr prepare` again"
        )
    labels = np.asarray(validation_labels, dtype=np.int64).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= len(validation)):
        raise DataError(
            f"validation labels run from {int(labels.min())} to {int(labels.max())} but the "
            f"pack names {len(validation)} validation identities; run `fmr prepare` again"
        )
    mapping = np.asarray([class_of[n] for n in validation], dtype=np.int64)
    return HeldOutClasses(mapping[labels] if labels.size else labels, names)
