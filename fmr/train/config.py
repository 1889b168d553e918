"""The training recipe as one dataclass, read from defaults, a config file and the command line.

Precedence: `TrainConfig` defaults < `--config FILE` (TOML or JSON, keys = field names, `-` or `_`)
< flags given on the command line. The resolved config is written to `<out>/config.json` and
into every checkpoint, so a run says exactly how it was trained.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from fmr.errors import FmrError

LOSSES = ("arcface", "cosface")
OPTIMIZERS = ("sgd", "adamw")
DISTILL_TARGETS = ("fixed", "consistent")
PRECISIONS = ("auto", "bf16", "fp32")
DEFAULT_MARGINS = {"arcface": 0.5, "cosface": 0.4}


@dataclass
class TrainConfig:
    """Everything one training run needs. Defaults aim at the shared-data pack on one GPU."""

    # data
    data: str = "data/shared-pack"  # pack, folder with train.rec + train.idx, or image folder
    val: str | None = None  # validation pairs; default: the pack's own; "none" to skip
    # model and loss
    backbone: str = "iresnet50"
    embedding_size: int = 512
    dropout: float = 0.0
    loss: str = "arcface"
    margin: float | None = None  # default: 0.5 for ArcFace, 0.4 for CosFace
    scale: float = 64.0
    sample_rate: float = 1.0  # Partial FC share of class centres per step (1.0 = all)
    margin_weight: float = 1.0  # weight of the margin loss (0: distillation alone)
    distill_weight: float = 1.0  # weight of the cosine loss to the teacher (0 disables)
    # fixed: the pack's teacher.npy, one descriptor per photo; consistent: the teacher (dlib's
    # network, run by fmr.models.dlib_resnet) on the very view the student sees, which needs a
    # pack prepared with --canvases
    distill_targets: str = "fixed"
    # optimisation (SGD, momentum 0.9, weight decay 5e-4, or AdamW; warmup then polynomial decay)
    optimizer: str = "sgd"
    epochs: int = 40
    batch_size: int = 256  # per process (per GPU)
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 2.0
    poly_power: float = 2.0
    # augmentation (on the device, in batches)
    mask_prob: float = 0.5  # share of training images given a synthetic mask on the fly
    flip_prob: float = 0.5
    rotation: float = 8.0  # max degrees either way
    scale_jitter: float = 0.08  # max relative zoom either way
    translate: float = 0.04  # max shift as a fraction of the crop side
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    grayscale_prob: float = 0.05
    blur_prob: float = 0.0  # share of views blurred (Gaussian, sigma up to blur_sigma)
    blur_sigma: float = 1.5  # template pixels
    mix_prob: float = 0.0  # share of views blending two faces (mixup; consistent targets only)
    # run
    out: str | None = None  # default: runs/<backbone>-<YYYYmmdd-HHMMSS>
    seed: int = 0
    device: str = "auto"  # auto | cuda | cuda:N | cpu
    precision: str = "auto"  # auto | bf16 | fp32 (auto: bf16 on CUDA and on CPUs where faster)
    compile: bool | None = None  # torch.compile the backbone; default: on for CUDA
    channels_last: bool = True
    threads: int | None = None  # CPU threads (default: the cores this process may use)
    workers: int = 8  # decoding processes (streaming) or threads (in-memory)
    in_memory: str = "auto"  # auto | yes | no: decode the whole set once onto the device
    log_every: int = 50  # steps between log lines (and the only host syncs)
    save_every: int = 0  # steps between mid-epoch checkpoints (0: at epoch ends only)
    keep_checkpoints: int = 2
    stop_after_epochs: int | None = None  # end this process early, keeping the --epochs schedule
    time_limit: float | None = None  # seconds; stop cleanly (checkpoint + export) when exceeded
    time_budget: float | None = None  # seconds; fit --epochs to it after measuring the speed
    val_every: int = 1  # epochs between validations (and exports); the last epoch always
    val_mask_seed: int = 1234  # masks on validation crops: fixed, so epochs compare
    storage: str = "fp16"  # export weights: fp32 | fp16 | int8
    resume: str | None = None  # a checkpoint file or run folder; "latest" = newest in --out
    init_from: str | None = None  # exported weights (.safetensors) to start from, weights only
    progress: bool = True

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
