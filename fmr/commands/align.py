"""`fmr align`: aligned 112x112 face crops for files and folders."""

from __future__ import annotations

import argparse

from fmr.commands.common import add_multi_face_argument

HELP = "write aligned face crops (ArcFace 112x112 template) for photos and folders"
DESCRIPTION = """\
Detect the face in each photo (MTCNN), pick one by --multi-face, and warp it onto the ArcFace
112x112 template. Folders are searched recursively; outputs mirror the input tree under --out
and keep each file's format; manifest.csv lists every input with its status and reason.

example:
  fmr align photos/ extra.jpg --out aligned/
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="photos or folders of photos")
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="folder for crops and manifest.csv"
    )
    parser.add_argument("--size", type=int, default=112, help="crop size in pixels (default 112)")
    add_multi_face_argument(parser)
    parser.add_argument(
        "--aligned",
        action="store_true",
        help="inputs are aligned crops already: skip detection, only resize to --size",
    )
    parser.add_argument(
        "--min-face",
        type=int,
        default=20,
        metavar="PX",
        help="smallest face to look for, in pixels (default 20; larger is faster)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="parallel worker processes (default 1)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def align_one(item, *, size: int, aligned: bool, policy: str, min_face: int, out: str):
    """Align one batch input; module-level so worker processes can receive it."""
    import cv2

    from fmr.batch import ItemResult, output_path, save_image
    from fmr.faces import align_face, find_face, load_image

    image = load_image(item.path, name=item.given)
    if aligned:
        crop = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        extra = {"detector": "none"}
    else:
        face = find_face(image, policy, item.given, min_face)
        crop = align_face(image, face.landmarks, size)
        extra = {
            "detector": face.source,
            "score": "" if face.source == "template" else f"{face.score:.4f}",
            "box": " ".join(f"{v:.1f}" for v in face.box),
        }
    save_image(output_path(out, item), crop)
    return ItemResult("ok", output=item.relative_output.as_posix(), extra=extra)


def run(args: argparse.Namespace) -> int:
    import functools

    from fmr.batch import collect_inputs, run_batch

    items = collect_inputs(args.paths)
    process = functools.partial(
        align_one,
        size=args.size,
        aligned=args.aligned,
        policy=args.multi_face,
        min_face=args.min_face,
        out=args.out,
    )
    run_batch(
        items,
        process,
        args.out,
        command="align",
        workers=args.workers,
        extra_columns=("detector", "score", "box"),
        progress=not args.quiet,
        preload=("fmr.commands.align", "fmr.faces", "torch", "facenet_pytorch"),
    )
    return 0
