"""`fmr mask`: synthetic masks on photos and aligned crops, for files and folders."""

from __future__ import annotations

import argparse

from fmr.commands.common import MULTI_FACE_HELP

HELP = "draw synthetic face masks (surgical, N95, KN95, cloth, gas) on photos or aligned crops"
DESCRIPTION = """\
Draws a mask on every face of each photo (MTCNN finds the faces, dlib's 68 landmarks place the
mask), or, with --aligned, on 112x112 aligned crops without any detector (the crops' mean face
shape places it, so no crop fails). Folders are searched recursively; outputs mirror the input
tree under --out and keep each file's format (JPEG at quality 95); manifest.csv has one row per
output with its status, the reason for a failure, and the style, colour, pattern and coverage
drawn. The same --seed gives the same bytes, whatever --workers.

MaskTheFace's flags keep their meaning: --mask_type, --color, --pattern, --pattern_weight,
--code. Masks are drawn by fmr's own code; --renderer warp places a flat mask picture by a
homography (MaskTheFace's method) instead of fitting it to the face.

examples:
  fmr mask photos/ --out masked/ --mask-type random --seed 1
  fmr mask crops/ --aligned --out masked-crops/ --mask-type all --workers 2
  fmr mask me.jpg --out out/ --mask-type cloth --pattern floral --color navy
  fmr mask photos/ --out out/ --code "surgical-light-blue, cloth-checks, KN95-#e54294"
"""

MASK_TYPES = ("surgical", "N95", "KN95", "cloth", "gas", "random", "all")
MULTI_FACE = ("all", "main", "largest", "center", "require-one")
COLUMNS = ("style", "colour", "pattern", "coverage", "renderer", "faces")


def _mask_type(text: str) -> str:
    lookup = {t.lower(): t for t in MASK_TYPES}
    key = text.strip().lower()
    if key not in lookup:
        raise argparse.ArgumentTypeError(f"choose one of {', '.join(MASK_TYPES)}")
    return lookup[key]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="photos, crops or folders")
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="folder for outputs and manifest.csv"
    )
    parser.add_argument(
        "--mask-type", "--mask_type", dest="mask_type", type=_mask_type, default="surgical",
        metavar="TYPE", help=f"{'|'.join(MASK_TYPES)} (default surgical); random draws one per "
        "image, all writes one output per style (name_surgical.jpg, ...)",
    )
    parser.add_argument(
        "--color", "--colour", dest="colour", metavar="C",
        help="mask colour: a name (light-blue, white, black, navy, skin-medium, ...) or hex "
        "(#8fc3e0); default: the style's usual colours",
    )
    parser.add_argument(
        "--pattern", metavar="P", help="plain|stripes|checks|dots|floral (default: by style)"
    )
    parser.add_argument(
        "--pattern-weight", "--pattern_weight", dest="pattern_weight", type=float, metavar="W",
        help="pattern strength 0..1 (default 0.9)",
    )
    parser.add_argument(
        "--coverage", metavar="LOW:HIGH",
        help="where the top edge sits on the nose, drawn per face from this range: 0 just above "
        "the tip, 1 just below the eyes (default: by style, e.g. 0.45:0.85 for surgical)",
    )
    parser.add_argument(
        "--code", metavar="SPECS",
        help="comma-separated masks to draw from, one per image (MaskTheFace's --code): each "
        "STYLE[-COLOUR][-PATTERN], e.g. 'surgical-light-blue, cloth-checks, KN95-#e54294'",
    )
    parser.add_argument(
        "--renderer", choices=("fmr", "warp"), default="fmr",
        help="fmr: fitted to the face (default); warp: a flat mask placed by a homography",
    )
    parser.add_argument(
        "--aligned", action="store_true",
        help="inputs are aligned face crops (112x112, 112x96 or square): no detection",
    )
    parser.add_argument(
        "--refine", action="store_true",
        help="with --aligned: fit dlib's 68 points on each crop (turned heads get turned masks)",
    )
    parser.add_argument(
        "--multi-face", choices=MULTI_FACE, default="all",
        help="which faces of a photo get a mask (default all: every likely face, the main one "
        f"first). {MULTI_FACE_HELP}",
    )
    parser.add_argument(
        "--min-face", type=int, default=40, metavar="PX",
        help="smallest face to mask, in pixels (default 40: smaller faces are left as they are, "
        "their landmarks are too coarse for a mask; 20 finds them too, more slowly)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--workers", type=int, default=1, help="parallel worker processes (default 1)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def parse_code(code: str) -> list[dict]:
    """MaskTheFace-style --code: 'STYLE[-COLOUR][-PATTERN], ...' -> option dicts."""
    from fmr.errors import FmrError
    from fmr.masks import PATTERNS, canonical_style, parse_colour

    specs = []
    for raw in code.split(","):
        text = raw.strip()
        if not text:
            continue
        style_text, _, rest = text.partition("-")
        spec = {"style": canonical_style(style_text)}
        if rest:
            head, _, tail = rest.rpartition("-")
            if rest.lower() in PATTERNS:
                spec["pattern"] = rest.lower()
            elif head and tail.lower() in PATTERNS:
                spec["colour"], spec["pattern"] = head, tail.lower()
            else:
                spec["colour"] = rest
            if "colour" in spec:
                parse_colour(spec["colour"])  # fail now, not once per image
        specs.append(spec)
    if not specs:
        raise FmrError(
            f"--code {code!r} lists no masks; e.g. --code 'surgical-white, cloth-checks'"
        )
    return specs


# One photo's faces, kept for the next item: `--mask-type all` masks the same photo five times.
_last_faces: dict = {}
# With --multi-face all, faces besides the main one must look like faces: likely by MTCNN's score
# (fmr.faces.policy.likely_faces), and dlib's eyes, nose and mouth within this fraction of the
# box width of MTCNN's points (the two models disagree on false detections in clutter).
SECONDARY_MAX_DISAGREEMENT = 0.2


def _agreement(face, points) -> float:
    """Largest distance between MTCNN's 5 points and dlib's, as a fraction of the box width."""
    import numpy as np

    dlib5 = np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48],
                      points[54]])
    return float(np.linalg.norm(dlib5 - face.landmarks, axis=1).max() / max(face.width, 1.0))


