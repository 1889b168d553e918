"""What every batch command (align, mask, embed, prepare) does the same way.

- Inputs are files and folders; folders are searched recursively for images.
- Outputs mirror the input tree under --out: a file given directly lands at the top, a folder's
  files land under a folder of the same name, so two inputs never collide (a name taken twice
  gets a `-2`, `-3`... suffix).
- `manifest.csv` in --out has one row per input: `input` (absolute path), `output` (relative to
  --out, empty when failed), `status` (`ok` or `failed`), `reason`, then command-specific columns.
  Rows are written as items finish, in input order, so an interrupted run keeps what it did.
- A failed item never stops the batch; the command exits 0 and prints a one-line summary.
"""

from __future__ import annotations

import csv
import hashlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from fmr.errors import FmrError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
MANIFEST_NAME = "manifest.csv"
BASE_COLUMNS = ("input", "output", "status", "reason")


@dataclass(frozen=True)
class BatchInput:
    """One input file of a batch.

    path: absolute path. given: the path as the user gave it (or that folder's path joined with
    the file's path inside it). relative_output: where the item's output goes, relative to --out.
    """

    path: Path
    given: str
    relative_output: PurePosixPath


@dataclass
class ItemResult:
    """What processing one input produced. `output` is relative to --out ('' when failed)."""

    status: str
    reason: str = ""
    output: str = ""
    extra: dict = field(default_factory=dict)

    @classmethod
    def failed(cls, reason: str, **extra) -> ItemResult:
        return cls("failed", reason, "", extra)


@dataclass
class BatchSummary:
    total: int
    ok: int
    failed: int
    manifest: Path
    results: list[ItemResult]


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def collect_inputs(
    paths: Sequence[str | os.PathLike], extensions: Iterable[str] = IMAGE_EXTENSIONS
) -> list[BatchInput]:
    """Expand files and folders (recursively, sorted) into batch inputs with mirrored outputs.

    Files given directly are always included, whatever their extension (a text file named .jpg
    becomes a failed row, not a silent skip); inside folders only files with `extensions` are
    taken. Raises `FmrError` (a usage error) for a path that does not exist.
    """
    extensions = {e.lower() for e in extensions}
    items: list[BatchInput] = []
    seen: set[Path] = set()
    taken_tops: set[str] = set()

    def top_name(name: str) -> str:
        stem, suffix = os.path.splitext(name)
        candidate, n = name, 1
        while candidate.lower() in taken_tops:
            n += 1
            candidate = f"{stem}-{n}{suffix}"
        taken_tops.add(candidate.lower())
        return candidate

    for raw in paths:
        given = os.fspath(raw)
        path = Path(given).expanduser()
        if not path.exists():
            raise FmrError(f"no such file or folder: {given}")
        resolved = path.resolve()
        if resolved.is_file():
            if resolved not in seen:
                seen.add(resolved)
                items.append(BatchInput(resolved, given, PurePosixPath(top_name(resolved.name))))
            continue
        top = top_name(resolved.name or "input")
        found: list[tuple[PurePosixPath, Path]] = []
        for dirpath, dirnames, filenames in os.walk(resolved):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for filename in filenames:
                file = Path(dirpath, filename)
                if _is_hidden(file) or file.suffix.lower() not in extensions:
                    continue
                found.append((PurePosixPath(*file.relative_to(resolved).parts), file))
        for relative, file in sorted(found):
            file = file.resolve()
            if file in seen:
                continue
            seen.add(file)
            display = os.path.join(given, *relative.parts)
            items.append(BatchInput(file, display, PurePosixPath(top) / relative))
    return items


def item_seed(seed: int, item: BatchInput) -> int:
    """A per-item seed that depends on the run's seed and the item's place in the output tree.

    Results therefore do not depend on the number of workers or the order items finish in.
    """
    digest = hashlib.sha256(f"{seed}:{item.relative_output}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _safe_call(process: Callable[[BatchInput], ItemResult], item: BatchInput) -> ItemResult:
    try:
        return process(item)
    except FmrError as exc:
        return ItemResult.failed(str(exc))
    except MemoryError:
        return ItemResult.failed(f"{item.given}: ran out of memory while processing it")
    except Exception as exc:  # a bug must not cost the rest of the batch; the row says what broke
        return ItemResult.failed(f"{item.given}: unexpected error {type(exc).__name__}: {exc}")


_worker_process: Callable[[BatchInput], ItemResult] | None = None


def _worker_init(process, initializer) -> None:
    global _worker_process
    _worker_process = process
    # One thread per worker process: the workers are the parallelism.
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    if initializer is not None:
        initializer()


def _worker_call(item: BatchInput) -> ItemResult:
    assert _worker_process is not None
    return _safe_call(_worker_process, item)


def worker_pool(
    workers: int,
    initializer: Callable | None = None,
    initargs: tuple = (),
    preload: Sequence[str] = (),
) -> multiprocessing.pool.Pool:
    """A process pool whose workers are forked from a fork server, never from this process.

    Forking a process whose torch/OpenMP thread pools have run deadlocks the children, so the
    workers come from a server that imported `preload` once (before any threads started) and
    start without importing again. `initializer`, its `initargs` and the functions the pool
    runs are pickled: use module-level functions or `functools.partial` of them.
    """
    import multiprocessing.pool  # noqa: F401  (for the return annotation at run time)

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["fmr.batch", *preload])
    return ctx.Pool(workers, initializer=initializer, initargs=initargs)


