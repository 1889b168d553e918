"""A gallery of enrolled people: their embeddings, who each entry is, which photo it came from,
the model that made them, and the FAISS index over them. In memory, or saved in a folder.

    gallery = Gallery.from_arrays(embeddings, people, photos, backbone)   # in memory
    gallery.add(more, "Ada", ["ada3.jpg"])                                # ids come back
    gallery.remove_person("Bob")
    gallery.save("my_gallery")                                            # a folder
    gallery = Gallery.load("my_gallery")

A folder holds (FORMAT_VERSION 1):
    gallery.json                 what the gallery is (backbone, index, counts) and the names of
                                 the data files of its current generation
    entries-<gen>-<tag>.npz      embeddings (N, D) float32 unit rows, ids (N,) int64, people (N,),
                                 photos (N,), mask_probability (N,) float32 (NaN: not measured)
    index-<gen>-<tag>.faiss      the FAISS index over those embeddings (`fmr.gallery.index`)
    manifest.csv                 (`fmr gallery build` / `add`) every photo offered, ok or not
    .gallery.lock                what saves lock to take turns

Saving is atomic across the files: the new generation's data files are written under new names
(each through a temporary file), then gallery.json, which names them, is replaced in one
`os.replace` (the commit), then the files of older generations are deleted. A reader reads
gallery.json first and then the files it names, so it gets the old gallery or the new one, never
a mix; a crash before the commit leaves the old gallery whole (its stray new files are deleted
by the next save). Saves take turns (an advisory lock on .gallery.lock), and a save refuses to
overwrite a generation it did not read (two `fmr gallery add` at once: the second is told to
run again, its work is not silently lost).

Anything wrong with a folder (no gallery.json, bad JSON, another format version, missing or
damaged data files, shapes that disagree) raises `DataError` saying what and what to do.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import secrets
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fmr.errors import DataError, FmrError
from fmr.files import write_atomically, write_text_atomically
from fmr.gallery import index as faiss_index
from fmr.gallery.index import IndexChoice, choose_index

FORMAT = "fmr-gallery"
FORMAT_VERSION = 1
GALLERY_FILE = "gallery.json"
MANIFEST_FILE = "manifest.csv"
LOCK_FILE = ".gallery.lock"
DATA_FILE = re.compile(r"^(entries|index)-(\d+)-([0-9a-f]+)\.(npz|faiss)$")
INDEX_KINDS = ("auto", "exact", "ivf")
# An IVF index is retrained when the number of lists its size calls for is this far from its own.
IVF_RETRAIN_FACTOR = 2.0
UNIT_TOLERANCE = 1e-3
REBUILD_HINT = "rebuild it with `fmr gallery build PHOTOS --out FOLDER`"


@dataclass(frozen=True)
class BackboneInfo:
    """The model a gallery's embeddings come from. family: "dlib", "dlib-mask", "iresnet"...;
    name: the model card's name; checkpoint: the file it was loaded from; key: its checkpoint
    name plus a hash of its weights (`fmr.pipelines.embedding.embedder_key`; "dlib" for dlib's
    reference), what decides whether two models' embeddings compare; embedding_size: D."""

    family: str
    name: str
    checkpoint: str
    key: str
    embedding_size: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BackboneInfo:
        return cls(str(data["family"]), str(data["name"]), str(data["checkpoint"]),
                   str(data["key"]), int(data["embedding_size"]))

    def describe(self) -> str:
        return f"{self.family} ({self.key}, {self.embedding_size}-d)"


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def _names(values, count: int, what: str) -> list[str]:
    """A str (the same for every row) or a sequence of `count` strs."""
    if isinstance(values, str):
        return [values] * count
    values = [str(v) for v in values]
    if len(values) != count:
        raise ValueError(f"{count} embeddings but {len(values)} {what}")
    return values


def check_person_name(name: str) -> str:
    """A person's name as the gallery stores it (stripped); FmrError for an empty or multi-line
    name."""
    cleaned = str(name).strip()
    if not cleaned or "\n" in cleaned or "\r" in cleaned:
        raise FmrError(f"{name!r}: a person's name must be one non-empty line")
    return cleaned


def _unit_rows(vectors, dim: int | None) -> np.ndarray:
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim == 1 and array.size == 0:
        array = array.reshape(0, dim or 0)
    if array.ndim != 2 or (dim is not None and array.shape[1] != dim):
        want = f"(N, {dim})" if dim is not None else "(N, D)"
        raise ValueError(f"embeddings must be {want}, got shape {array.shape}")
    if array.size:
        norms = np.linalg.norm(array, axis=1)
        if not np.all(np.isfinite(norms)) or np.abs(norms - 1).max() > UNIT_TOLERANCE:
            raise ValueError("embeddings must be L2-normalised rows (norm 1); a failed photo's "
                             "zero row does not belong in a gallery")
    return array


