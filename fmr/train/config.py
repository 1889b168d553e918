"""The training recipe as one dataclass, read from defaults, a config file and the command line.

Precedence: `TrainConfig` defaults < `--config FILE` (TOML or JSON, keys = field names, `-` or `_`)
< flags given on the command line. The resolved config is written to `<out>/config.json` and
into every checkpoint, so a run says exactly how it was trained.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from fmr.errors import FmrError

LOSSES = ("arcface", "cosface")
OPTIMIZERS = ("sgd", "adamw")
DISTILL_TARGETS = ("fixed", "consistent")
PRECISIONS = ("auto", "bf16", "fp32")
INIT_CENTRES = ("class-means", "random")
DEFAULT_MARGINS = {"arcface": 0.5, "cosface": 0.4}


GROUPS = ("data", "model and loss", "distillation", "optimisation",
          "augmentation (on the device, per image)", "run")


def setting(default, help: str, group: str, **flag) -> object:
    """A `TrainConfig` field with what train.py's command line says of it: `help` (`{default}`
    in it is replaced by the default), its `group` of GROUPS, and argparse extras in `flag`
    (choices, metavar, nargs/const, or `name`/`action` for a flag not named after the field)."""
    return field(default=default, metadata={"help": help, "group": group, "flag": flag})


@dataclass
class TrainConfig:
    """Everything one training run needs, and the single description of train.py's flags
    (`fmr.train.cli` builds the command line from these fields). Defaults aim at the
    shared-data pack on one GPU."""

    data: str = setting(
        "data/shared-pack", "training data: a pack (fmr prepare), a folder with train.rec + "
        "train.idx, or an image folder (default {default})", "data", metavar="PATH")
    val: str | None = setting(
        None, "validation pairs: a pack or a folder with val.rec + val_pairs.txt (default: the "
        "pack's own; 'none' to skip)", "data", metavar="PATH")
    backbone: str = setting("iresnet50", "model (default {default}; `fmr models` lists them)",
                            "model and loss", metavar="NAME")
    embedding_size: int = setting(
        512, "embedding dimension (default {default}; the teacher's 128 distils the embedding "
        "itself)", "model and loss")
    dropout: float = setting(0.0, "dropout before the embedding layer (default {default})",
                             "model and loss")
    loss: str = setting("arcface", "margin loss (default {default})", "model and loss",
                        choices=LOSSES)
    margin: float | None = setting(None, "margin (default 0.5 ArcFace, 0.4 CosFace)",
                                   "model and loss")
    scale: float = setting(64.0, "logit scale s (default {default})", "model and loss")
    sample_rate: float = setting(
        1.0, "sampled softmax: share of class centres per step, for very many identities "
        "(default {default}: all)", "model and loss")
    margin_weight: float = setting(
        1.0, "weight of the margin loss, 0 = distillation alone (default {default})",
        "model and loss")
    distill_weight: float = setting(
        1.0, "weight of the cosine loss to the teacher, 0 = off (default {default}; needs the "
        "pack's teacher.npy, or its canvases)", "distillation")
    distill_targets: str = setting(
        "fixed", "fixed: the pack's teacher.npy, one descriptor per photo; consistent: dlib's "
        "network (run in torch) on the very view the student sees, mask left out (needs a pack "
        "made with `fmr prepare --canvases`) (default {default})", "distillation",
        choices=DISTILL_TARGETS)
    distill_center: bool = setting(
        True, "subtract the teacher's mean descriptor over the training images before "
        "comparing (dlib's descriptors share one direction that holds 91%% of their length: "
        "without centring, matching that direction is most of the loss and the student learns "
        "little about who is who) (default on)", "distillation")
    optimizer: str = setting("sgd", "SGD with momentum, or AdamW (default {default})",
                             "optimisation", choices=OPTIMIZERS)
    epochs: int = setting(40, "epochs (default {default}; with --time-budget, the most)",
                          "optimisation")
    batch_size: int = setting(256, "images per step per process (default {default})",
                              "optimisation")
    lr: float = setting(0.1, "peak learning rate (default {default})", "optimisation")
    momentum: float = setting(0.9, "SGD momentum (default {default})", "optimisation")
    weight_decay: float = setting(5e-4, "weight decay (default {default})", "optimisation")
    warmup_epochs: float = setting(2.0, "linear warm-up length, epochs (default {default})",
                                   "optimisation")
    poly_power: float = setting(2.0, "power of the decay to zero (default {default})",
                                "optimisation")
    mask_prob: float = setting(
        0.5, "share of images given a synthetic mask (training styles) (default {default})",
        "augmentation (on the device, per image)")
    flip_prob: float = setting(0.5, "horizontal flip (default {default})",
                               "augmentation (on the device, per image)")
    rotation: float = setting(8.0, "largest rotation, degrees (default {default})",
                              "augmentation (on the device, per image)")
    scale_jitter: float = setting(0.08, "largest relative zoom (default {default})",
                                  "augmentation (on the device, per image)")
    translate: float = setting(0.04, "largest shift / side (default {default})",
                               "augmentation (on the device, per image)")
    brightness: float = setting(0.25, "brightness factor 1 +- this (default {default})",
                                "augmentation (on the device, per image)")
    contrast: float = setting(0.25, "contrast factor 1 +- this (default {default})",
                              "augmentation (on the device, per image)")
    saturation: float = setting(0.25, "saturation factor 1 +- this (default {default})",
                                "augmentation (on the device, per image)")
    grayscale_prob: float = setting(0.05, "share of images made grey (default {default})",
                                    "augmentation (on the device, per image)")
    blur_prob: float = setting(0.0, "share of images blurred (default {default})",
                               "augmentation (on the device, per image)")
    blur_sigma: float = setting(1.5, "largest blur sigma, template pixels (default {default})",
                                "augmentation (on the device, per image)")
    mix_prob: float = setting(
        0.0, "share of images blended with another face (mixup), the teacher describing the "
        "blend; needs --distill-targets consistent (default {default})",
        "augmentation (on the device, per image)")
    out: str | None = setting(None, "run folder (default runs/<backbone>-<date>-<time>)",
                              "run", metavar="DIR")
    seed: int = setting(0, "seed of initialisation, order and augmentation (default {default})",
                        "run")
    device: str = setting("auto", "auto, cuda, cuda:N or cpu (default {default})", "run")
    precision: str = setting(
        "auto", "bf16 autocast or fp32 (default auto: bf16 on CUDA, and on a CPU with AMX-BF16 "
        "or AVX512-BF16 where a short probe finds it faster; the log says which and why)",
        "run", choices=PRECISIONS)
    compile: bool | None = setting(
        None, "torch.compile the backbone (default: on for CUDA, off on CPU); a model the "
        "compiler cannot handle runs eagerly, and the log says so", "run")
    channels_last: bool = setting(True, "channels-last memory layout (default on)", "run")
    threads: int | None = setting(None, "CPU threads (default: the cores this process may use)",
                                  "run")
    workers: int = setting(8, "JPEG decoding threads/processes (default {default})", "run")
    in_memory: str = setting(
        "auto", "decode the whole set once onto the device (default auto: when it fits)", "run",
        choices=("auto", "yes", "no"))
    log_every: int = setting(50, "steps between log lines, the only host syncs "
                             "(default {default})", "run")
    save_every: int = setting(0, "steps between mid-epoch training states (default 0: at "
                              "epoch ends)", "run")
    keep_checkpoints: int = setting(2, "training states kept (default {default})", "run")
    stop_after_epochs: int | None = setting(
        None, "end this process after N epochs, keeping the --epochs schedule (continue later "
        "with --resume)", "run", metavar="N")
    time_limit: float | None = setting(
        None, "stop cleanly (validate, export, save) after this long", "run", metavar="SECONDS")
    time_budget: float | None = setting(
        None, "fit the schedule into this much time from the start: after timing the first "
        "steps the schedule gets the steps that fit (never more than --epochs), re-planned as "
        "training goes, so the learning rate reaches zero at the end", "run", metavar="SECONDS")
    val_every: int = setting(1, "validate (and export the best) every N epochs and after the "
                             "last (default {default})", "run", metavar="N")
    val_mask_seed: int = setting(1234, "seed of the masks on validation crops (default "
                                 "{default})", "run")
    storage: str = setting("fp16", "weights of the best export (default {default})", "run",
                           choices=("fp32", "fp16", "int8"))
    resume: str | None = setting(
        None, "continue a run: a training state file or run folder; without PATH, the newest "
        "state in --out", "run", metavar="PATH", nargs="?", const="latest")
    init_from: str | None = setting(
        None, "start from the weights of an exported model (.safetensors, e.g. a shipped "
        "checkpoint or a run's best.safetensors): weights only, a new schedule and optimiser",
        "run", metavar="FILE")
    init_centres: str = setting(
        "class-means", "with --init-from, the margin head's class centres: the mean embedding "
        "of each class under the loaded weights (the loss starts where the backbone is), or "
        "random (default {default})", "run", choices=INIT_CENTRES)
    progress: bool = setting(True, "no progress bar", "run", name="--quiet",
                             action="store_false")

    def margin_value(self) -> float:
        return DEFAULT_MARGINS[self.loss] if self.margin is None else float(self.margin)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """Raise `FmrError` with a clear message for values that cannot work."""
        if self.loss not in LOSSES:
            raise FmrError(f"--loss {self.loss!r}: choose one of {', '.join(LOSSES)}")
        checks = [
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.batch_size >= 2, "--batch-size must be at least 2"),
            (self.lr > 0, "--lr must be positive"),
            (0.0 <= self.mask_prob <= 1.0, "--mask-prob must be between 0 and 1"),
            (self.distill_weight >= 0, "--distill-weight must be 0 or more"),
            (self.margin_weight >= 0, "--margin-weight must be 0 or more"),
            (self.margin_weight > 0 or self.distill_weight > 0,
             "--margin-weight and --distill-weight cannot both be 0: nothing would be learned"),
            (self.optimizer in OPTIMIZERS, f"--optimizer: choose one of {', '.join(OPTIMIZERS)}"),
            (self.distill_targets in DISTILL_TARGETS,
             f"--distill-targets: choose one of {', '.join(DISTILL_TARGETS)}"),
            (self.precision in PRECISIONS, f"--precision: choose one of {', '.join(PRECISIONS)}"),
            (0.0 <= self.mix_prob <= 1.0, "--mix-prob must be between 0 and 1"),
            (0.0 <= self.blur_prob <= 1.0, "--blur-prob must be between 0 and 1"),
            (self.mix_prob == 0 or self.distill_targets == "consistent",
             "--mix-prob needs --distill-targets consistent: only a teacher that sees the blend "
             "can say what a blend of two faces is"),
            (self.threads is None or self.threads >= 1, "--threads must be at least 1"),
            (0.0 < self.sample_rate <= 1.0, "--sample-rate must be in (0, 1]"),
            (self.in_memory in ("auto", "yes", "no"), "--in-memory must be auto, yes or no"),
            (self.storage in ("fp32", "fp16", "int8"), "--storage must be fp32, fp16 or int8"),
            (self.log_every >= 1, "--log-every must be at least 1"),
            (self.val_every >= 1, "--val-every must be at least 1"),
            (self.workers >= 0, "--workers must be 0 or more"),
        ]
        for ok, message in checks:
            if not ok:
                raise FmrError(message)


FIELD_NAMES = {f.name for f in fields(TrainConfig)}


def read_config_file(path: str | os.PathLike) -> dict:
    """Read a TOML or JSON config file into {field: value} (keys may use - or _)."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise FmrError(f"{path}: cannot read the config file ({exc.strerror or exc})") from exc
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            import tomllib

            raw = tomllib.loads(text.decode("utf-8"))
    except ValueError as exc:  # json.JSONDecodeError and tomllib.TOMLDecodeError are ValueErrors
        raise FmrError(f"{path}: not valid {path.suffix.lstrip('.') or 'TOML'}: {exc}") from exc
    if not isinstance(raw, dict):
        raise FmrError(f"{path}: expected a table of settings at the top level")
    values = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in FIELD_NAMES:
            raise FmrError(
                f"{path}: unknown setting {key!r}; known settings are the train.py flags: "
                f"{', '.join(sorted(FIELD_NAMES))}"
            )
        values[name] = value
    return values


def build_config(file_values: dict, cli_values: dict) -> TrainConfig:
    """Defaults < config file < command line (only flags the user gave are in `cli_values`)."""
    merged = {**file_values, **{k: v for k, v in cli_values.items() if k in FIELD_NAMES}}
    config = TrainConfig(**merged)
    config.validate()
    return config
