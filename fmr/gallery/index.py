"""The search index of a gallery: FAISS over L2-normalised embeddings, inner product = cosine.

Two kinds, chosen by the gallery's size (`choose_index`):
- "exact" (`IndexFlatIP` inside `IndexIDMap2`): every entry scored; exact, no training; a
  search costs O(entries), a few milliseconds per 100k entries of 128 floats on 2 cores.
- "ivf" (`IndexIVFFlat`, inner product): entries grouped around `nlist` k-means centroids; a
  search scores the `nprobe` nearest groups only. Approximate; `benchmarks/gallery.py`
  measures its recall@1 against exact search and its speed, and sets the defaults below.
Both keep each entry's stable id (int64), so entries can be added and removed without
rebuilding. Vectors cross this module's boundary as float32 (N, D) unit rows.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fmr.errors import DataError
from fmr.files import write_atomically

# Up to this many entries the exact index is fast enough (benchmarks/gallery.py); above it IVF.
EXACT_MAX_ENTRIES = 100_000
# IVF: about 4 * sqrt(N) lists, each trained on at most this many vectors per list.
IVF_TRAIN_PER_LIST = 64
# Lists searched: an eighth of them, and at least 256. Face embeddings are crowded (people
# differ by a few tens of degrees), so IVF needs a wide search: on vectors fitted to real dlib
# embeddings, recall@1 against exact search was 0.93 with 128 of 4,000 lists at 1M entries,
# 0.98 with 256 and 1.00 with 384 or 512 (benchmarks/gallery.py, docs/benchmarks.md).
IVF_MIN_NPROBE = 256
IVF_NPROBE_SHARE = 1 / 8


def ivf_nprobe(nlist: int) -> int:
    """How many of an IVF index's `nlist` lists a search visits."""
    return min(nlist, max(IVF_MIN_NPROBE, math.ceil(nlist * IVF_NPROBE_SHARE)))


@dataclass(frozen=True)
class IndexChoice:
    """Which index a gallery uses. kind: "exact" or "ivf"; nlist, nprobe: IVF's lists and
    lists searched (0 for exact); reason: why, in words."""

    kind: str
    nlist: int = 0
    nprobe: int = 0
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def choose_index(entries: int, kind: str = "auto") -> IndexChoice:
    """The index for a gallery of `entries` embeddings. kind: "auto" (exact up to
    EXACT_MAX_ENTRIES, IVF above), "exact" or "ivf"."""
    if kind not in ("auto", "exact", "ivf"):
        raise ValueError(f"index kind must be auto, exact or ivf, got {kind!r}")
    if kind == "exact" or (kind == "auto" and entries <= EXACT_MAX_ENTRIES):
        why = ("asked for" if kind == "exact" else
               f"{entries:,} entries <= {EXACT_MAX_ENTRIES:,}: exact search is fast enough")
        return IndexChoice("exact", reason=f"exact inner product ({why})")
    nlist = max(1, min(int(round(4 * math.sqrt(max(entries, 1)))), max(1, entries // 39)))
    nprobe = ivf_nprobe(nlist)
    why = ("asked for" if kind == "ivf" else
           f"{entries:,} entries > {EXACT_MAX_ENTRIES:,}: exact search would be slow")
    return IndexChoice("ivf", nlist, nprobe,
                       f"IVF-Flat inner product, {nlist:,} lists, {nprobe} searched ({why})")


def _faiss():
    import faiss

    # Every core unless OMP_NUM_THREADS says otherwise (FAISS reads it only at its own import).
    wanted = os.environ.get("OMP_NUM_THREADS", "")
    faiss.omp_set_num_threads(int(wanted) if wanted.isdigit() and int(wanted) > 0
                              else max(1, os.cpu_count() or 1))
    return faiss


def _rows(vectors, dim: int | None = None) -> np.ndarray:
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2 or (dim is not None and array.shape[1] != dim):
        want = f"(N, {dim})" if dim is not None else "(N, D)"
        raise ValueError(f"vectors must be {want} float32, got shape {array.shape}")
    return array


def build_index(vectors, ids, choice: IndexChoice, *, seed: int = 0):
    """A FAISS index over `vectors` (N, D) float32 unit rows with `ids` (N,) int64.

    IVF is trained on at most nlist * IVF_TRAIN_PER_LIST of the vectors (a seeded sample).
    """
    faiss = _faiss()
    vectors = _rows(vectors)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if ids.shape != (vectors.shape[0],):
        raise ValueError(f"{vectors.shape[0]} vectors but ids of shape {ids.shape}")
    dim = vectors.shape[1]
    if choice.kind == "exact":
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    elif choice.kind == "ivf":
        if vectors.shape[0] < choice.nlist:
            raise ValueError(f"IVF with {choice.nlist} lists needs at least that many vectors")
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, choice.nlist, faiss.METRIC_INNER_PRODUCT)
        sample = vectors
        limit = choice.nlist * IVF_TRAIN_PER_LIST
        if vectors.shape[0] > limit:
            rows = np.random.default_rng(seed).choice(vectors.shape[0], limit, replace=False)
            sample = vectors[np.sort(rows)]
        index.train(sample)
        index.nprobe = choice.nprobe
    else:
        raise ValueError(f"unknown index kind {choice.kind!r}")
    if vectors.shape[0]:
        index.add_with_ids(vectors, ids)
    return index


def search_index(index, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The `k` best entries for each of `queries` (Q, D) float32 unit rows.

    Returns (scores (Q, k) float32 cosine similarities, best first; ids (Q, k) int64), with
    id -1 and score -inf where the gallery has fewer than k entries.
    """
    queries = _rows(queries, index.d)
    k = max(1, min(int(k), max(1, index.ntotal)))
    scores, ids = index.search(queries, k)
    scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
    return scores, ids.astype(np.int64)


def add_to_index(index, vectors, ids) -> None:
    """Add `vectors` (N, D) with `ids` (N,) int64 (an IVF index keeps its trained lists)."""
    vectors = _rows(vectors, index.d)
    if vectors.shape[0]:
        index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))


def remove_from_index(index, ids) -> int:
    """Remove the entries with `ids`; returns how many were removed."""
    faiss = _faiss()
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if not ids.size:
        return 0
    return int(index.remove_ids(faiss.IDSelectorBatch(ids)))


def write_index(index, path: str | Path) -> Path:
    """Write `index` to `path` atomically (a reader never sees half of it)."""
    faiss = _faiss()
    return write_atomically(path, lambda temporary: faiss.write_index(index, str(temporary)))


def read_index(path: str | Path):
    """Read an index written by `write_index`; DataError when the file is missing or damaged."""
    faiss = _faiss()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: the gallery's index file is missing")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        raise DataError(f"{path}: not a readable FAISS index ({str(exc).splitlines()[0]})") from exc
