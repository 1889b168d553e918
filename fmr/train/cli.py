"""Command line of `python train.py` (the loop itself is `fmr.train.loop.train`)."""

from __future__ import annotations

import argparse
import sys

from fmr.train.config import LOSSES, TrainConfig, build_config, read_config_file

DESCRIPTION = """\
Train an IResNet or ResSaNet face recogniser with ArcFace/CosFace, synthetic masks on the fly and
optional distillation from a teacher's descriptors stored in the pack.

--data takes an fmr pack (fmr prepare), a folder with insightface's train.rec + train.idx, or an
image folder with one sub-folder of aligned 112x112 crops per identity. Validation pairs come from
the pack (or --val); without any, training runs and skips validation.

Outputs in --out (default runs/<backbone>-<date>-<time>): best.safetensors + best.json (the model
chosen on the validation pairs, calibrated on them; `fmr verify --checkpoint` loads it),
checkpoints/step-N.pt (resumable), log.jsonl, epochs.csv, tensorboard/, config.json.

Settings come from the defaults, then --config FILE (TOML or JSON, keys = the long flag names),
then the flags given here. One GPU by default; several with torchrun:
  torchrun --nproc_per_node 8 train.py --data data/ms1m --backbone iresnet100 --batch-size 128

examples:
  python train.py --backbone iresnet50 --data data/shared-pack
  python train.py --config configs/shipped-iresnet.toml --out runs/r18
  python train.py --resume --out runs/r18          # continue from its newest checkpoint
  python train.py --device cpu --backbone iresnet18 --epochs 1 --batch-size 8   # smoke run
"""