def _results(
    items: Sequence[BatchInput],
    process: Callable[[BatchInput], ItemResult],
    workers: int,
    initializer: Callable[[], None] | None,
    preload: Sequence[str],
) -> Iterator[ItemResult]:
    if workers <= 1 or len(items) <= 1:
        # Same thread count as a worker process, so results are identical for any --workers
        # (float sums in multi-threaded kernels differ in their last bits).
        if "torch" in preload:
            import torch  # noqa: F401  (so the thread count below applies from the first item)
        torch = sys.modules.get("torch")
        saved_threads = torch.get_num_threads() if torch else None
        if torch:
            torch.set_num_threads(1)
        try:
            if initializer is not None:
                initializer()
            for item in items:
                yield _safe_call(process, item)
        finally:
            if torch:
                torch.set_num_threads(saved_threads)
        return
    chunk = max(1, min(16, len(items) // (workers * 8)))
    with worker_pool(workers, _worker_init, (process, initializer), preload) as pool:
        yield from pool.imap(_worker_call, items, chunksize=chunk)


def run_batch(
    items: Sequence[BatchInput],
    process: Callable[[BatchInput], ItemResult],
    out_dir: str | os.PathLike,
    *,
    command: str,
    workers: int = 1,
    initializer: Callable[[], None] | None = None,
    extra_columns: Sequence[str] = (),
    progress: bool = True,
    preload: Sequence[str] = (),
) -> BatchSummary:
    """Run `process` on every item, write `manifest.csv` in `out_dir`, print a summary line.

    `process(item)` returns an `ItemResult`; it may raise `FmrError` (recorded as the reason).
    With `workers > 1` items are processed by worker processes forked from a server that has
    imported the modules in `preload`; `process` and `initializer` must then be picklable
    (module-level functions or `functools.partial` of them). `initializer` runs once in each
    worker (e.g. to load a model). Rows come out in input order whatever the worker count.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST_NAME
    columns = [*BASE_COLUMNS, *extra_columns]
    results: list[ItemResult] = []
    ok = 0
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        bar = tqdm(
            total=len(items),
            desc=f"fmr {command}",
            unit="img",
            disable=not progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        for item, result in zip(
            items, _results(items, process, workers, initializer, preload), strict=True
        ):
            row = {
                "input": str(item.path),
                "output": result.output,
                "status": result.status,
                "reason": result.reason,
                **{k: ("" if v is None else v) for k, v in result.extra.items()},
            }
            writer.writerow(row)
            handle.flush()
            ok += result.status == "ok"
            results.append(result)
            bar.update(1)
            bar.set_postfix(failed=len(results) - ok, refresh=False)
        bar.close()
    failed = len(items) - ok
    print(
        f"fmr {command}: {ok} ok, {failed} failed, {len(items)} inputs; manifest: {manifest}",
        file=sys.stderr,
    )
    return BatchSummary(len(items), ok, failed, manifest, results)


def output_path(out_dir: str | os.PathLike, item: BatchInput, suffix: str | None = None) -> Path:
    """Absolute output path for `item` under `out_dir` (parent folders created)."""
    relative = item.relative_output
    if suffix is not None:
        relative = relative.with_suffix(suffix)
    path = Path(out_dir, *relative.parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_image(path: Path, image, source_suffix: str | None = None) -> None:
    """Write an RGB uint8 array in the format the file name says (JPEG at quality 95).

    Unknown or non-image suffixes (a `.txt` that was really a JPEG) are written as PNG next to it.
    """
    import cv2
    import numpy as np

    suffix = (source_suffix or path.suffix).lower()
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    params: list[int] = []
    if suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, 95]
    elif suffix == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, 95]
    ok, encoded = cv2.imencode(suffix if suffix in IMAGE_EXTENSIONS else ".png", bgr, params)
    if not ok:  # pragma: no cover - cv2 encodes every format we list
        raise FmrError(f"could not encode {path.name} as {suffix}")
    path.write_bytes(encoded.tobytes())


def manifest_rows(out_dir: str | os.PathLike) -> list[dict[str, str]]:
    """Read back a manifest (tests and tools)."""
    with open(Path(out_dir) / MANIFEST_NAME, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
