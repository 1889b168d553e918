"""Lay out the shared data's training-side people as one folder of identity sub-folders.

    python scripts/training_side_folder.py --min-photos 10 --out data/training-side
    fmr prepare data/training-side --preset original --workers 2 --out data/original-pack

Each sub-folder holds symbolic links to one person's photos: `celeba-<id>` for the CelebA
subset identities, `celeba_extra-<id>` for the extra CelebA people and `lfw-<Name>` for LFW
people who are NOT in pair folds 6-10 (the evaluation set), keeping people with at least
--min-photos photos. The 40 CelebA validation identities of the shared split
(`fmr.data.splits`) stay out too unless --include-validation,
so `fmr eval --calibrate` (which calibrates on them) stays honest for models trained on this.
`fmr prepare --preset original` then also checks every photo against folds 6-10 itself (on by
default for the shared data: --exclude-evaluation-people).

The shared data folder is FMR_DATA_DIR or ../shared/data (--data to choose another). Nothing
is copied: the links point at the shared photos (absolute paths).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fmr.data.splits import link_identity_folder, training_side_identities  # noqa: E402
from fmr.errors import FmrError  # noqa: E402
from fmr.settings import data_dir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="new folder for the identity sub-folders")
    parser.add_argument("--data", default=None, help="shared data folder (default: FMR_DATA_DIR "
                        "or ../shared/data)")
    parser.add_argument("--min-photos", type=int, default=10,
                        help="keep people with at least this many photos (default 10)")
    parser.add_argument("--max-identities", type=int, default=None,
                        help="keep only N identities, half CelebA and half LFW, the first "
                        "by name (a small slice, for trials)")
    parser.add_argument("--include-validation", action="store_true",
                        help="also the shared split's 40 CelebA validation identities")
    args = parser.parse_args(argv)
    try:
        identities = training_side_identities(Path(args.data) if args.data else data_dir(),
                                              min_photos=args.min_photos,
                                              include_validation=args.include_validation)
        if args.max_identities is not None:
            celeba = [k for k in identities if k.startswith("celeba-")]
            lfw = [k for k in identities if k.startswith("lfw-")]
            n_lfw = min(len(lfw), args.max_identities // 2)
            keys = celeba[: args.max_identities - n_lfw] + lfw[:n_lfw]
            identities = {k: identities[k] for k in sorted(keys)}
        out = link_identity_folder(identities, args.out)
    except FmrError as exc:
        print(f"training_side_folder: error: {exc}", file=sys.stderr)
        return 2
    celeba = sum(k.startswith("celeba-") for k in identities)
    extra = sum(k.startswith("celeba_extra-") for k in identities)
    photos = sum(len(v) for v in identities.values())
    print(f"training_side_folder: {len(identities)} identities ({celeba} CelebA subset, "
          f"{extra} celeba_extra, {len(identities) - celeba - extra} LFW not in folds 6-10), "
          f"{photos} photos: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
