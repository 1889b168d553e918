"""`fmr prepare`: raw photos -> detect and align -> (masked copies) -> clean -> split -> pack.

Two presets:

- `shared` (the shared data, ../shared/data): training identities are the CelebA subset people
  plus the LFW people not in pair folds 6-10, minus the validation identities of
  `fmr.data.splits.shared_split`; validation pairs are that split's `validation_pairs`. LFW
  folds 6-10 never enter the pack. Training identities with a single usable photo cannot form
  an ArcFace class: with `--teacher dlib` they stay as label -1 (distillation only), otherwise
  they are dropped and reported.
- `original` (the recipe of the project fmr grew from), on an image folder with one sub-folder
  per identity: align each photo, draw one synthetic mask on a copy (`fmr.masks.mask_aligned`,
  training styles), keep identities with at least `--min-masked` masked images, split 90/10 per
  identity (validation pairs from the held-out 10%), and augment the training part by rotation
  and horizontal flip. When the photos are (a part of) the shared data, the LFW people of pair
  folds 6-10 are left out (`--exclude-evaluation-people`, on by default there; see
  `plan_original`).

Every photo goes through fmr's one face path (`find_face` -> `align_face`). Detection results
(and teacher descriptors) are cached per photo in a JSONL file keyed by the photo's bytes, so
an interrupted or repeated run skips the faces it has done. Output is deterministic for a given
`--seed`: identity and photo order are sorted, the seed drives every random choice, and JPEG
encoding is deterministic. See `fmr.data.pack` for the pack layout.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from fmr.data import pack as packs
from fmr.errors import DataError
from fmr.faces.align import WIDE_CANVAS

PRESETS = ("shared", "original")
QUALITY_LADDER = (95, 92, 90, 88, 86, 84, 82, 80, 78, 76, 74, 72, 70, 68, 66, 64, 62, 60, 55, 50)
DEFAULT_MAX_MIB = {"shared": 32.0, "original": None}
CACHE_FILE = "detections.jsonl"
DROPPED_FILE = "dropped.csv"
PACK_FILES = ("train.rec", "train.idx", "val.rec", "val.idx", "val_pairs.txt", "teacher.npy",
              "meta.json", DROPPED_FILE, "canvas.rec", "canvas.idx", "chips.npy",
              "val_canvas.rec", "val_canvas.idx", "val_chips.npy")
TEACHERS = ("dlib",)


@dataclass
class PrepareOptions:
    """Everything `fmr prepare` takes; see `fmr prepare --help` for the meaning of each."""

    preset: str
    out: Path
    source: Path | None = None  # shared: the shared data folder; original: the image folder
    seed: int = 0
    teacher: str | None = None
    quality: int | None = None  # None: the highest of QUALITY_LADDER that fits max_mib
    max_mib: float | None = None
    multi_face: str = "auto"  # auto: "center" for LFW (the person is centred), else main
    min_face: int = 40
    workers: int = 1
    cache_dir: Path | None = None
    max_identities: int | None = None
    max_validation_identities: int | None = None
    max_images_per_identity: int | None = None
    min_masked: int = 5
    val_fraction: float = 0.1
    rotation: float = 10.0
    canvases: bool = False  # shared: wide canvases + dlib chip geometry for consistent targets
    canvas_quality: int = 90
    progress: bool = True
    # original: leave out LFW evaluation people (pair folds 6-10). None: when the source (or
    # a photo in it, links resolved) lies inside the shared data folder.
    exclude_evaluation_people: bool | None = None


@dataclass(frozen=True)
class PlannedImage:
    """One photo to process: who it shows and where it goes."""

    path: Path
    identity: str
    split: str  # "train" | "validation"
    policy: str


@dataclass
class Plan:
    images: list[PlannedImage]
    validation_pairs: list[tuple[Path, Path, bool]] = field(default_factory=list)
    description: dict = field(default_factory=dict)
    dropped: list[dict] = field(default_factory=list)  # left out while planning (dropped.csv)


# ---------------------------------------------------------------------------------------------
# Planning: which photos, which identity, which split


def _limit_images(images: Sequence[Path], limit: int | None) -> list[Path]:
    images = sorted(images)
    return images if limit is None else images[:limit]


def plan_shared(options: PrepareOptions) -> Plan:
    """The shared-data preset's photo list (see the module docstring)."""
    from fmr.data.splits import SPLIT_SEED, shared_split, validation_pairs
    from fmr.settings import data_dir

    root = Path(options.source) if options.source else data_dir()
    split = shared_split(root)
    rng = random.Random(options.seed)
    train_keys = sorted(split.train)
    if options.max_identities is not None:
        # A slice keeps both sources: half CelebA, half LFW (LFW has many one-photo people).
        celeba = [k for k in train_keys if k.startswith("celeba/")]
        lfw = [k for k in train_keys if k.startswith("lfw/")]
        n_celeba = min(len(celeba), options.max_identities // 2)
        n_lfw = min(len(lfw), options.max_identities - n_celeba)
        train_keys = sorted(rng.sample(celeba, n_celeba) + rng.sample(lfw, n_lfw))
    val_keys = sorted(split.validation)
    if options.max_validation_identities is not None:
        count = min(len(val_keys), options.max_validation_identities)
        # Its own generator: the validation slice must not depend on the training slice.
        val_keys = sorted(random.Random(options.seed + 1).sample(val_keys, count))

    def policy(key: str) -> str:
        if options.multi_face != "auto":
            return options.multi_face
        return "center" if key.startswith("lfw/") else "main"

    images: list[PlannedImage] = []
    for key in train_keys:
        for path in _limit_images(split.train[key], options.max_images_per_identity):
            images.append(PlannedImage(path, key, "train", policy(key)))
    validation = {
        key: _limit_images(split.validation[key], options.max_images_per_identity)
        for key in val_keys
    }
    for key in val_keys:
        for path in validation[key]:
            images.append(PlannedImage(path, key, "validation", policy(key)))
    full = (
        options.max_validation_identities is None and options.max_images_per_identity is None
    )
    pairs = split.validation_pairs if full else validation_pairs(validation, seed=SPLIT_SEED)
    overlap = {k.split("/", 1)[1] for k in train_keys if k.startswith("lfw/")} & split.eval_people
    if overlap:  # shared_split guarantees this; checked again because it must never happen
        raise DataError(f"evaluation people in the training plan: {sorted(overlap)[:5]}")
    description = {
        "data_root": str(root),
        "training_identities_planned": len(train_keys),
        "validation_identities": val_keys,
        "excluded_evaluation_people": len(split.eval_people),
        "evaluation_folds": "LFW pairs.txt folds 6-10 (never in this pack)",
    }
    return Plan(images, pairs, description)


def plan_original(options: PrepareOptions) -> Plan:
    """Every photo of an image folder with one sub-folder per identity (90/10 split later)."""
    from fmr.batch import IMAGE_EXTENSIONS

    if options.source is None:
        raise DataError(
            "the original preset needs a photo folder: fmr prepare FOLDER --preset original"
        )
    root = Path(options.source)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected one sub-folder of photos per identity)")
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    photos = {
        folder: _limit_images([
            f for f in folder.rglob("*")
            if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".")
        ], options.max_images_per_identity)
        for folder in folders
    }
    description = {"data_root": str(root)}
    dropped = _exclude_evaluation_people(options, root, photos, description)
    if options.max_identities is not None:
        rng = random.Random(options.seed)
        kept = list(photos)
        kept = set(rng.sample(kept, min(len(kept), options.max_identities)))
        photos = {folder: files for folder, files in photos.items() if folder in kept}
    description["identities_planned"] = len(photos)
    policy = "main" if options.multi_face == "auto" else options.multi_face
    images: list[PlannedImage] = []
    for folder, files in photos.items():
        for path in files:
            images.append(PlannedImage(path, folder.name, "train", policy))
    if not images:
        raise DataError(f"{root}: no photos found in its sub-folders (one sub-folder per identity)")
    return Plan(images, [], description, dropped)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder)
    except ValueError:
        return False
    return True


