"""Training data behind one interface, whatever `--data` points at.

`open_training_set(path)` accepts:
- an fmr pack (`fmr prepare`'s output: `meta.json`, `train.rec/.idx`, maybe `teacher.npy`,
  validation pairs);
- a folder holding `train.rec` + `train.idx` (insightface's MS1M / Glint360K layout; no
  `property` file or `.bin` sets needed), or a `.rec` file directly;
- an image folder with one sub-folder per identity (`root/<identity>/<image>`), images being
  aligned 112x112 crops (other sizes are resized: align them with `fmr align` / `fmr prepare`
  first for a useful model).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmr.data import pack as packs
from fmr.data.recordio import ImageRecords, read_image_set
from fmr.errors import DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})


@dataclass
class TrainingSet:
    """Images with class labels (and optional teacher descriptors) for training.

    labels: (N,) int64 classes in 0..num_classes-1, or -1 for images without a class (they only
    serve distillation). teacher: (N, D) float16 unit-norm descriptors or None; NaN rows = none.
    `encoded(i)` returns image i's file bytes; `decode(i)` a (112, 112, 3) RGB uint8 crop.
    """

    path: Path
    kind: str  # "pack" | "recordio" | "folder"
    labels: np.ndarray
    num_classes: int
    teacher: np.ndarray | None
    _read: Callable[[int], bytes]
    meta: dict = field(default_factory=dict)
    canvases: packs.Canvases | None = None  # `fmr prepare --canvases`: wide canvases + chips

    def __len__(self) -> int:
        return len(self.labels)

    def encoded(self, i: int) -> bytes:
        return self._read(int(i))

    def decode(self, i: int) -> np.ndarray:
        return packs.decode_crop(self.encoded(i), f"{self.path} image {i}")

    def describe(self) -> dict:
        """A JSON-ready summary for logs and model cards."""
        info = {
            "path": str(self.path),
            "kind": self.kind,
            "images": int(len(self.labels)),
            "classes": int(self.num_classes),
            "unlabelled_images": int((self.labels < 0).sum()),
            "teacher": None,
            "canvases": self.canvases is not None,
        }
        if self.teacher is not None:
            info["teacher"] = {
                "model": self.meta.get("teacher", "unknown"),
                "dimension": int(self.teacher.shape[1]),
                "images": int(np.isfinite(self.teacher[:, 0].astype(np.float32)).sum()),
            }
        for key in ("preset", "seed", "jpeg_quality", "sources", "created"):
            if key in self.meta:
                info[key] = self.meta[key]
        return info


def _check_classes(path: Path, labels: np.ndarray) -> int:
    if len(labels) == 0:
        raise DataError(f"{path}: no training images found")
    labelled = labels[labels >= 0]
    classes = np.unique(labelled)
    if len(classes) < 2:
        raise DataError(
            f"{path}: {len(classes)} identity with a class label; training needs at least two "
            "identities (ArcFace separates identities from each other)"
        )
    if classes[0] != 0 or classes[-1] != len(classes) - 1:
        # Arbitrary label values (e.g. a subset of MS1M): remap them to 0..C-1.
        remap = np.full(int(classes[-1]) + 1, -1, dtype=np.int64)
        remap[classes] = np.arange(len(classes))
        labels[labels >= 0] = remap[labelled]
    return len(classes)


def _from_records(path: Path, records: ImageRecords, kind: str, meta: dict) -> TrainingSet:
    labels = records.labels.copy()
    num_classes = _check_classes(path, labels)
    teacher = packs.read_teacher(path, len(labels)) if kind == "pack" else None
    canvases = None
    if kind == "pack" and meta.get("canvases"):
        canvases = packs.read_canvases(path, len(labels), meta["canvases"]["size"])
    return TrainingSet(path, kind, labels, num_classes, teacher, records.payload, meta,
                       canvases)


def _image_folder(path: Path) -> TrainingSet:
    identities = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    files: list[Path] = []
    labels: list[int] = []
    for identity in identities:
        images = sorted(
            f for f in identity.iterdir()
            if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")
        )
        if not images:
            continue
        label = len({*labels})  # the next class number
        files.extend(images)
        labels.extend([label] * len(images))
    label_array = np.asarray(labels, dtype=np.int64)
    num_classes = _check_classes(path, label_array)

    def read(i: int) -> bytes:
        try:
            return files[i].read_bytes()
        except OSError as exc:
            raise DataError(f"{files[i]}: cannot be read ({exc})") from exc

    meta = {"identities": [d.name for d in identities]}
    return TrainingSet(path, "folder", label_array, num_classes, None, read, meta)


def open_training_set(path: str | os.PathLike) -> TrainingSet:
    """Open `path` as training data (see the module docstring). Raises `DataError` when it is
    missing, empty, has a single identity, or is in no format fmr reads."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (pass a pack, a train.rec folder or an "
                        "image folder with one sub-folder per identity)")
    if path.is_file():
        if path.suffix != ".rec":
            raise DataError(f"{path}: expected a folder, or a .rec file with its .idx beside it")
        return _from_records(path.parent, read_image_set(path), "recordio", {})
    if packs.is_pack(path):
        meta = packs.read_meta(path)
        return _from_records(path, read_image_set(path / packs.TRAIN_REC), "pack", meta)
    if (path / packs.TRAIN_REC).is_file():
        return _from_records(path, read_image_set(path / packs.TRAIN_REC), "recordio", {})
    if any(d.is_dir() for d in path.iterdir()):
        return _image_folder(path)
    if any(f.suffix.lower() in IMAGE_SUFFIXES for f in path.iterdir()):
        raise DataError(
            f"{path}: images lie directly in this folder; training needs one sub-folder per "
            "identity (root/<person>/<image>.jpg)"
        )
    raise DataError(
        f"{path}: empty, or not training data: expected an fmr pack (fmr prepare), train.rec + "
        "train.idx, or one sub-folder of images per identity"
    )


def open_validation(path: str | os.PathLike) -> packs.ValidationSet | None:
    """Validation pairs from a pack or a folder with `val.rec/.idx` + `val_pairs.txt`."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such folder (--val expects a pack or a folder with val.rec)")
    if path.is_file():
        path = path.parent
    return packs.read_validation(path)