def build_parser() -> argparse.ArgumentParser:
    from fmr.models import list_models

    parser = argparse.ArgumentParser(
        prog="train.py", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,  # only flags given on the command line override
    )
    d = TrainConfig()
    add = parser.add_argument
    add("--config", metavar="FILE", help="TOML or JSON file of settings (flags override it)")
    add("--data", metavar="PATH", help=f"training data (default {d.data})")
    add("--val", metavar="PATH", help="validation pairs: a pack or a folder with val.rec + "
        "val_pairs.txt (default: the pack's own; 'none' to skip)")
    add("--backbone", choices=list_models(), metavar="NAME",
        help=f"model: {', '.join(list_models())} (default {d.backbone})")
    add("--loss", choices=LOSSES, help=f"margin loss (default {d.loss})")
    add("--margin", type=float, help="margin (default 0.5 ArcFace, 0.4 CosFace)")
    add("--scale", type=float, help=f"logit scale s (default {d.scale})")
    add("--embedding-size", type=int, help=f"embedding dimension (default {d.embedding_size})")
    add("--dropout", type=float, help=f"dropout before the embedding layer (default {d.dropout})")
    add("--sample-rate", type=float,
        help="Partial FC: share of class centres per step, for very many identities (default 1)")
    add("--distill-weight", type=float,
        help=f"weight of the cosine loss to the teacher descriptors, 0 = off (default "
        f"{d.distill_weight}; needs teacher.npy in the pack, or its canvases)")
    add("--margin-weight", type=float,
        help=f"weight of the margin loss, 0 = distillation alone (default {d.margin_weight})")
    add("--distill-targets", choices=("fixed", "consistent"),
        help="fixed: the pack's teacher.npy, one descriptor per photo; consistent: dlib's network "
        "(run in torch) on the very view the student sees, masks left out (needs a pack made "
        f"with `fmr prepare --canvases`) (default {d.distill_targets})")
    add("--optimizer", choices=("sgd", "adamw"),
        help=f"SGD with momentum, or AdamW (default {d.optimizer})")
    add("--epochs", type=int, help=f"epochs (default {d.epochs})")
    add("--batch-size", type=int, help=f"images per step per GPU (default {d.batch_size})")
    add("--lr", type=float, help=f"peak learning rate of SGD (default {d.lr})")
    add("--momentum", type=float, help=f"SGD momentum (default {d.momentum})")
    add("--weight-decay", type=float, help=f"SGD weight decay (default {d.weight_decay})")
    add("--warmup-epochs", type=float, help=f"linear warmup length (default {d.warmup_epochs})")
    add("--poly-power", type=float, help=f"power of the decay (default {d.poly_power})")
    add("--mask-prob", type=float,
        help=f"share of training images given a synthetic mask on the fly (default {d.mask_prob})")
    aug = parser.add_argument_group("augmentation (on the device, per image)")
    aug.add_argument("--flip-prob", type=float, help=f"horizontal flip (default {d.flip_prob})")
    aug.add_argument("--rotation", type=float, help=f"max rotation, degrees (default {d.rotation})")
    aug.add_argument("--scale-jitter", type=float, help=f"max zoom (default {d.scale_jitter})")
    aug.add_argument("--translate", type=float, help=f"max shift / side (default {d.translate})")
    aug.add_argument("--brightness", type=float, help=f"(default {d.brightness})")
    aug.add_argument("--contrast", type=float, help=f"(default {d.contrast})")
    aug.add_argument("--saturation", type=float, help=f"(default {d.saturation})")
    aug.add_argument("--grayscale-prob", type=float, help=f"(default {d.grayscale_prob})")
    aug.add_argument("--blur-prob", type=float,
                     help=f"share of images blurred (default {d.blur_prob})")
    aug.add_argument("--blur-sigma", type=float,
                     help=f"largest blur sigma, template pixels (default {d.blur_sigma})")
    aug.add_argument("--mix-prob", type=float,
                     help="share of images blended with another face (mixup), the teacher "
                     f"describing the blend; needs --distill-targets consistent (default "
                     f"{d.mix_prob})")
    run = parser.add_argument_group("run")
    run.add_argument("--out", metavar="DIR", help="run folder (default runs/<backbone>-<time>)")
    run.add_argument("--resume", nargs="?", const="latest", metavar="PATH",
                     help="continue a run: a checkpoint file or run folder; without PATH, the "
                     "newest checkpoint in --out")
    run.add_argument("--init-from", metavar="FILE",
                     help="start from the weights of an exported model (.safetensors, e.g. a "
                     "shipped checkpoint or a run's best.safetensors): weights only, a new "
                     "schedule and optimiser")
    run.add_argument("--seed", type=int, help=f"seed of initialisation, order and augmentation "
                     f"(default {d.seed})")
    run.add_argument("--device", help="auto, cuda, cuda:N or cpu (default auto)")
    run.add_argument("--precision", choices=("auto", "bf16", "fp32"),
                     help="bf16 autocast or fp32 (default auto: bf16 on CUDA, and on a CPU with "
                     "AMX-BF16 or AVX512-BF16 where a short probe finds it faster; the log says "
                     "which and why)")
    run.add_argument("--compile", action=argparse.BooleanOptionalAction,
                     help="torch.compile the backbone (default: on for CUDA, off on CPU); a "
                     "model the compiler cannot handle runs eagerly, and the log says so")
    run.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                     help="channels-last memory layout, CPU and CUDA (default on)")
    run.add_argument("--threads", type=int,
                     help="CPU threads (default: the cores this process may use)")
    run.add_argument("--workers", type=int,
                     help=f"JPEG decoding threads/processes (default {d.workers})")
    run.add_argument("--in-memory", choices=("auto", "yes", "no"),
                     help="decode the whole set once onto the device (default auto: when it fits)")
    run.add_argument("--log-every", type=int,
                     help=f"steps between log lines (default {d.log_every})")
    run.add_argument("--save-every", type=int,
                     help="steps between mid-epoch checkpoints (default 0: at epoch ends)")
    run.add_argument("--keep-checkpoints", type=int,
                     help=f"resumable checkpoints kept (default {d.keep_checkpoints})")
    run.add_argument("--stop-after-epochs", type=int, metavar="N",
                     help="end this process after N epochs, keeping the --epochs schedule "
                     "(continue later with --resume)")
    run.add_argument("--time-limit", type=float, metavar="SECONDS",
                     help="stop cleanly (validate, export, checkpoint) after this long")
    run.add_argument("--time-budget", type=float, metavar="SECONDS",
                     help="fit the schedule into this much time from the start: after timing "
                     "a few steps, --epochs becomes the number of epochs that fit (never more), "
                     "and shrinks at epoch ends if training falls behind")
    run.add_argument("--val-every", type=int, metavar="N",
                     help="validate (and export the best) every N epochs and after the last "
                     "(default 1)")
    run.add_argument("--val-mask-seed", type=int,
                     help=f"seed of the masks on validation crops (default {d.val_mask_seed})")
    run.add_argument("--storage", choices=("fp32", "fp16", "int8"),
                     help=f"weights of the best export (default {d.storage})")
    run.add_argument("--quiet", dest="progress", action="store_false", help="no progress bar")
    return parser


# Settings a resumed run does not inherit from the checkpoint: they describe this process.
NOT_INHERITED = ("resume", "stop_after_epochs", "time_limit", "time_budget", "progress",
                 "device", "workers", "threads", "init_from")


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    from fmr.train.state import load_state, resolve_resume

    args = vars(build_parser().parse_args(argv))
    file_values = read_config_file(args.pop("config")) if "config" in args else {}
    cli_values = {k.replace("-", "_"): v for k, v in args.items()}
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
