"""`fmr verify`: are the faces in two photos the same person, and how sure is that?"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from fmr.commands.common import add_backbone_arguments, add_multi_face_argument

HELP = "compare the faces in two photos: verdict, similarity, angle, calibrated threshold"
DESCRIPTION = """\
Detect the face in each photo, embed it with each backbone and compare: cosine similarity,
the angle between the embeddings, the threshold calibrated on the validation split (never on
evaluation data) and a verdict: same, different, or inconclusive when both answers would often
be wrong at this score. "How sure" is the share of validation pairs that would make the
verdict wrong at this score.

Each face also gets the mask detector's probability that it wears a mask ("wears a mask:
97%"; mask_probability in --json). When either face is found masked (>= 0.5) or wears a
synthetic mask (--mask-a/--mask-b), the masked calibration decides, and each result says
which calibration it used and why (calibration, calibration_reason).

--backbone names a model family: iresnet and ressanet (the shipped checkpoints, or the newest
trained ones under runs/), dlib (dlib's ResNet reference), or all (every family available;
the default). --checkpoint FILE uses any checkpoint instead.

exit status: 0 when the faces were compared (whatever the verdict), 2 on a user error (no
face, unreadable file, wrong checkpoint), with one line on stderr.

examples:
  fmr verify me.jpg passport.jpg
  fmr verify a.jpg b.jpg --backbone dlib --mask-b surgical --json
"""

VERDICT_WORDS = {
    "same": "SAME PERSON",
    "different": "DIFFERENT PEOPLE",
    "inconclusive": "INCONCLUSIVE (the score is in the band where both answers are often wrong)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image_a", metavar="A", help="first photo")
    parser.add_argument("image_b", metavar="B", help="second photo")
    add_backbone_arguments(parser)
    parser.add_argument(
        "--mask-a", metavar="STYLE", help="draw a synthetic mask of STYLE on photo A first"
    )
    parser.add_argument(
        "--mask-b", metavar="STYLE", help="draw a synthetic mask of STYLE on photo B first"
    )
    parser.add_argument(
        "--mask-renderer",
        default="fmr",
        choices=("fmr", "warp"),
        help="mask renderer for --mask-a/--mask-b (default fmr)",
    )
    parser.add_argument(
        "--mask-coverage", metavar="LOW:HIGH",
        help="for --mask-a/--mask-b: how high the mask sits on the nose, a number or a range in "
        "[0, 1] (0 just above the nose tip, 1 just below the eyes; default: the style's usual). "
        "The app's coverage slider is this number",
    )
    parser.add_argument(
        "--threshold-far",
        type=float,
        metavar="FAR",
        help="decide at the threshold for this false accept rate (default: the calibrated 1e-3)",
    )
    add_multi_face_argument(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed for synthetic masks (default 0)")
    parser.add_argument("--json", action="store_true", help="print only one JSON object on stdout")


def _face_line(label: str, side: dict) -> str:
    box = side["face"]["box"]
    width, height = side["size"]
    mask = f", synthetic mask: {side['mask'].get('style')}" if side.get("mask") else ""
    if side.get("mask_probability") is not None:
        mask += f", wears a mask: {side['mask_probability'] * 100:.0f}%"
    ignored = side.get("unlikely_ignored", 0)
    ignored = f" ({ignored} unlikely detection(s) ignored)" if ignored else ""
    return (
        f"{label}: {side['input']} ({width}x{height}; {side['faces_found']} face(s) found"
        f"{ignored}, using the one at x={box[0]:.0f} y={box[1]:.0f}, {box[2] - box[0]:.0f} px "
        f"wide{mask})"
    )


def format_result(result: dict) -> str:
    """The human-readable report of a `verify_pair` result."""
    lines = [_face_line("A", result["a"]), _face_line("B", result["b"]), ""]
    for r in result["results"]:
        lines.append(f"{r['backbone']} ({r['name']}): {VERDICT_WORDS[r['verdict']]}")
        numbers = f"  similarity {r['similarity']:.3f}, angle {r['angle_deg']:.1f} degrees"
        if r["threshold"] is not None:
            low, high = r["band"]
            pairs = ("a masked photo against an unmasked one" if r.get("calibration") == "masked"
                     else "unmasked pairs")
            numbers += (
                f"; same at >= {high:.3f} (FAR {r['threshold_far']:g} on the validation split, "
                f"{pairs})"
            )
            if low < high:
                numbers += f", inconclusive from {low:.3f}"
        lines.append(numbers)
        lines.append(f"  how sure: {r['explanation']}")
        if r.get("calibration_reason"):
            lines.append(f"  calibration: {r.get('calibration', 'unmasked')}, because "
                         f"{r['calibration_reason']}")
    for m in result.get("missing", []):
        lines.append(f"not compared with {m['backbone']}: {m['reason']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from fmr.errors import FmrError

    if args.threshold_far is not None and not 0.0 < args.threshold_far < 1.0:
        raise FmrError(
            f"--threshold-far {args.threshold_far}: a false accept rate between 0 and 1, e.g. 1e-3"
        )
    from fmr.masks import parse_coverage
    from fmr.verify import verify_pair

    mask_options = {}
    if args.mask_coverage is not None:
        mask_options["coverage"] = parse_coverage(args.mask_coverage)
    backbones = args.checkpoint if args.checkpoint else args.backbone
    # Libraries may print; stdout must hold only our answer (one JSON object with --json).
    with contextlib.redirect_stdout(sys.stderr):
        result = verify_pair(
            args.image_a,
            args.image_b,
            backbones=backbones,
            mask_a=args.mask_a,
            mask_b=args.mask_b,
            policy=args.multi_face,
            threshold_far=args.threshold_far,
            mask_renderer=args.mask_renderer,
            seed=args.seed,
            mask_options=mask_options,
        )
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        print(format_result(result))
    return 0