def _face_landmarks(image, item, policy: str, min_face: int) -> tuple[list, int]:
    """68-point landmarks (or "template") of the faces `policy` selects, and how many
    detections were skipped as unlikely faces."""
    from fmr.faces import detect_faces, select_face
    from fmr.faces.landmarks import landmarks68
    from fmr.faces.policy import likely_faces

    key = (str(item.path), policy, min_face)
    if key in _last_faces:
        return _last_faces[key]
    faces = detect_faces(image, min_face_size=min_face)
    skipped = 0
    if policy == "all":
        if not faces:
            select_face(faces, image.shape, "main", item.given)  # raises "no face found"
        faces, skipped = likely_faces(faces, image.shape)
    else:
        faces = [select_face(faces, image.shape, policy, item.given)]
    points = []
    for index, face in enumerate(faces):  # the main face first
        if face.source == "template":
            points.append("template")
            continue
        shape = landmarks68(image, face.box)
        if index > 0 and _agreement(face, shape) > SECONDARY_MAX_DISAGREEMENT:
            skipped += 1
            continue
        points.append(shape)
    _last_faces.clear()
    _last_faces[key] = (points, skipped)
    return points, skipped


def mask_one(
    item, *, out: str, style_of: dict, options: dict, specs: list | None, aligned: bool,
    refine: bool, policy: str, min_face: int, seed: int,
):
    """Mask one batch input; module-level so worker processes can receive it."""
    import numpy as np

    from fmr.batch import ItemResult, item_seed, output_path, save_image
    from fmr.errors import FaceError
    from fmr.faces import load_image
    from fmr.masks import MASK_STYLES, apply_mask, mask_aligned

    image = load_image(item.path, name=item.given)
    rng = np.random.default_rng(item_seed(seed, item))
    style = style_of.get(item.relative_output.as_posix(), options["style"])
    opts = {k: v for k, v in options.items() if k != "style" and v is not None}
    if specs:
        spec = specs[int(rng.integers(len(specs)))]
        style = spec["style"]
        opts.update({k: v for k, v in spec.items() if k != "style"})
    if style == "random":
        style = MASK_STYLES[int(rng.integers(len(MASK_STYLES)))]

    if aligned:
        try:
            masked, info = mask_aligned(image, style, rng, refine=refine, **opts)
        except FaceError as exc:
            raise FaceError(f"{item.given}: {exc}") from exc
        faces = "1/1"
    else:
        masked, info, problems = image, None, []
        landmarks, skipped = _face_landmarks(image, item, policy, min_face)
        for index, points in enumerate(landmarks):
            try:
                masked, face_info = apply_mask(masked, points, style, rng, **opts)
            except FaceError as exc:
                problems.append(f"face {index + 1}: {exc}")
                continue
            if info is None:  # later faces wear the same mask
                info = face_info
                opts.update(colour=info["colour"], pattern=info["pattern"])
        if info is None:
            raise FaceError(f"{item.given}: no face could be masked ({'; '.join(problems)})")
        faces = f"{len(landmarks) - len(problems)}/{len(landmarks)}"
        notes = []
        if problems:  # the masked faces are kept; the row still says which were not
            notes.append(f"not masked: {'; '.join(problems)}")
        if skipped:
            notes.append(f"skipped {skipped} detection(s) that do not look like faces")
        if notes:
            info["reason"] = f"{item.given}: {'; '.join(notes)}"

    target = output_path(out, item)
    save_image(target, masked)
    extra = {k: info[k] for k in ("style", "colour", "pattern", "coverage", "renderer")}
    extra["faces"] = faces
    return ItemResult("ok", info.get("reason", ""), item.relative_output.as_posix(), extra)


