"""Options several commands share, defined once so they mean the same everywhere.

Standard library only: command modules are imported for `fmr --help`.
"""

from __future__ import annotations

import argparse

BACKBONE_FAMILIES = ("iresnet", "ressanet", "dlib")
# The same names as fmr.faces.MULTI_FACE_POLICIES (not imported here: it pulls in OpenCV).
MULTI_FACE_POLICIES = ("largest", "center", "require-one")


def add_backbone_arguments(
    parser: argparse.ArgumentParser, *, default: str = "all", allow_all: bool = True,
    checkpoint_help: str = "use this checkpoint instead of --backbone",
) -> None:
    """`--backbone FAMILY` (shipped or newest trained checkpoint of a family, or dlib's
    reference; `all` = every one available) and `--checkpoint FILE` (any checkpoint)."""
    choices = (*BACKBONE_FAMILIES, "all") if allow_all else BACKBONE_FAMILIES
    help_default = "all available" if default == "all" else default
    parser.add_argument(
        "--backbone", default=default, choices=choices,
        help=f"model family: the shipped (or newest trained) checkpoint, or dlib's reference "
        f"(default: {help_default})",
    )
    parser.add_argument("--checkpoint", metavar="FILE", help=checkpoint_help)


def add_multi_face_argument(
    parser: argparse.ArgumentParser, *, default: str = "largest", note: str = ""
) -> None:
    """`--multi-face POLICY`: which face of a photo with several to use."""
    parser.add_argument(
        "--multi-face", choices=MULTI_FACE_POLICIES, default=default,
        help=f"which face to use when a photo shows several (default {default}{note})",
    )
