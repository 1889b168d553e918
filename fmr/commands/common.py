"""Options several commands share, defined once so they mean the same everywhere.

Standard library only: command modules are imported for `fmr --help`.
"""

from __future__ import annotations

import argparse

BACKBONE_FAMILIES = ("iresnet", "ressanet", "dlib", "dlib-mask")
# The same names as fmr.faces.MULTI_FACE_POLICIES (not imported here: it pulls in OpenCV).
MULTI_FACE_POLICIES = ("main", "largest", "center", "require-one")
# What each policy does, for --help (fmr.faces.policy.select_face has the rule).
MULTI_FACE_HELP = (
    "main: the person the photo is of: a face in frame (eyes, nose and nearly all its box inside "
    "the photo) beats one cut by the border, then the biggest (only the part of its box inside "
    "the photo counts, and a detection MTCNN is unsure of counts as a third as wide); "
    "largest: the biggest box, even a face cut by the border; center: the face nearest the "
    "photo's centre; require-one: refuse a photo with several"
)


def backbone_list(value: str) -> str:
    """argparse type of `--backbone` where several families may be named: "all", one family,
    or a comma-separated list of families ("iresnet,ressanet")."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    if value == "all" or (names and all(name in BACKBONE_FAMILIES for name in names)):
        return value if value == "all" else ",".join(dict.fromkeys(names))
    raise argparse.ArgumentTypeError(
        f"{value!r}: name all, or one or more of {', '.join(BACKBONE_FAMILIES)} separated by commas"
    )


def add_backbone_arguments(
    parser: argparse.ArgumentParser, *, default: str = "all", allow_all: bool = True,
    allow_list: bool = False, checkpoint_help: str = "use this checkpoint instead of --backbone",
) -> None:
    """`--backbone FAMILY` (shipped or newest trained checkpoint of a family, or dlib's
    reference; `all` = every one available; with `allow_list`, several families separated by
    commas) and `--checkpoint FILE` (any checkpoint)."""
    help_default = "all available" if default == "all" else default
    if allow_list:
        parser.add_argument(
            "--backbone", default=default, type=backbone_list, metavar="FAMILIES",
            help=f"model families: {', '.join(BACKBONE_FAMILIES)}, several separated by commas "
            f"(e.g. iresnet,ressanet), or all: the shipped (or newest trained) checkpoint of each, "
            f"or dlib's reference (default: {help_default})",
        )
    else:
        choices = (*BACKBONE_FAMILIES, "all") if allow_all else BACKBONE_FAMILIES
        parser.add_argument(
            "--backbone", default=default, choices=choices,
            help=f"model family: the shipped (or newest trained) checkpoint, or dlib's reference "
            f"(default: {help_default})",
        )
    if allow_list:
        # Several checkpoints in one run share the detection, alignment and masks of each photo.
        parser.add_argument("--checkpoint", metavar="FILE", action="append",
                            help=f"{checkpoint_help}; repeat it for several")
    else:
        parser.add_argument("--checkpoint", metavar="FILE", help=checkpoint_help)


def add_multi_face_argument(
    parser: argparse.ArgumentParser, *, default: str = "main", note: str = ""
) -> None:
    """`--multi-face POLICY`: which face of a photo with several to use."""
    parser.add_argument(
        "--multi-face", choices=MULTI_FACE_POLICIES, default=default,
        help=f"which face to use when a photo shows several (default {default}{note}). "
        f"{MULTI_FACE_HELP}",
    )
