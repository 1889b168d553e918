"""Command line of `python train.py` (the loop itself is `fmr.train.loop.train`)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from fmr.train.config import GROUPS, TrainConfig, build_config, read_config_file

DESCRIPTION = """\
Train an IResNet or ResSaNet face recogniser with ArcFace/CosFace, synthetic masks on the fly and
optional distillation from a teacher's descriptors stored in the pack.

--data takes an fmr pack (fmr prepare), a folder with insightface's train.rec + train.idx, or an
image folder with one sub-folder of aligned 112x112 crops per identity. Validation pairs come from
the pack (or --val); without any, training runs and skips validation.

Outputs in --out (default runs/<backbone>-<date>-<time>): best.safetensors + best.json (the model
chosen on the validation pairs, calibrated on them; `fmr verify --checkpoint` loads it),
states/step-N.pt (resumable training states), log.jsonl, epochs.csv, tensorboard/, config.json.

Settings come from the defaults, then --config FILE (TOML or JSON, keys = the long flag names),
then the flags given here. One GPU by default; several with torchrun:
  torchrun --nproc_per_node 8 train.py --data data/ms1m --backbone iresnet100 --batch-size 128

Fine-tuning dlib's network for masks against its frozen self (the dlib-mask model) is its own
command: python train.py mask-finetune --help

examples:
  python train.py --backbone iresnet50 --data data/shared-pack
  python train.py --config configs/shipped-iresnet.toml --out runs/r18
  python train.py --resume --out runs/r18          # continue from its newest checkpoint
  python train.py --device cpu --backbone iresnet18 --epochs 1 --batch-size 8   # smoke run
"""


def _flag_type(field: dataclasses.Field) -> type | None:
    """The argparse type of a field from its annotation ("float | None" -> float)."""
    kinds = {"int": int, "float": float, "str": str, "bool": bool}
    names = [part.strip() for part in str(field.type).split("|")]
    found = [kinds[n] for n in names if n in kinds]
    return found[0] if found else None


def build_parser() -> argparse.ArgumentParser:
    """train.py's command line, one flag per `TrainConfig` field (its help, group and choices
    come from the field's metadata), plus --config."""
    from fmr.models import list_models

    parser = argparse.ArgumentParser(
        prog="train.py", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,  # only flags given on the command line override
    )
    parser.add_argument("--config", metavar="FILE",
                        help="TOML or JSON file of settings (flags override it)")
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for field in dataclasses.fields(TrainConfig):
        meta = field.metadata
        extra = dict(meta["flag"])
        name = extra.pop("name", "--" + field.name.replace("_", "-"))
        help_text = meta["help"].replace("{default}", str(field.default))
        kind = _flag_type(field)
        if field.name == "backbone":
            extra["choices"] = list_models()
        if "action" in extra:
            pass
        elif kind is bool:
            extra["action"] = argparse.BooleanOptionalAction
        elif kind is not None:
            extra["type"] = kind
        groups[meta["group"]].add_argument(name, dest=field.name, help=help_text, **extra)
    return parser


# Settings a resumed run does not inherit from the checkpoint: they describe this process.
NOT_INHERITED = ("resume", "stop_after_epochs", "time_limit", "time_budget", "progress",
                 "device", "workers", "threads", "init_from")


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    from fmr.train.state import load_state, resolve_resume

    args = vars(build_parser().parse_args(argv))
    file_values = read_config_file(args.pop("config")) if "config" in args else {}
    cli_values = dict(args)
    resume = cli_values.get("resume", file_values.get("resume"))
    if resume:
        out = cli_values.get("out", file_values.get("out"))
        path = resolve_resume(resume, out)
        saved = load_state(path)["config"]
        base = {k: v for k, v in saved.items() if k not in NOT_INHERITED}
        file_values = {**base, **file_values}
        cli_values["resume"] = str(path)
    return build_config(file_values, cli_values)


def main(argv: list[str] | None = None) -> int:
    from fmr.errors import FmrError

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["mask-finetune"]:  # its own way of training: fmr.train.mask_finetune
        from fmr.train.mask_finetune import main as finetune_main

        return finetune_main(argv[1:])

    try:
        config = config_from_args(argv)
        from fmr.train.loop import train

        train(config)
    except FmrError as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("train.py: interrupted (resume with --resume)", file=sys.stderr)
        return 130
    return 0
