"""`fmr embed`: face embeddings of photos and folders into one .npz file."""

from __future__ import annotations

import argparse

from fmr.commands.common import add_backbone_arguments, add_multi_face_argument

HELP = "write face embeddings of photos and folders to an .npz file"
DESCRIPTION = """\
Detect the face in each photo (or take aligned 112x112 crops as they are with --aligned),
embed it (flip-averaged, L2-normalised) and write FILE.npz with:
  paths       (N,) each file as given on the command line; files found in a folder as that
              folder's path joined with their path inside it
  embeddings  (N, D) float32, unit norm; all zeros where the image failed
  ok          (N,) bool
  reason      (N,) why an image failed ('' when ok)
  mask_probability  (N,) float32, the mask detector's probability that the face wears a mask
              (>= 0.5: fmr counts it as masked); NaN where the image failed
  backbone, checkpoint: which model made them
and FILE.manifest.csv (input, output, status, reason, row) as every batch command does.
Folders are searched recursively. A failed image does not stop the run; the command exits 0
when the batch ran and prints how many failed.

--backbone names a model family: iresnet, ressanet (the shipped checkpoints, or the newest
trained ones) or dlib (the reference; photos only, not aligned crops); --checkpoint FILE uses
any checkpoint instead.

example:
  fmr embed photos/ extra.jpg --backbone iresnet --out embeddings.npz
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="photos or folders of photos")
    parser.add_argument("--out", required=True, metavar="FILE.npz", help="output file")
    # One model per file: `all` would need one embeddings array per model.
    add_backbone_arguments(parser, default="iresnet", allow_all=False)
    parser.add_argument(
        "--aligned",
        action="store_true",
        help="inputs are aligned crops (ArcFace template): no detection, only resized",
    )
    add_multi_face_argument(parser)
    parser.add_argument(
        "--workers", type=int, default=1, help="parallel worker processes (default 1)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _embed_aligned(items, embedder, progress: bool):
    import sys

    import numpy as np
    from tqdm import tqdm

    from fmr.errors import FmrError
    from fmr.faces.io import load_image
    from fmr.verify.mask_detector import load_mask_detector

    size = embedder.embedding_size
    embeddings = np.zeros((len(items), size), np.float32)
    ok = np.zeros(len(items), dtype=bool)
    probability = np.full(len(items), np.nan, np.float32)
    reasons = [""] * len(items)
    batch: list[tuple[int, np.ndarray, np.ndarray]] = []
    detector = load_mask_detector()

    def flush() -> None:
        if batch:
            vectors = embedder.embed_aligned(np.stack([crop for _, crop, _ in batch]))
            for (index, _, _), vector in zip(batch, vectors, strict=True):
                embeddings[index], ok[index] = vector, True
            if detector is not None:  # on the crop as given, at the template's 112x112
                rows = [index for index, _, _ in batch]
                probability[rows] = detector.probabilities(np.stack([m for _, _, m in batch]))
            batch.clear()

    import cv2

    for index, item in enumerate(
        tqdm(
            items,
            desc="fmr embed",
            unit="img",
            disable=not progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
    ):
        try:
            crop = load_image(item.path, name=item.given)
        except FmrError as exc:
            reasons[index] = str(exc)
            continue
        side = getattr(embedder, "input_size", 112)
        square = crop
        if crop.shape[:2] != (112, 112):
            square = cv2.resize(crop, (112, 112), interpolation=cv2.INTER_AREA)
        if crop.shape[:2] != (side, side):
            crop = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
        batch.append((index, crop, square))
        if len(batch) == 64:
            flush()
    flush()
    return embeddings, ok, reasons, probability


def _write_manifest(path, items, ok, reasons, npz_name: str) -> None:
    """The batch manifest: one row per input (input, output, status, reason, row), where
    output names the .npz and row is the input's row in it."""
    import csv

    from fmr.batch import BASE_COLUMNS

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*BASE_COLUMNS, "row"])
        for row, (item, good, reason) in enumerate(zip(items, ok, reasons, strict=True)):
            status = "ok" if good else "failed"
            writer.writerow([item.path, npz_name if good else "", status, reason, row])


def run(args: argparse.Namespace) -> int:
    import contextlib
    import sys
    from pathlib import Path

    import numpy as np

    from fmr.batch import collect_inputs
    from fmr.eval.protocols import Condition
    from fmr.files import write_atomically
    from fmr.pipelines.embedding import embed_images
    from fmr.verify import load_backbone

    out = Path(args.out)
    if out.suffix != ".npz":
        out = out.with_name(out.name + ".npz")
    items = collect_inputs(args.paths)
    spec = args.checkpoint or args.backbone
    embedder = load_backbone(spec)
    with contextlib.redirect_stdout(sys.stderr):
        if args.aligned:
            # dlib's networks refuse aligned crops with a FaceError: a usage error, first.
            if not embedder.reads_aligned_crops:
                embedder.embed_aligned(np.zeros((0, 112, 112, 3), np.uint8))
            embeddings, ok, reasons, probability = _embed_aligned(items, embedder,
                                                                  not args.quiet)
        else:
            source = "dlib" if embedder.family == "dlib" else str(embedder.path)
            table = embed_images(
                [item.path for item in items],
                [source],
                Condition(),
                policy=args.multi_face,
                workers=args.workers,
                progress=not args.quiet,
                desc="fmr embed",
                names=[item.given for item in items],
            )[source]
            embeddings, ok, reasons = table.embeddings, table.ok, table.reasons
            probability = table.mask_probability
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, lambda temporary: np.savez(
        temporary,
        paths=np.array([item.given for item in items], dtype=str),
        embeddings=np.asarray(embeddings, dtype=np.float32).reshape(
            len(items), embedder.embedding_size
        ),
        ok=np.asarray(ok, dtype=bool),
        reason=np.array(reasons, dtype=str),
        mask_probability=np.asarray(probability, dtype=np.float32).reshape(len(items)),
        backbone=np.array(embedder.family),
        checkpoint=np.array(str(embedder.path)),
    ))
    manifest = out.with_name(out.stem + ".manifest.csv")
    _write_manifest(manifest, items, ok, reasons, out.name)
    failed = int((~np.asarray(ok)).sum())
    print(
        f"fmr embed: {len(items) - failed} ok, {failed} failed, {len(items)} inputs; "
        f"{embedder.name} ({embedder.embedding_size}-d) embeddings in {out}; manifest: {manifest}",
        file=sys.stderr,
    )
    from fmr.verify.mask_detector import MASK_PROBABILITY_THRESHOLD, mask_detector_path

    probability = np.asarray(probability, dtype=np.float32)
    measured = np.isfinite(probability)
    if measured.any():
        masked = int((probability[measured] >= MASK_PROBABILITY_THRESHOLD).sum())
        print(f"fmr embed: {masked} of {int(measured.sum())} faces wear a mask (mask_probability "
              f">= {MASK_PROBABILITY_THRESHOLD})", file=sys.stderr)
    elif failed < len(items):
        print(f"fmr embed: no mask detector at {mask_detector_path()}: mask_probability is NaN",
              file=sys.stderr)
    return 0