def _exclude_evaluation_people(options: PrepareOptions, root: Path,
                               photos: dict[Path, list[Path]], description: dict) -> list[dict]:
    """Drop (from `photos`, in place) every identity that is or shows an LFW person of pair
    folds 6-10, when `options.exclude_evaluation_people` says so (None: when `root` or any of
    its photos, links resolved, lies inside the shared data folder). Returns dropped.csv rows
    and records what it did in `description`."""
    from fmr.data.splits import EvaluationPeople
    from fmr.settings import data_dir

    shared = data_dir()
    exclude = options.exclude_evaluation_people
    if exclude is None:
        exclude = _inside(root, shared) or any(
            _inside(p, shared) for files in photos.values() for p in files)
    description["evaluation_people_excluded"] = bool(exclude)
    if not exclude:
        return []
    people = EvaluationPeople(shared)
    dropped = []
    for folder in list(photos):
        person = people.identity(folder.name, photos[folder])
        if person is not None:
            del photos[folder]
            dropped.append({
                "what": "identity", "name": folder.name, "identity": folder.name,
                "reason": f"LFW evaluation person ({person}, pair folds 6-10): never trained on",
            })
    description["evaluation_identities_left_out"] = len(dropped)
    description["evaluation_folds"] = "LFW pairs.txt folds 6-10 (their people never in this pack)"
    return dropped