def _with_style(item, style: str):
    from dataclasses import replace

    relative = item.relative_output
    name = f"{relative.stem}_{style}{relative.suffix}"
    return replace(item, relative_output=relative.with_name(name))


def run(args: argparse.Namespace) -> int:
    import functools

    from fmr.batch import collect_inputs, run_batch
    from fmr.errors import FmrError
    from fmr.masks import MASK_STYLES, canonical_style, parse_colour, parse_coverage
    from fmr.masks.styles import draw_options

    if args.workers < 1:
        raise FmrError("--workers must be at least 1")
    if args.min_face < 12:
        raise FmrError("--min-face must be at least 12 pixels (MTCNN's smallest window)")
    if args.refine and not args.aligned:
        raise FmrError("--refine only applies to --aligned crops")
    # Bad options are usage errors, found before the first image.
    if args.colour is not None:
        parse_colour(args.colour)
    coverage = parse_coverage(args.coverage)
    if args.pattern is not None or args.pattern_weight is not None:
        import numpy as np

        draw_options("surgical", np.random.default_rng(0), pattern=args.pattern,
                     pattern_weight=args.pattern_weight)
    specs = parse_code(args.code) if args.code else None

    items = collect_inputs(args.paths)
    style_of: dict[str, str] = {}
    if args.mask_type == "all" and not specs:
        expanded = []
        for item in items:
            for style in MASK_STYLES:
                derived = _with_style(item, style)
                style_of[derived.relative_output.as_posix()] = style
                expanded.append(derived)
        items = expanded
    base_style = args.mask_type if args.mask_type in ("random", "all") else canonical_style(
        args.mask_type)
    options = {
        "style": base_style, "colour": args.colour, "pattern": args.pattern,
        "pattern_weight": args.pattern_weight, "coverage": coverage, "renderer": args.renderer,
    }
    process = functools.partial(
        mask_one, out=args.out, style_of=style_of, options=options, specs=specs,
        aligned=args.aligned, refine=args.refine, policy=args.multi_face,
        min_face=args.min_face, seed=args.seed,
    )
    # Crops need neither torch nor dlib; photos need both: the fork server imports them, each
    # worker loads the models once (load_face_models) before its first photo.
    initializer = None
    if args.aligned:
        preload = ("fmr.commands.mask", "fmr.masks", "fmr.masks.render") + (
            ("fmr.masks.warp",) if args.renderer == "warp" else ()) + (
            ("dlib", "fmr.faces.landmarks") if args.refine else ())
    else:
        preload = ("fmr.commands.mask", "fmr.masks", "fmr.masks.render", "fmr.masks.warp",
                   "torch", "dlib", "fmr.faces.detect", "fmr.faces.landmarks")
        from fmr.faces.landmarks import load_face_models

        initializer = load_face_models
    run_batch(
        items, process, args.out, command="mask", workers=args.workers, initializer=initializer,
        extra_columns=COLUMNS, progress=not args.quiet, preload=preload,
    )
    return 0
