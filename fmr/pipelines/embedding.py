"""Embedding lists of images with backbones: the pipeline behind `fmr eval`, `fmr embed` and the
app's score files.

- `embed_images`: embeddings of every image once per backbone and condition (unmasked, or a
  synthetic mask with a fixed seed per image, `fmr.eval.protocols.Condition`), cached under the
  output folder so re-runs and other conditions reuse them; each image goes through the verify
  pipeline once (`fmr.verify.pipeline.prepare_face`: load, detect, mask) for all backbones, in
  worker processes when asked. Each face's mask probability (`fmr.verify.mask_detector`) comes
  with its embedding (`EmbeddingTable.mask_probability`; `fmr embed` writes it).
- `validation_scores`: genuine and impostor scores on the shared split's validation identities
  (what thresholds are calibrated on).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fmr import metrics
from fmr.batch import worker_pool
from fmr.errors import FmrError
from fmr.eval.protocols import Condition, EmbeddingTable, validation_images
from fmr.files import write_atomically
from fmr.verify.pipeline import prepare_face

UNMASKED = Condition()


def image_seed(seed: int, path: Path, root: Path | None) -> int:
    """The mask seed of one image: from the run's seed and the image's path relative to root."""
    try:
        name = Path(path).relative_to(root).as_posix() if root else Path(path).as_posix()
    except ValueError:
        name = Path(path).as_posix()
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def embedder_key(spec: str) -> str:
    """A cache folder name for a backbone spec ("dlib" or a checkpoint path): the checkpoint's
    name plus a hash of its weights. For a .safetensors file only the tensor bytes count, not
    the header that holds the model card, so `fmr eval --record` or a new calibration (which
    rewrite the card) keep the cache while a retrained file never hits an old one; other
    files hash their path, size and modification time."""
    if spec == "dlib":
        return "dlib"
    path = Path(spec)
    digest = hashlib.sha1()
    if path.suffix == ".safetensors":
        with open(path, "rb") as handle:
            header = int.from_bytes(handle.read(8), "little")
            handle.seek(8 + header)
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    else:
        stat = path.stat()
        digest.update(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"{path.stem}-{digest.hexdigest()[:10]}"


# Worker state: one set of loaded models per process.
_worker: dict = {}


def _init_worker(
    specs: Sequence[str], condition: Condition, policy: str, root, threads: int
) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass
    from fmr.verify.embedder import load_backbone

    _worker.update(
        embedders={spec: load_backbone(spec) for spec in specs},
        condition=condition,
        policy=policy,
        root=root,
    )


def _embed_one(
    task: tuple[Path, Sequence[str], str],
) -> tuple[dict[str, np.ndarray], str, str, float]:
    """(embeddings per spec, failure reason or '', mask style drawn or '', the face's mask
    probability or NaN) for one image."""
    path, specs, label = task
    condition: Condition = _worker["condition"]
    try:
        style, rng = "", None
        if condition.style is not None:
            rng = np.random.default_rng(image_seed(condition.seed, path, _worker["root"]))
            style = condition.style
            if style == "random":
                from fmr.masks import EVAL_STYLES

                style = str(rng.choice(list(EVAL_STYLES)))
        prepared = prepare_face(path, name=label, policy=_worker["policy"], mask=style or None,
                                mask_renderer=condition.renderer, seed=rng)
        vectors = {spec: _worker["embedders"][spec].embed_face(prepared.image, prepared.face)
                   for spec in specs}
        probability = (np.nan if prepared.mask_probability is None
                       else float(prepared.mask_probability))
        return vectors, "", style, probability
    except FmrError as exc:
        return {}, str(exc), "", np.nan
    except Exception as exc:  # one broken image must not stop an evaluation of thousands
        return {}, f"{label}: unexpected error {type(exc).__name__}: {exc}", "", np.nan


def _cache_file(cache_dir: Path, spec: str, condition: Condition, policy: str) -> Path:
    return cache_dir / embedder_key(spec) / f"{condition.key}-{policy}.npz"


# A cache entry: (embedding, ok, failure reason, mask style drawn, mask probability or NaN).
Entry = tuple[np.ndarray, bool, str, str, float]


def _load_cache(file: Path) -> dict[str, Entry]:
    if not file.is_file():
        return {}
    try:
        with np.load(file, allow_pickle=False) as data:
            # Caches written before the mask detector have no probabilities: NaN, not a rerun.
            probability = (data["mask_probability"] if "mask_probability" in data.files
                           else np.full(len(data["paths"]), np.nan, np.float32))
            return {
                str(p): (e, bool(o), str(r), str(m), float(q))
                for p, e, o, r, m, q in zip(
                    data["paths"],
                    data["embeddings"],
                    data["ok"],
                    data["reason"],
                    data["mask"],
                    probability,
                    strict=True,
                )
            }
    except (OSError, ValueError, KeyError):
        return {}  # a damaged cache is recomputed, not trusted


def _save_cache(file: Path, entries: dict[str, Entry]) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    paths = sorted(entries)
    write_atomically(file, lambda temporary: np.savez(
        temporary,
        paths=np.array(paths, dtype=str),
        embeddings=np.stack([entries[p][0] for p in paths]).astype(np.float32),
        ok=np.array([entries[p][1] for p in paths], dtype=bool),
        reason=np.array([entries[p][2] for p in paths], dtype=str),
        mask=np.array([entries[p][3] for p in paths], dtype=str),
        mask_probability=np.array([entries[p][4] for p in paths], dtype=np.float32),
    ))


def embed_images(
    paths: Sequence[Path],
    specs: Sequence[str],
    condition: Condition = UNMASKED,
    *,
    cache_dir: str | Path | None = None,
    policy: str = "center",
    workers: int = 1,
    root: Path | None = None,
    progress: bool = True,
    desc: str = "embedding",
    names: Sequence[str] | None = None,
) -> dict[str, EmbeddingTable]:
    """Embed every image with every backbone in `specs` ("dlib" or checkpoint paths) under
    `condition`. Each image is loaded and detected once for all backbones; images already in
    the cache (`cache_dir`, per backbone and condition) are not recomputed.

    policy: the multi-face policy ("center" suits LFW, whose labelled person is centred).
    workers: processes for detection and embedding (each runs torch on one thread).
    names: how failure messages name each image (default: its path).
    Returns spec -> EmbeddingTable in the order of `paths`.
    """
    from tqdm import tqdm

    paths = [Path(p) for p in paths]
    cache_path = Path(cache_dir) if cache_dir is not None else None
    caches = {
        spec: _load_cache(_cache_file(cache_path, spec, condition, policy)) if cache_path else {}
        for spec in specs
    }
    labels = [str(p) for p in paths] if names is None else [str(n) for n in names]
    todo: list[tuple[Path, list[str], str]] = []
    for path, label in zip(paths, labels, strict=True):
        needed = [spec for spec in specs if str(path) not in caches[spec]]
        if needed:
            todo.append((path, needed, label))
    if todo:
        bar = tqdm(
            total=len(todo),
            desc=f"{desc} ({condition.label})",
            unit="img",
            disable=not progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        all_needed = sorted({spec for _, needed, _ in todo for spec in needed})
        init_args = (all_needed, condition, policy, root)
        if workers <= 1 or len(todo) < 2:
            _init_worker(*init_args, threads=max(1, os.cpu_count() or 1))
            results = map(_embed_one, todo)
            pool = None
        else:
            # Each worker loads its own models; see worker_pool for why not plain fork.
            pool = worker_pool(
                workers, _init_worker, (*init_args, 1),
                preload=("fmr.pipelines.embedding", "torch", "fmr.faces", "fmr.verify"),
            )
            results = pool.imap(_embed_one, todo, chunksize=4)
        try:
            for count, ((path, needed, _), (vectors, reason, style, probability)) in enumerate(
                zip(todo, results, strict=True), start=1
            ):
                for spec in needed:
                    if reason:
                        size = _embedding_size(caches[spec], spec)
                        caches[spec][str(path)] = (np.zeros(size, np.float32), False, reason, "",
                                                   np.nan)
                    else:
                        caches[spec][str(path)] = (vectors[spec], True, "", style, probability)
                bar.update(1)
                if cache_path is not None and count % 500 == 0:  # an interrupted run keeps its work
                    for spec in needed:
                        _save_cache(_cache_file(cache_path, spec, condition, policy), caches[spec])
        finally:
            if pool is not None:
                pool.terminate()
            bar.close()
        if cache_path is not None:
            for spec in all_needed:
                _save_cache(_cache_file(cache_path, spec, condition, policy), caches[spec])
    tables = {}
    for spec in specs:
        rows = [caches[spec][str(p)] for p in paths]
        size = _embedding_size(caches[spec], spec)
        tables[spec] = EmbeddingTable(
            embeddings=np.stack([r[0] if r[1] else np.zeros(size, np.float32) for r in rows]),
            ok=np.array([r[1] for r in rows], dtype=bool),
            reasons=[r[2] for r in rows],
            masks=[r[3] for r in rows],
            mask_probability=np.array([r[4] if r[1] else np.nan for r in rows], np.float32),
        )
    return tables


def _embedding_size(cache: dict, spec: str) -> int:
    for vector, ok, *_ in cache.values():
        if ok:
            return int(vector.shape[0])
    if spec == "dlib":
        return 128
    from fmr.cards import read_card

    card = read_card(spec)
    return card.embedding_size if card is not None else 512


def validation_scores(
    specs: Sequence[str],
    data_root: str | Path,
    *,
    masked: Condition | None = None,
    cache_dir: str | Path | None = None,
    workers: int = 1,
    progress: bool = True,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    """Genuine and impostor scores of each backbone on the validation split, and a description
    of the data: all same-identity and all cross-identity pairs of its images, unmasked; with
    `masked` (a mask condition), every masked image against every other unmasked one.

    Only training-side identities: this is what thresholds are calibrated on.
    """
    paths, identities, description = validation_images(data_root)
    common = dict(cache_dir=cache_dir, policy="main", workers=workers,
                  root=Path(data_root), progress=progress)
    tables = embed_images(paths, specs, UNMASKED, desc="validation", **common)
    probes = None
    if masked is not None:
        probes = embed_images(paths, specs, masked, desc="validation", **common)
        description += f"; a {masked.label} photo against every other unmasked photo"
    scores = {}
    for spec, table in tables.items():
        ok = table.ok if probes is None else table.ok & probes[spec].ok
        ids = np.asarray(identities)[ok]
        gallery = table.embeddings[ok]
        scores[spec] = metrics.all_pair_scores(
            gallery, ids, probe_embeddings=None if probes is None else probes[spec].embeddings[ok])
    failed = int(sum((~t.ok).sum() for t in tables.values()) / max(1, len(tables)))
    if failed:
        description += f"; {failed} photos without a usable face left out"
    return scores, description