# ---------------------------------------------------------------------------------------------
# Per-photo work (runs in worker processes)


def _cache_key(photo: bytes, options: PrepareOptions, policy: str) -> str:
    # The photo's bytes, not its path and mtime: a data folder copied or laid out again (new
    # mtimes) or reached through links keeps its detections and teacher descriptors.
    digest = hashlib.sha256(photo).hexdigest()[:32]
    return f"sha256:{digest}|{policy}|{options.min_face}"


def load_cache(cache_file: Path) -> dict[str, dict]:
    """Read the per-photo cache; a line cut short by an interruption is skipped."""
    cache: dict[str, dict] = {}
    if not cache_file.is_file():
        return cache
    with open(cache_file, encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
                existing = cache.get(record["key"], {})
                cache[record["key"]] = {**existing, **record}
            except (ValueError, KeyError):
                continue
    return cache


def _encode_vector(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode("ascii")


def _decode_vector(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), "<f4").copy()


class _Worker:
    """Detect, align, (teacher), (mask) one photo; the state each worker process keeps."""

    def __init__(self, options: PrepareOptions, plan: dict[Path, PlannedImage], cache: dict,
                 cache_file: Path):
        self.options = options
        self.plan = plan
        self.cache = cache
        self.cache_file = cache_file
        self.teacher = None

    def start(self) -> None:  # once per worker process
        if self.options.teacher == "dlib" or self.options.canvases:
            from fmr.verify.dlib_reference import DlibReference

            self.teacher = DlibReference()

    def _append_cache(self, record: dict) -> None:
        # O_APPEND writes of one short line do not interleave between worker processes.
        line = (json.dumps(record) + "\n").encode("utf-8")
        fd = os.open(self.cache_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def __call__(self, item):
        from fmr.batch import ItemResult, item_seed
        from fmr.errors import FaceError
        from fmr.faces import Face, align_face, find_face, load_image
        from fmr.faces.io import read_image_bytes

        planned = self.plan[item.path]
        extra = {"identity": planned.identity, "split": planned.split}
        photo = read_image_bytes(item.path, name=item.given)  # read once: cache key and image
        key = _cache_key(photo, self.options, planned.policy)
        cached = self.cache.get(key)
        if cached and cached.get("status") == "failed":
            return ItemResult.failed(cached["reason"] + " (cached)", **extra)
        image = load_image(photo, name=item.given)
        if cached:
            face = Face(
                np.asarray(cached["box"], np.float32), float(cached["score"]),
                np.asarray(cached["landmarks"], np.float32), cached["source"],
            )
        else:
            try:
                face = find_face(image, planned.policy, item.given, self.options.min_face)
            except FaceError as exc:
                self._append_cache({"key": key, "status": "failed", "reason": str(exc)})
                raise
            cached = {
                "key": key, "status": "ok", "box": face.box.tolist(), "score": face.score,
                "landmarks": face.landmarks.tolist(), "source": face.source,
            }
            self._append_cache(cached)
        crop = align_face(image, face.landmarks)
        teacher = None
        if self.options.canvases:
            extra["canvas"], extra["chip"] = wide_canvas(image, face, self.teacher)
        if self.options.teacher == "dlib":
            if "teacher" in cached:
                teacher = _decode_vector(cached["teacher"])
            else:
                teacher = self.teacher.embed(image, face)
                self._append_cache({"key": key, "teacher": _encode_vector(teacher)})
        masked = None
        if self.options.preset == "original":
            from fmr.masks import TRAIN_STYLES, mask_aligned

            rng = np.random.default_rng(item_seed(self.options.seed, item))
            style = TRAIN_STYLES[int(rng.integers(len(TRAIN_STYLES)))]
            try:
                masked, info = mask_aligned(crop, style, rng, refine=True)
                extra["mask"] = info.get("style", style)
            except Exception as exc:  # a mask that cannot be drawn costs this copy, not the run
                extra["mask"] = f"failed: {exc}"
        extra.update(
            detector=face.source,
            score="" if np.isnan(face.score) else f"{face.score:.4f}",
            crop=crop, teacher=teacher, masked=masked,
        )
        return ItemResult("ok", output="", extra=extra)


def chip_to_photo(details) -> np.ndarray:
    """2x3 map from the pixels of dlib's face chip (`dlib.get_face_chip_details`) to the photo's:
    the chip's square, rotated by `angle` about the rectangle's centre."""
    rect = details.rect
    cx, cy = (rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2
    sx = (rect.right() - rect.left()) / (details.cols - 1)
    sy = (rect.bottom() - rect.top()) / (details.rows - 1)
    cos, sin = np.cos(details.angle), np.sin(details.angle)
    u0, v0 = (details.cols - 1) / 2, (details.rows - 1) / 2
    return np.array([
        [cos * sx, -sin * sy, cx - (cos * sx * u0 - sin * sy * v0)],
        [sin * sx, cos * sy, cy - (sin * sx * u0 + cos * sy * v0)],
    ])


def wide_canvas(image: np.ndarray, face, reference) -> tuple[np.ndarray, np.ndarray]:
    """(canvas, chip_to_template) of one face for consistent distillation targets: the photo on
    `fmr.faces.align.WIDE_CANVAS` (the ArcFace alignment with a margin, at 1.5x) and the 2x3 map
    from dlib's 150x150 chip pixels (its own 5-point alignment, as `DlibReference.chip`) to
    template coordinates. `reference`: a `DlibReference`."""
    import dlib

    from fmr.faces.align import WIDE_CANVAS, align_to_canvas, alignment_matrix
    from fmr.verify.dlib_reference import CHIP_PADDING, CHIP_SIZE

    to_template = np.vstack([alignment_matrix(face.landmarks), [0, 0, 1]])
    canvas = align_to_canvas(image, face.landmarks, WIDE_CANVAS)
    details = dlib.get_face_chip_details(reference.shape(image, face), CHIP_SIZE, CHIP_PADDING)
    chip = (to_template @ np.vstack([chip_to_photo(details), [0, 0, 1]]))[:2]
    return canvas, chip.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Assembly: classes, splits, augmentation, encoding


def _encode_jpeg(crop: np.ndarray, quality: int) -> bytes:
    import cv2

    bgr = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
    # Optimised Huffman tables: about 12% smaller crops at the same quality, still baseline JPEG.
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_OPTIMIZE, 1]
    ok, data = cv2.imencode(".jpg", bgr, params)
    if not ok:  # pragma: no cover - cv2 always encodes a uint8 image
        raise DataError("JPEG encoding failed")
    return data.tobytes()


def _rotate(crop: np.ndarray, degrees: float) -> np.ndarray:
    import cv2

    matrix = cv2.getRotationMatrix2D((crop.shape[1] / 2, crop.shape[0] / 2), degrees, 1.0)
    return cv2.warpAffine(crop, matrix, crop.shape[1::-1], flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT)


@dataclass
class _Entry:
    crop: np.ndarray
    identity: str
    path: Path
    teacher: np.ndarray | None
    kind: str = "photo"  # photo | masked | flip | rotate
    canvas: np.ndarray | None = None  # --canvases: the wide canvas and dlib chip geometry
    chip: np.ndarray | None = None


def _records_size(encoded: Sequence[bytes]) -> int:
    # A record adds 8 (RecordIO) + 24 (IRHeader) bytes, padding to 4, and a ~16-byte index line.
    return sum(len(e) + 32 + (-(len(e) + 24) % 4) + 16 for e in encoded)


def _choose_quality(crops: Sequence[np.ndarray], options: PrepareOptions, fixed_bytes: int):
    """Encode at the highest quality of QUALITY_LADDER whose pack fits `max_mib` (binary search:
    size grows with quality), or at `options.quality`. Returns (quality, encoded, table of
    the sizes tried)."""
    budget = None if options.max_mib is None else options.max_mib * 2**20 - fixed_bytes
    table: list[dict] = []
    tried: dict[int, list[bytes]] = {}

    def size_at(quality: int) -> int:
        tried[quality] = [_encode_jpeg(c, quality) for c in crops]
        size = _records_size(tried[quality])
        table.append({"quality": quality, "mib": round((size + fixed_bytes) / 2**20, 2)})
        return size

    if options.quality is not None:
        if size_at(options.quality) > (budget if budget is not None else float("inf")):
            raise DataError(
                f"the pack needs {table[-1]['mib']} MiB at JPEG quality {options.quality}, more "
                f"than --max-mib {options.max_mib}; lower --quality or raise --max-mib"
            )
        return options.quality, tried[options.quality], table
    ladder = sorted(QUALITY_LADDER)  # ascending
    if size_at(ladder[-1]) <= (budget if budget is not None else float("inf")):
        return ladder[-1], tried[ladder[-1]], table
    low, high = 0, len(ladder) - 1  # invariant: ladder[high] does not fit
    if size_at(ladder[0]) > budget:
        raise DataError(
            f"the pack does not fit {options.max_mib} MiB even at JPEG quality {ladder[0]} "
            f"({table[-1]['mib']} MiB); raise --max-mib or use fewer images"
        )
    while high - low > 1:
        middle = (low + high) // 2
        if size_at(ladder[middle]) <= budget:
            low = middle
        else:
            high = middle
    table.sort(key=lambda row: -row["quality"])
    return ladder[low], tried[ladder[low]], table


@dataclass
class PrepareResult:
    out: Path
    meta: dict
    seconds: float


def prepare(options: PrepareOptions) -> PrepareResult:
    """Run the whole preparation (see the module docstring) and write the pack."""
    from fmr.batch import BatchInput, run_batch

    if options.preset not in PRESETS:
        raise DataError(f"unknown preset {options.preset!r}; choose one of {', '.join(PRESETS)}")
    if options.canvases and options.preset != "shared":
        raise DataError("--canvases is for the shared preset (the original preset stores "
                        "augmented copies, which have no photo to cut a canvas from)")
    if options.teacher not in (None, *TEACHERS):
        raise DataError(f"unknown teacher {options.teacher!r}; choose one of {', '.join(TEACHERS)}")
    if options.max_mib is None:
        options.max_mib = DEFAULT_MAX_MIB[options.preset]
    started = time.monotonic()
    plan = plan_shared(options) if options.preset == "shared" else plan_original(options)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    # The cache lives beside the pack, not in it: the pack travels to the GPU machine.
    cache_dir = Path(options.cache_dir or out.parent / ".fmr-prepare-cache" / out.name)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache_file = cache_dir / CACHE_FILE
    cache = load_cache(cache_file)

    items = []
    for planned in plan.images:
        source = planned.path.resolve()
        relative = PurePosixPath(planned.split, *planned.identity.split("/"), source.name)
        items.append(BatchInput(source, str(planned.path), relative))
    by_path = {item.path: planned for item, planned in zip(items, plan.images, strict=True)}
    worker = _Worker(options, by_path, cache, cache_file)
    summary = run_batch(
        items, worker, out, command="prepare", workers=options.workers, initializer=worker.start,
        extra_columns=("identity", "split", "detector", "score", "mask"),
        progress=options.progress,
    )
    meta = _assemble(options, plan, items, summary.results, out)
    meta["seconds"] = round(time.monotonic() - started, 1)
    for _ in range(2):  # the second pass records the size including meta.json itself
        (out / packs.META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
        meta["pack_mib"] = round(size / 2**20, 2)
    counts = meta["counts"]
    labelled = counts["training_images"] - counts["distillation_only_images"]
    print(
        f"fmr prepare: {labelled} training images of {counts['training_classes']} identities "
        f"+ {counts['distillation_only_images']} distillation-only images, "
        f"{counts['validation_images']} validation images, {counts['validation_pairs']} pairs; "
        f"dropped {counts['photos_failed']} photos and {counts['dropped_identities']} identities "
        f"(see {out / DROPPED_FILE}); pack {meta['pack_mib']} MiB (whole folder) at JPEG "
        f"quality {meta['jpeg_quality']}: {out}",
        file=sys.stderr,
    )
    return PrepareResult(out, meta, meta["seconds"])


def _assemble(options: PrepareOptions, plan: Plan, items, results, out: Path) -> dict:
    dropped: list[dict] = list(plan.dropped)
    train: dict[str, list[_Entry]] = {}
    validation: dict[str, list[_Entry]] = {}
    masked_counts: dict[str, int] = {}
    failed_photos = 0
    for item, planned, result in zip(items, plan.images, results, strict=True):
        if result.status != "ok":
            failed_photos += 1
            dropped.append({"what": "photo", "name": str(item.path), "identity": planned.identity,
                            "reason": result.reason})
            continue
        extra = result.extra
        entry = _Entry(extra["crop"], planned.identity, item.path, extra["teacher"],
                       canvas=extra.get("canvas"), chip=extra.get("chip"))
        target = train if planned.split == "train" else validation
        target.setdefault(planned.identity, []).append(entry)
        if extra.get("masked") is not None:
            masked_counts[planned.identity] = masked_counts.get(planned.identity, 0) + 1
            target[planned.identity].append(
                _Entry(extra["masked"], planned.identity, item.path, extra["teacher"], "masked")
            )
    # Identities planned but with no usable photo at all.
    for identity in sorted({p.identity for p in plan.images if p.split == "train"} - set(train)):
        dropped.append({"what": "identity", "name": identity, "identity": identity,
                        "reason": "no face found in any of its photos"})

    if options.preset == "original":
        train, validation, pairs = _original_split(options, train, masked_counts, dropped)
    else:
        pairs = _shared_pairs(plan, validation, dropped)

    classes: list[str] = []
    labelled: list[_Entry] = []
    unlabelled: list[_Entry] = []
    for identity in sorted(train):
        entries = train[identity]
        photos = {e.path for e in entries}
        if len(photos) >= 2 or options.preset == "original":
            classes.append(identity)
            labelled.extend(entries)
        elif options.canvases or (options.teacher
                                  and all(e.teacher is not None for e in entries)):
            # An online teacher (canvases) or a stored descriptor gives these photos a target.
            unlabelled.extend(entries)
        else:
            dropped.append({
                "what": "identity", "name": identity, "identity": identity,
                "reason": "a single usable photo: no same-person pair for ArcFace "
                "(kept for distillation only with --teacher dlib or --canvases)",
            })
    # --max-identities 0 (shared): a validation-only pack, for `train.py --val` beside a pack
    # of another preset.
    validation_only = options.preset == "shared" and options.max_identities == 0
    if len(classes) < 2 and not validation_only:
        raise DataError(
            f"only {len(classes)} identity with two or more usable photos: training needs at "
            "least two; check the photos (see manifest.csv and dropped.csv in "
            f"{out})"
        )
    class_of = {identity: i for i, identity in enumerate(classes)}
    train_entries = labelled + unlabelled
    train_labels = [class_of[e.identity] for e in labelled] + [-1] * len(unlabelled)
    val_identities = sorted(validation)
    val_entries = [e for identity in val_identities for e in validation[identity]]
    val_labels = [val_identities.index(e.identity) for e in val_entries]

    teacher = None
    if options.teacher and train_entries:
        dim = next(e.teacher for e in train_entries if e.teacher is not None).shape[0]
        teacher = np.full((len(train_entries), dim), np.nan, dtype=np.float16)
        for i, e in enumerate(train_entries):
            if e.teacher is not None:
                teacher[i] = e.teacher.astype(np.float16)
    # Files of an earlier run into the same folder must not survive (a stale teacher.npy...).
    for name in PACK_FILES:
        (out / name).unlink(missing_ok=True)
    with open(out / DROPPED_FILE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["what", "name", "identity", "reason"])
        writer.writeheader()
        writer.writerows(dropped)
    if teacher is not None:
        np.save(out / packs.TEACHER_FILE, teacher)
    if val_entries:
        packs.write_pairs(out / packs.VAL_PAIRS_FILE, pairs)
    # The size budget covers the whole folder but the canvases (CPU training with an online
    # teacher; they do not travel to a GPU machine): what is on disk now, meta.json (from
    # its class lists), and the records' header, identity records and index lines.
    on_disk = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    names = classes + val_identities + [e.identity for e in unlabelled]
    fixed = on_disk + 2 * sum(len(n) + 4 for n in names) + 32 * 1024
    fixed += 64 * (len(classes) + len(val_identities) + 2)
    crops = [e.crop for e in train_entries] + [e.crop for e in val_entries]
    quality, encoded, table = _choose_quality(crops, options, fixed)
    train_encoded, val_encoded = encoded[: len(train_entries)], encoded[len(train_entries) :]
    packs.write_pack_images(out, "train", train_encoded, train_labels)
    if options.canvases:
        canvases = [_encode_jpeg(e.canvas, options.canvas_quality) for e in train_entries]
        packs.write_pack_images(out, "canvas", canvases, train_labels)
        np.save(out / packs.CHIPS_FILE, np.stack([e.chip for e in train_entries]))
    if val_entries:
        packs.write_pack_images(out, "val", val_encoded, val_labels)
        if options.canvases:  # what validates a network that reads dlib's chip
            canvases = [_encode_jpeg(e.canvas, options.canvas_quality) for e in val_entries]
            packs.write_pack_images(out, "val_canvas", canvases, val_labels)
            np.save(out / packs.VAL_CHIPS_FILE, np.stack([e.chip for e in val_entries]))

    meta = {
        "format": packs.PACK_FORMAT,
        "version": packs.PACK_VERSION,
        "preset": options.preset,
        "seed": options.seed,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "jpeg_quality": quality,
        "size_vs_quality_mib": table,
        "crop_size": packs.CROP_SIZE,
        "alignment": "ArcFace 5-point template (fmr.faces.align_face), MTCNN landmarks",
        "canvases": {"file": packs.CANVAS_REC, "chips": packs.CHIPS_FILE,
                     "margin": WIDE_CANVAS.margin, "scale": WIDE_CANVAS.scale,
                     "size": WIDE_CANVAS.size, "jpeg_quality": options.canvas_quality}
        if options.canvases else None,
        "masks": "none stored: training draws them on the fly"
        if options.preset == "shared" else "one masked copy per photo (fmr.masks training styles)",
        "teacher": "dlib_face_recognition_resnet_model_v1 (128-d, unit norm, unmasked photo)"
        if teacher is not None else None,
        "sources": plan.description,
        "classes": classes,
        "distillation_identities": sorted({e.identity for e in unlabelled}),
        "validation_identities": val_identities,
        "counts": {
            "photos_planned": len(plan.images),
            "photos_failed": failed_photos,
            "training_images": len(train_entries),
            "training_classes": len(classes),
            "distillation_only_images": len(unlabelled),
            "validation_images": len(val_entries),
            "validation_pairs": len(pairs),
            "validation_genuine_pairs": sum(1 for p in pairs if p[2]),
            "dropped_identities": sum(1 for d in dropped if d["what"] == "identity"),
        },
        "pack_mib": None,  # the whole folder, filled in once meta.json is written
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
    }
    return meta


def _shared_pairs(plan: Plan, validation: dict[str, list[_Entry]], dropped: list[dict]):
    position: dict[Path, int] = {}
    for identity in sorted(validation):
        for entry in validation[identity]:
            position[entry.path.resolve()] = len(position)
    pairs = []
    lost = 0
    for a, b, same in plan.validation_pairs:
        i, j = position.get(Path(a).resolve()), position.get(Path(b).resolve())
        if i is None or j is None:
            lost += 1
            continue
        pairs.append((i, j, bool(same)))
    if lost:
        dropped.append({"what": "pairs", "name": f"{lost} validation pairs", "identity": "",
                        "reason": "a photo of the pair has no usable face"})
    return pairs


def _original_split(options, train, masked_counts, dropped):
    """Keep identities with enough masked images, split 90/10 per identity, augment training."""
    from fmr.data.splits import validation_pairs

    rng = random.Random(options.seed)
    kept_train: dict[str, list[_Entry]] = {}
    kept_val: dict[str, list[_Entry]] = {}
    for identity in sorted(train):
        if masked_counts.get(identity, 0) < options.min_masked:
            dropped.append({
                "what": "identity", "name": identity, "identity": identity,
                "reason": f"{masked_counts.get(identity, 0)} masked images, fewer than "
                f"--min-masked {options.min_masked}",
            })
            continue
        photos = sorted({e.path for e in train[identity]})
        n_val = int(round(len(photos) * options.val_fraction)) if len(photos) >= 3 else 0
        held_out = set(rng.sample(photos, n_val))
        # Validation keeps the unmasked photo only: training's validation masks the second
        # photo of each pair itself, with fixed seeds.
        held = [e for e in train[identity] if e.path in held_out and e.kind == "photo"]
        entries_train = [e for e in train[identity] if e.path not in held_out]
        augmented = list(entries_train)
        for e in entries_train:
            flipped = np.ascontiguousarray(e.crop[:, ::-1])
            augmented.append(_Entry(flipped, identity, e.path, e.teacher, "flip"))
            angle = rng.choice((-1, 1)) * options.rotation
            augmented.append(_Entry(_rotate(e.crop, angle), identity, e.path, e.teacher, "rotate"))
        kept_train[identity] = augmented
        if held:
            kept_val[identity] = held
    position = {e.path: i for i, e in enumerate(e for k in sorted(kept_val) for e in kept_val[k])}
    photo_lists = {k: [e.path for e in v] for k, v in kept_val.items()}
    pairs = [
        (position[a], position[b], same)
        for a, b, same in validation_pairs(photo_lists, seed=options.seed)
    ]
    return kept_train, kept_val, pairs
