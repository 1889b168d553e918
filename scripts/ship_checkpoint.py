"""Copy a training run's export into the shipped checkpoint folder, ready to commit.

    python scripts/ship_checkpoint.py RUN/best.safetensors [--storage int8]

Writes `checkpoints/<architecture>.safetensors` + `.json` (or under FMR_CHECKPOINT_DIR; a
`train.py mask-finetune` export: `checkpoints/dlib_mask.safetensors`), with:
- the weights re-stored as `--storage` (int8 per output channel by default: the 25 MiB budget);
- no class centres (they are training identities and never ship);
- the card's absolute paths (the server's folders: data packs, run folders) made relative to
  the repository, or cut to their last two parts, since the app shows the card to visitors;
- the card's name saying what it is and how long it trained.
Any other checkpoint of the same family in the folder is removed, so `--backbone iresnet`
(the newest of the family) cannot pick a stale one. Refuses a result over `--max-mib`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def portable(value, root: Path):
    """`value` with every absolute path string made relative to `root` or cut to its last two
    parts (recursively through dicts and lists)."""
    if isinstance(value, dict):
        return {key: portable(item, root) for key, item in value.items()}
    if isinstance(value, list):
        return [portable(item, root) for item in value]
    if isinstance(value, str) and value.startswith("/") and "\n" not in value:
        path = Path(value)
        try:
            return str(path.relative_to(root))
        except ValueError:
            return str(Path(*path.parts[-2:])) if len(path.parts) > 2 else path.name
    return value


def where_trained(training: dict, hours) -> str:
    """Where and how long the weights trained, for the card's name: "fmr, trained on the CPU,
    3.5 h", or for a last run on a GPU "fmr, 3.5 h on the CPU, then 8 min on NVIDIA H200"."""
    device = str(training.get("device", "CPU"))
    if not isinstance(hours, int | float):
        where = "the CPU" if device.startswith("CPU") else device
        return f"fmr, trained on {where}"
    if device.startswith("CPU"):
        return f"fmr, trained on the CPU, {hours:.1f} h"
    this_run = float(training.get("wall_seconds", 0.0)) / 3600
    before = max(hours - this_run, 0.0)
    return f"fmr, {before:.1f} h on the CPU, then {this_run * 60:.0f} min on {device}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path, help="a train.py export (RUN/best.safetensors)")
    parser.add_argument("--storage", default="int8", choices=("fp32", "fp16", "int8"))
    parser.add_argument("--max-mib", type=float, default=25.0,
                        help="largest file allowed (default 25)")
    args = parser.parse_args(argv)

    import dataclasses

    from fmr.cards import read_card
    from fmr.errors import FmrError
    from fmr.modelfile import load_model_file, save_model_file
    from fmr.settings import checkpoint_dir
    from fmr.verify.lookup import family_of

    try:
        loaded = load_model_file(args.export)
    except FmrError as exc:
        print(f"ship_checkpoint: {exc}", file=sys.stderr)
        return 2
    card = loaded.card
    family = family_of(card, args.export)
    hours = card.training.get("hours_total")
    # A fine-tune is named for its family (dlib-mask), a network trained here for its architecture.
    fine_tune = family not in ("iresnet", "ressanet")
    what = f"{family}, {card.architecture} fine-tuned" if fine_tune else card.architecture
    name = f"{what} ({where_trained(card.training, hours)})"
    training = portable(card.training, ROOT)
    card = dataclasses.replace(card, name=name, training=training)
    folder = checkpoint_dir()
    stem = family.replace("-", "_") if fine_tune else card.architecture
    target = folder / f"{stem}.safetensors"
    for other in sorted(folder.glob("*.safetensors")):
        if other != target and family_of(read_card(other), other) == family:
            print(f"ship_checkpoint: removing {other.name} (same family, {family})")
            other.unlink()
            other.with_suffix(".json").unlink(missing_ok=True)
    weights = save_model_file(target, loaded.model, card, storage=args.storage)
    mib = weights.stat().st_size / 2**20
    if mib > args.max_mib:
        weights.unlink()
        weights.with_suffix(".json").unlink(missing_ok=True)
        print(f"ship_checkpoint: {weights.name} would be {mib:.1f} MiB, over {args.max_mib} MiB: "
              "try --storage int8", file=sys.stderr)
        return 1
    print(f"ship_checkpoint: {weights} ({mib:.1f} MiB, {args.storage}) + {weights.stem}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
