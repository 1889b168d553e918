"""`fmr prepare`: build a training pack from raw photos."""

from __future__ import annotations

import argparse

from fmr.commands.common import MULTI_FACE_HELP, MULTI_FACE_POLICIES

HELP = "detect, align, split and pack photos into a training pack for train.py"
DESCRIPTION = """\
Turn raw photos into a training pack: detect each face (MTCNN), align it to the ArcFace 112x112
template, drop what cannot be used, split, and write RecordIO files that `python train.py --data`
reads (the layout is standard insightface train.rec/.idx, plus meta.json, validation pairs and
optional teacher descriptors).

presets:
  shared    the shared data (../shared/data or FMR_DATA_DIR, or the SOURCE you give): training
            identities = CelebA subset people + LFW people not in pair folds 6-10 + the extra
            CelebA people of celeba_extra/ (where the data folder has it), minus the
            validation identities; validation pairs from those identities. LFW folds 6-10 never
            enter the pack. Crops are JPEG at the highest quality that fits --max-mib (32 MiB).
  original  the recipe of the project fmr grew from, on SOURCE = one sub-folder per identity:
            one masked copy per photo, identities with >= --min-masked masked images, 90/10
            split per identity, rotation and flip augmentation. When SOURCE is (a part of)
            the shared data, LFW people of pair folds 6-10 are left out
            (--exclude-evaluation-people; scripts/training_side_folder.py lays out the
            shared data's training-side people as such a folder).

Writes manifest.csv (every photo: ok or failed, and why) and dropped.csv (photos, identities and
pairs left out, and why) into --out, and prints a summary line. Detection results and teacher
descriptors are cached beside the pack (--cache), so a re-run skips the faces already done.
The same --seed gives the same pack, whatever --workers.

examples:
  fmr prepare --preset shared --teacher dlib --workers 2 --out data/shared-pack
  fmr prepare --preset shared --canvases --max-mib 300 --workers 2 --out data/canvas-pack
  fmr prepare ~/photos --preset original --min-masked 5 --out data/my-pack
  python scripts/training_side_folder.py --min-photos 10 --out data/training-side
  fmr prepare data/training-side --preset original --workers 2 --out data/original-pack
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", nargs="?", metavar="SOURCE",
        help="shared: the shared data folder (default: FMR_DATA_DIR or ../shared/data); "
        "original: a folder with one sub-folder of photos per identity",
    )
    parser.add_argument("--preset", choices=("shared", "original"), default="shared",
                        help="what to build (default: shared)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="pack folder (default: data/<preset>-pack)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for every random choice (default 0)")
    parser.add_argument(
        "--teacher", choices=("dlib", "none"), default="none",
        help="store the teacher's descriptor of every unmasked training face (teacher.npy) for "
        "distillation; with it, one-photo identities stay as distillation-only images "
        "(default: none)",
    )
    parser.add_argument("--quality", type=int, default=None, metavar="Q",
                        help="JPEG quality of the crops (default: the highest that fits --max-mib)")
    parser.add_argument("--max-mib", type=float, default=None, metavar="MIB",
                        help="largest pack size (default: 32 for shared, no limit for original)")
    parser.add_argument(
        "--multi-face", choices=("auto", *MULTI_FACE_POLICIES), default="auto",
        help="which face to keep when a photo shows several (default auto: center for LFW, "
        f"whose labelled person is centred, main otherwise). {MULTI_FACE_HELP}",
    )
    parser.add_argument("--min-face", type=int, default=40, metavar="PX",
                        help="smallest face to look for, in pixels (default 40)")
    parser.add_argument("--workers", type=int, default=1,
                        help="detection worker processes (default 1)")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help="per-photo detection cache "
                        "(default: <out>/../.fmr-prepare-cache/<name>)")
    parser.add_argument("--max-identities", type=int, default=None, metavar="N",
                        help="use only N training identities (a small slice, for tests and "
                        "trials); shared: 0 writes a validation-only pack, for train.py --val")
    parser.add_argument("--max-validation-identities", type=int, default=None, metavar="N",
                        help="shared: use only N validation identities")
    parser.add_argument("--max-images-per-identity", type=int, default=None, metavar="N",
                        help="use only the first N photos of each identity")
    parser.add_argument("--min-masked", type=int, default=5, metavar="N",
                        help="original: keep identities with at least N masked images (default 5)")
    parser.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                        help="original: share of each identity's photos held out (default 0.1)")
    parser.add_argument("--rotation", type=float, default=10.0, metavar="DEG",
                        help="original: rotation of the augmented copies, degrees (default 10)")
    parser.add_argument(
        "--exclude-evaluation-people", action=argparse.BooleanOptionalAction, default=None,
        help="original: leave out identities that are (or show) LFW people of pair folds 6-10, "
        "the evaluation set (default: on when SOURCE or a photo in it, links resolved, lies in "
        "the shared data folder)")
    parser.add_argument(
        "--canvases", action="store_true",
        help="shared: also store each face (training and validation) on a wider, sharper "
        "canvas with dlib's chip geometry (canvas.rec, chips.npy, val_canvas.rec, "
        "val_chips.npy; about 300 MB for all the shared data), for `train.py mask-finetune` "
        "and `train.py --distill-targets consistent`, whose teacher sees the student's own "
        "augmented view; one-photo people stay as unlabelled images")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fmr.errors import FmrError
    from fmr.pipelines.prepare import PrepareOptions, prepare
    from fmr.settings import REPO_ROOT

    if args.preset == "original" and not args.source:
        raise FmrError("--preset original needs SOURCE, a folder with one sub-folder per identity")
    if args.workers < 1:
        raise FmrError("--workers must be 1 or more")
    out = Path(args.out) if args.out else REPO_ROOT / "data" / f"{args.preset}-pack"
    options = PrepareOptions(
        preset=args.preset,
        out=out,
        source=Path(args.source).expanduser() if args.source else None,
        seed=args.seed,
        teacher=None if args.teacher == "none" else args.teacher,
        quality=args.quality,
        max_mib=args.max_mib,
        multi_face=args.multi_face,
        min_face=args.min_face,
        workers=args.workers,
        cache_dir=Path(args.cache) if args.cache else None,
        max_identities=args.max_identities,
        max_validation_identities=args.max_validation_identities,
        max_images_per_identity=args.max_images_per_identity,
        min_masked=args.min_masked,
        val_fraction=args.val_fraction,
        rotation=args.rotation,
        canvases=args.canvases,
        progress=not args.quiet,
        exclude_evaluation_people=args.exclude_evaluation_people,
    )
    result = prepare(options)
    print(f"fmr prepare: done in {result.seconds:.0f} s", flush=True)
    return 0