@dataclass(eq=False)
class Gallery:
    """Enrolled faces and their search index. Build one with `from_arrays` (or `empty`), or
    `load` a saved folder.

    embeddings: (N, D) float32 unit rows; ids: (N,) int64, stable (an entry keeps its id across
    adds, removes and saves; removed ids are never reused); people, photos: (N,) who each entry
    is and the photo it came from; mask_probability: (N,) float32, the mask detector's
    probability that the enrolled face wears a mask (NaN: not measured); index_kind: what was
    asked for ("auto", "exact", "ivf"); choice, index: the FAISS index in use and why
    (`fmr.gallery.index.IndexChoice`). folder, generation: where it was loaded from or saved
    to, and which saved generation it is (0: never saved).
    """

    backbone: BackboneInfo
    embeddings: np.ndarray
    ids: np.ndarray
    people: list[str]
    photos: list[str]
    mask_probability: np.ndarray
    index_kind: str = "auto"
    choice: IndexChoice | None = None
    index: object = None
    next_id: int = 0
    created: str = field(default_factory=_now)
    updated: str = ""
    folder: Path | None = None
    generation: int = 0

    def __post_init__(self) -> None:
        if self.index_kind not in INDEX_KINDS:
            raise ValueError(f"index kind must be one of {', '.join(INDEX_KINDS)}, "
                             f"got {self.index_kind!r}")
        self.embeddings = _unit_rows(self.embeddings, self.backbone.embedding_size)
        count = self.embeddings.shape[0]
        self.ids = np.ascontiguousarray(self.ids, dtype=np.int64).reshape(-1)
        self.people = _names(self.people, count, "people")
        self.photos = _names(self.photos, count, "photos")
        if self.mask_probability is None:
            self.mask_probability = np.full(count, np.nan, np.float32)
        self.mask_probability = np.asarray(self.mask_probability, np.float32).reshape(-1)
        if self.ids.shape != (count,) or self.mask_probability.shape != (count,):
            raise ValueError(f"{count} embeddings but {self.ids.size} ids and "
                             f"{self.mask_probability.size} mask probabilities")
        if len(np.unique(self.ids)) != count or (count and self.ids.min() < 0):
            raise ValueError("entry ids must be distinct and non-negative")
        self.next_id = max(int(self.next_id), int(self.ids.max()) + 1 if count else 0)
        if self.index is None:
            self.choice = self._wanted_choice(count)
            self.index = faiss_index.build_index(self.embeddings, self.ids, self.choice)
        self._rows: dict[int, int] | None = None

    # ------------------------------------------------------------------------- making one
    @classmethod
    def from_arrays(
        cls,
        embeddings,
        people: str | Sequence[str],
        photos: Sequence[str],
        backbone: BackboneInfo,
        *,
        mask_probability=None,
        index_kind: str = "auto",
    ) -> Gallery:
        """A gallery in memory from embeddings (N, D) float32 unit rows, who each is (one name
        for all, or N names), the photo each came from (N names, e.g. upload file names) and the
        backbone that made them; ids are 0..N-1. Raises ValueError for arrays that disagree."""
        embeddings = _unit_rows(embeddings, backbone.embedding_size)
        count = embeddings.shape[0]
        people = [check_person_name(p) for p in _names(people, count, "people")]
        return cls(backbone, embeddings, np.arange(count, dtype=np.int64), people,
                   _names(photos, count, "photos"), mask_probability, index_kind)

    @classmethod
    def empty(cls, backbone: BackboneInfo, index_kind: str = "auto") -> Gallery:
        """A gallery with no one in it yet (`add` fills it)."""
        return cls.from_arrays(np.zeros((0, backbone.embedding_size), np.float32), [], [],
                               backbone, index_kind=index_kind)

    # ------------------------------------------------------------------------- reading it
    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def person_names(self) -> list[str]:
        """Everyone enrolled, sorted."""
        return sorted(set(self.people))

    def counts(self) -> dict[str, int]:
        """person -> number of entries, sorted by name."""
        names, counts = np.unique(np.asarray(self.people, dtype=str), return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts, strict=True)}

    def row_of(self, entry_id: int) -> int:
        """The row of entry `entry_id` in `embeddings`, `people`, `photos` (KeyError: none)."""
        if self._rows is None:
            self._rows = {int(i): row for row, i in enumerate(self.ids)}
        return self._rows[int(entry_id)]

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The `k` best entries for each query (Q, D): (cosine similarities, entry ids), best
        first, id -1 past the end (`fmr.gallery.index.search_index`)."""
        return faiss_index.search_index(self.index, queries, k)

    def describe(self) -> dict:
        """What the gallery is, JSON-ready (also the body of gallery.json)."""
        return {
            "entries": len(self),
            "people": len(set(self.people)),
            "embedding_size": self.backbone.embedding_size,
            "backbone": self.backbone.to_dict(),
            "index": {**self.choice.to_dict(), "requested": self.index_kind},
            "next_id": int(self.next_id),
            "created": self.created,
            "updated": self.updated or self.created,
        }

    def suggested_person(self, name: str) -> str:
        """A message for a person not in the gallery, naming a few who are."""
        known = self.person_names
        if not known:
            return f"no person named {name!r}: the gallery is empty"
        close = [n for n in known if name.lower() in n.lower() or n.lower() in name.lower()]
        shown = list(dict.fromkeys([*close, *known]))[:5]
        more = f" and {len(known) - len(shown)} more" if len(known) > len(shown) else ""
        return (f"no person named {name!r} in the gallery; it has {', '.join(shown)}{more} "
                "(`fmr gallery info GALLERY` lists them all)")

    # ------------------------------------------------------------------------- changing it
    def _wanted_choice(self, count: int) -> IndexChoice:
        if self.index_kind == "ivf" and count == 0:
            return IndexChoice("exact", reason="exact inner product (an empty gallery cannot "
                               "train IVF; it is trained when entries are added)")
        return choose_index(count, self.index_kind)

    def _reindex(self) -> bool:
        """Keep the index kind right for the gallery's size: rebuild it from all embeddings
        when the size crosses the exact/IVF boundary (or IVF's lists are far from what the size
        calls for). Returns whether it rebuilt."""
        wanted = self._wanted_choice(len(self))
        current = self.choice
        rebuild = wanted.kind != current.kind
        if not rebuild and wanted.kind == "ivf":
            ratio = max(wanted.nlist, 1) / max(current.nlist, 1)
            rebuild = not 1 / IVF_RETRAIN_FACTOR < ratio < IVF_RETRAIN_FACTOR
        if rebuild:
            self.choice = wanted
            self.index = faiss_index.build_index(self.embeddings, self.ids, wanted)
        elif wanted.kind == "exact":
            self.choice = wanted  # the same index; its reason states the new size
        return rebuild

    def add(self, embeddings, people: str | Sequence[str], photos: Sequence[str],
            mask_probability=None) -> np.ndarray:
        """Enrol more faces: embeddings (M, D) unit rows, who (one name or M names), the photo
        each came from. Returns their new ids (M,) int64."""
        embeddings = _unit_rows(embeddings, self.backbone.embedding_size)
        count = embeddings.shape[0]
        people = [check_person_name(p) for p in _names(people, count, "people")]
        photos = _names(photos, count, "photos")
        probability = (np.full(count, np.nan, np.float32) if mask_probability is None
                       else np.asarray(mask_probability, np.float32).reshape(count))
        ids = np.arange(self.next_id, self.next_id + count, dtype=np.int64)
        if not count:
            return ids
        self.embeddings = np.concatenate([self.embeddings, embeddings])
        self.ids = np.concatenate([self.ids, ids])
        self.people = [*self.people, *people]
        self.photos = [*self.photos, *photos]
        self.mask_probability = np.concatenate([self.mask_probability, probability])
        self.next_id += count
        self._rows = None
        if not self._reindex():  # a rebuilt index holds them already
            faiss_index.add_to_index(self.index, embeddings, ids)
        self.updated = _now()
        return ids

    def remove_ids(self, ids) -> int:
        """Remove the entries with `ids` (unknown ids are ignored); returns how many went."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        keep = ~np.isin(self.ids, ids)
        removed = int((~keep).sum())
        if not removed:
            return 0
        faiss_index.remove_from_index(self.index, self.ids[~keep])
        self.embeddings = self.embeddings[keep]
        self.ids = self.ids[keep]
        self.people = [p for p, k in zip(self.people, keep, strict=True) if k]
        self.photos = [p for p, k in zip(self.photos, keep, strict=True) if k]
        self.mask_probability = self.mask_probability[keep]
        self._rows = None
        self._reindex()
        self.updated = _now()
        return removed

    def remove_person(self, person: str) -> int:
        """Remove every entry of `person`; returns how many. FmrError when no one has that name
        (the message names a few who are enrolled)."""
        rows = [i for i, p in enumerate(self.people) if p == person]
        if not rows:
            raise FmrError(self.suggested_person(person))
        return self.remove_ids(self.ids[rows])

    # ------------------------------------------------------------------------- the folder
    def save(self, folder: str | os.PathLike) -> Path:
        """Write the gallery to `folder` (created if needed) atomically: see the module
        docstring. Saves to one folder take turns (a lock file); a save over a generation
        this gallery was not read from raises DataError. Returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder):
            ours = self.folder is not None and _same_folder(self.folder, folder)
            try:
                previous = _read_meta(folder) if is_gallery(folder) else None
            except DataError:
                if ours:
                    raise
                previous = None  # a new gallery replaces a damaged one
            on_disk = int(previous.get("generation", 0)) if previous else 0
            if ours and previous is not None and on_disk != self.generation:
                raise DataError(
                    f"{folder}: the gallery changed since it was read (generation {on_disk}, "
                    f"read {self.generation}); another command wrote it meanwhile: run this one "
                    "again")
            # Past every generation on disk, strays of a crashed save included.
            strays = [int(m.group(2)) for m in map(DATA_FILE.match, os.listdir(folder)) if m]
            generation = max([on_disk, *strays]) + 1
            tag = secrets.token_hex(4)
            files = {"entries": f"entries-{generation:06d}-{tag}.npz",
                     "index": f"index-{generation:06d}-{tag}.faiss"}
            write_atomically(folder / files["entries"], lambda temporary: np.savez(
                temporary,
                embeddings=self.embeddings,
                ids=self.ids,
                people=np.array(self.people, dtype=str),
                photos=np.array(self.photos, dtype=str),
                mask_probability=self.mask_probability,
            ))
            faiss_index.write_index(self.index, folder / files["index"])
            from fmr import __version__

            self.updated = self.updated or self.created
            meta = {"format": FORMAT, "version": FORMAT_VERSION, "generation": generation,
                    "files": files, **self.describe(), "fmr_version": __version__}
            write_text_atomically(folder / GALLERY_FILE, json.dumps(meta, indent=1) + "\n")
            # Committed. The older generations' files (and strays of crashed saves) can go; a
            # reader still opening them finds gallery.json changed and reads the new one.
            for name in os.listdir(folder):
                if DATA_FILE.match(name) and name not in files.values():
                    (folder / name).unlink(missing_ok=True)
        self.folder, self.generation = folder, generation
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Gallery:
        """Read a saved gallery. DataError, saying what is wrong, for a folder that is missing,
        not a gallery, or damaged."""
        folder = Path(folder)
        for _attempt in range(5):
            meta = _read_meta(folder)
            try:
                return cls._load_generation(folder, meta)
            except _Vanished as exc:  # a save replaced the generation while it was being read
                missing = exc.path
                if _read_meta(folder).get("generation") == meta.get("generation"):
                    break
        raise DataError(f"{folder}: damaged gallery: {missing.name} (named in {GALLERY_FILE}) is "
                        f"missing; {REBUILD_HINT}")

    @classmethod
    def _load_generation(cls, folder: Path, meta: dict) -> Gallery:
        where = f"{folder}: damaged gallery"
        try:
            backbone = BackboneInfo.from_dict(meta["backbone"])
            files = {kind: str(meta["files"][kind]) for kind in ("entries", "index")}
            index_meta = meta["index"]
            choice = IndexChoice(str(index_meta["kind"]), int(index_meta.get("nlist", 0)),
                                 int(index_meta.get("nprobe", 0)),
                                 str(index_meta.get("reason", "")))
            requested = str(index_meta.get("requested", "auto"))
            entries = int(meta["entries"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"{where}: {GALLERY_FILE} lacks or garbles {exc}; {REBUILD_HINT}") \
                from None
        for name in files.values():
            if not DATA_FILE.match(name) or Path(name).name != name:
                raise DataError(f"{where}: {GALLERY_FILE} names {name!r}, not one of its data "
                                f"files; {REBUILD_HINT}")
        entries_file, index_file = folder / files["entries"], folder / files["index"]
        try:
            with np.load(entries_file, allow_pickle=False) as data:
                arrays = {key: data[key] for key in
                          ("embeddings", "ids", "people", "photos", "mask_probability")}
        except FileNotFoundError:
            raise _Vanished(entries_file) from None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{where}: {entries_file.name} is not readable ({exc}); "
                            f"{REBUILD_HINT}") from None
        if not index_file.is_file():
            raise _Vanished(index_file)
        try:
            index = faiss_index.read_index(index_file)
        except DataError:
            raise DataError(f"{where}: {index_file.name} is not a readable FAISS index "
                            f"(truncated or overwritten); {REBUILD_HINT}") from None
        embeddings = arrays["embeddings"]
        dim = backbone.embedding_size
        if embeddings.dtype != np.float32 or embeddings.shape != (entries, dim):
            raise DataError(f"{where}: {entries_file.name} holds embeddings of shape "
                            f"{embeddings.shape} {embeddings.dtype}, but {GALLERY_FILE} says "
                            f"{entries} entries of {dim} float32; {REBUILD_HINT}")
        if index.ntotal != entries or index.d != dim:
            raise DataError(f"{where}: {index_file.name} holds {index.ntotal} vectors of "
                            f"{index.d} dimensions, but {GALLERY_FILE} says {entries} of {dim}; "
                            f"{REBUILD_HINT}")
        if choice.kind not in ("exact", "ivf") or requested not in INDEX_KINDS:
            raise DataError(f"{where}: unknown index kind {choice.kind!r} in {GALLERY_FILE}; "
                            f"{REBUILD_HINT}")
        try:
            gallery = cls(
                backbone, embeddings, arrays["ids"], arrays["people"].tolist(),
                arrays["photos"].tolist(), arrays["mask_probability"], requested, choice,
                index, int(meta.get("next_id", 0)), str(meta.get("created", "")),
                str(meta.get("updated", "")), folder, int(meta.get("generation", 0)),
            )
        except ValueError as exc:
            raise DataError(f"{where}: {entries_file.name}: {exc}; {REBUILD_HINT}") from None
        if choice.kind == "exact":
            import faiss

            stored = np.sort(faiss.vector_to_array(index.id_map)) if hasattr(index, "id_map") \
                else None
            if stored is None or not np.array_equal(stored, np.sort(gallery.ids)):
                raise DataError(f"{where}: {index_file.name} does not hold the entries of "
                                f"{entries_file.name}; {REBUILD_HINT}")
        return gallery


class _Vanished(Exception):
    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path


@contextlib.contextmanager
def _locked(folder: Path):
    """Hold the folder's save lock (POSIX advisory lock on LOCK_FILE; none elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: saves do not take turns
        yield
        return
    with open(folder / LOCK_FILE, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def gallery_owned(name: str) -> bool:
    """Whether a file name in a gallery folder is one the gallery writes (a folder holding only
    such files, e.g. after a first save that crashed, may be built into)."""
    return (name in (GALLERY_FILE, MANIFEST_FILE, LOCK_FILE) or bool(DATA_FILE.match(name))
            or name.startswith("."))


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def is_gallery(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a gallery (a gallery.json; it may still be damaged)."""
    return (Path(folder) / GALLERY_FILE).is_file()


def _read_meta(folder: Path) -> dict:
    """gallery.json, checked to be a gallery of a version this fmr reads."""
    path = folder / GALLERY_FILE
    if not folder.exists():
        raise DataError(f"{folder}: no such gallery folder (make one with `fmr gallery build "
                        "PHOTOS --out FOLDER`)")
    if not folder.is_dir():
        raise DataError(f"{folder}: is a file, not a gallery folder")
    if not path.is_file():
        names = os.listdir(folder)
        if any(DATA_FILE.match(name) for name in names):
            raise DataError(f"{folder}: damaged gallery: its {GALLERY_FILE} is missing (its data "
                            f"files are there); {REBUILD_HINT}")
        what = "an empty folder" if not names else "a folder without one"
        raise DataError(f"{folder}: not a gallery: no {GALLERY_FILE} ({what}); make one with "
                        "`fmr gallery build PHOTOS --out FOLDER`")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{folder}: damaged gallery: {GALLERY_FILE} is not readable JSON "
                        f"({exc}); {REBUILD_HINT}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{folder}: {GALLERY_FILE} is not an fmr gallery's (no \"format\": "
                        f"\"{FORMAT}\")")
    if meta.get("version") != FORMAT_VERSION:
        raise DataError(f"{folder}: a gallery of format version {meta.get('version')!r}; this fmr "
                        f"reads version {FORMAT_VERSION}: rebuild it with this fmr (`fmr gallery "
                        "build`) or use the fmr that made it")
    return meta
