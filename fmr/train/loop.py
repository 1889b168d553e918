"""The training loop behind `python train.py`: `train(config)`, read top to bottom in
`Training.fit`.

Set-up (`Training.__init__`): the device policy (`fmr.train.device`), the data (`open_data`),
the module (backbone + margin head + distillation projection), the optimiser and schedule, and
the state to resume from (`restore`) or the weights to start from (`--init-from`).

Per step (`Training.step`): a uint8 batch already on the device (`fmr.train.data`) -> a random
view of each image there, and with an online teacher the teacher's descriptor of the same view
(`fmr.train.augment`) -> backbone under the policy's precision and memory layout -> margin loss
on the class centres (fp32) + distillation loss -> optimiser. Nothing is read back to the host
except every `--log-every` steps, when the running sums are logged and `--time-budget`
re-plans the length of the schedule (`StepBudget`).

After each epoch (`Training.end_of_epoch`, rank 0): validation on the held-out pairs (unmasked
and masked; on a pack with a held-out split also closed-set top-1/top-5 against the class
centres, `fmr.train.validation`), an export of the best model so far
(`<out>/best.safetensors` + `best.json`, calibrated on the validation pairs, with the class
centres on such a pack; `Training.export`), and a resumable training state
(`<out>/states/step-N.pt`; `Training.save`). A non-finite loss stops the run with a
message; the last state on disk is the last good one.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fmr.errors import FmrError
from fmr.faces.align import CROP_CANVAS, WIDE_CANVAS
from fmr.train import distributed
from fmr.train.augment import AugmentSettings, augment_batch, augment_with_teacher
from fmr.train.config import TrainConfig
from fmr.train.device import CompiledForward, DevicePolicy, choose_policy
from fmr.train.runlog import RunLogger
from fmr.train.schedule import make_scheduler
from fmr.train.state import load_state, resolve_resume, restore_rng, rng_state, save_state
from fmr.train.validation import CLOSED_SET_CONDITIONS

LICENCE_NOTE = (
    "Research and demonstration only: trained on research face datasets (e.g. LFW, UMass "
    "Amherst; CelebA, CUHK, non-commercial research use only). Check the licences of the data "
    "before any other use."
)
# Stats accumulated on the device each step, read back only when logging.
STAT_NAMES = ("loss", "margin_loss", "distill_loss", "angle_sum", "labelled", "correct",
              "accuracy_count")


class TrainingDiverged(FmrError):
    """The loss became NaN or infinite."""


class TrainModule(nn.Module):
    """Backbone + class-centre head + distillation projection: one module for DDP.

    Distillation compares the embedding itself with the teacher's descriptor when both have the
    same size (no projection; the embedding then lives in the teacher's space), else a learned
    linear projection of it.

    forward returns (total loss, stats): stats is a float32 vector in `STAT_NAMES` order,
    detached, for logging without host syncs.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, projection: nn.Module | None,
                 distill_weight: float, margin_weight: float = 1.0):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.projection = projection
        self.distill_weight = float(distill_weight)
        self.margin_weight = float(margin_weight)
        self.__dict__["backbone_forward"] = backbone  # replaced by the compiled one, unregistered

    def forward(self, images, labels, teacher=None, has_teacher=None, with_accuracy: bool = False):
        embeddings = self.backbone_forward(images)
        with torch.autocast(device_type=images.device.type, enabled=False):
            embeddings = embeddings.float()
            margin_loss = self.head(embeddings, labels)
            distill_loss = embeddings.new_zeros(())
            if self.distill_weight > 0 and teacher is not None:
                student = embeddings if self.projection is None else self.projection(embeddings)
                cosine = (F.normalize(student, dim=1) * teacher).sum(dim=1)
                if has_teacher is None:
                    distill_loss = (1.0 - cosine).mean()
                else:
                    weight = has_teacher.float()
                    distill_loss = ((1.0 - cosine) * weight).sum() / weight.sum().clamp(min=1.0)
            loss = self.margin_weight * margin_loss + self.distill_weight * distill_loss
            with torch.no_grad():
                labelled = labels >= 0
                centres = F.normalize(self.head.weight.detach().float(), dim=1)
                unit = F.normalize(embeddings.detach(), dim=1)
                target = (unit * centres.index_select(0, labels.clamp(min=0))).sum(dim=1)
                angles = torch.rad2deg(torch.acos(target.clamp(-1.0, 1.0))) * labelled
                correct = angles.new_zeros(())
                counted = angles.new_zeros(())
                if with_accuracy:  # an extra (B x C) product: only on logging steps
                    nearest = (unit @ centres.T).argmax(dim=1)
                    correct = ((nearest == labels) & labelled).sum().float()
                    counted = labelled.sum().float()
                stats = torch.stack([
                    loss.detach(), margin_loss.detach(), distill_loss.detach(), angles.sum(),
                    labelled.sum().float(), correct, counted,
                ])
        return loss, stats


def build_module(config: TrainConfig, num_classes: int, teacher_dim: int | None,
                 policy: DevicePolicy) -> TrainModule:
    """Backbone, margin head and (with a teacher) the distillation projection, placed as
    `policy` says (channels-last backbone; on CUDA cuDNN picks the fastest convolution
    algorithms for the fixed batch shape).

    When the embedding has the teacher's size, the embedding is distilled directly and the
    scale of its last batch norm (`features`, frozen at 1 for margin losses alone) learns, so
    the embedding can take the teacher's per-dimension spread.
    """
    from fmr.losses import ArcFace, CosFace, MarginHead
    from fmr.models import create_model

    backbone = create_model(config.backbone, embedding_size=config.embedding_size,
                            dropout=config.dropout)
    margin_class = ArcFace if config.loss == "arcface" else CosFace
    margin = margin_class(s=config.scale, m=config.margin_value())
    head = MarginHead(config.embedding_size, num_classes, margin, config.sample_rate)
    projection = None
    if teacher_dim and teacher_dim != config.embedding_size:
        projection = nn.Linear(config.embedding_size, teacher_dim, bias=False)
    elif teacher_dim and hasattr(backbone, "features"):
        backbone.features.weight.requires_grad_(True)
    module = TrainModule(backbone, head, projection, config.distill_weight if teacher_dim else 0.0,
                         config.margin_weight)
    module.to(policy.device)
    policy.prepare_model(backbone)
    if policy.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return module


def compile_backbone(module: TrainModule, report=None) -> CompiledForward:
    """torch.compile the backbone's forward; parameters and state dict keys stay unchanged.

    A graph the compiler cannot handle runs eagerly instead of ending the run (eager is only
    slower, not wrong), and `report` (the run log) and stderr say so; nothing is silenced
    globally.
    """
    compiled = CompiledForward(module.backbone, report)
    module.__dict__["backbone_forward"] = compiled
    return compiled


def make_optimizer(module: nn.Module, config: TrainConfig, policy: DevicePolicy):
    """SGD with momentum and weight decay, or AdamW, on every trainable parameter (fused
    kernels where torch has them).

    Returns (optimizer, the parameter list, for gradient clipping)."""
    parameters = [p for p in module.parameters() if p.requires_grad]
    fused = policy.fused_optimizer or None
    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay,
                                      fused=fused)
    else:
        optimizer = torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay, fused=fused)
    return optimizer, parameters


def init_backbone_from(backbone: nn.Module, path: str, config: TrainConfig) -> dict:
    """Copy the weights of an exported model (`--init-from`) into `backbone`; returns its card
    as a dict. Raises FmrError when it is another architecture or embedding size."""
    from fmr.modelfile import load_model_file

    loaded = load_model_file(path)
    card = loaded.card
    if (card.architecture, card.embedding_size) != (config.backbone, config.embedding_size):
        raise FmrError(
            f"--init-from {path}: it is {card.architecture} with {card.embedding_size}-d "
            f"embeddings, but this run trains {config.backbone} with {config.embedding_size}: "
            "pass the same --backbone and --embedding-size"
        )
    with torch.no_grad():
        own = backbone.state_dict()
        for name, tensor in loaded.model.state_dict().items():
            own[name].copy_(tensor)
    return card.to_dict()


class StepBudget:
    """`--time-budget`: how many steps the schedule may have so that training, validations and
    exports end within the time given.

    `update` is called at every log line with the time those steps took (validation and
    checkpoint pauses left out); the planned length is the steps done plus those that fit in
    92% of the time left at the smoothed speed, never more than `asked`, after the time the
    last epoch end (validation, export, checkpoint) will take is set aside. Once the time is
    spent the plan is the steps done, so training stops there (a plan of "one more" would be
    renewed at every log line and run on to `asked`). The learning-rate schedule reads the plan
    at every step, so it warms up and then decays to zero exactly at the end of the budget,
    whatever the machine's speed.

    The last epoch end's time: the measured time of the latest one that validated
    (`epoch_end_took`), and before any, an estimate of `val_images` (crops the validation
    embeds, flips included) at `FORWARD_SHARE` of a training image's time each.
    """

    RESERVE = 0.08  # share of the time left kept for validations, exports, checkpoints
    # One validation forward pass costs about half a training image (forward + backward +
    # update), measured on the CPU: 2,804 crops x 2 flips took 300 s at 0.097 s per image.
    FORWARD_SHARE = 0.55

    def __init__(self, seconds: float, asked: int, started: float, batch_size: int = 1,
                 val_images: int = 0) -> None:
        self.seconds = float(seconds)
        self.asked = int(asked)
        self.started = started
        self.batch_size = int(batch_size)
        self.val_images = int(val_images)
        self.seconds_per_step: float | None = None
        self.epoch_end_seconds: float | None = None

    def epoch_end_took(self, seconds: float) -> None:
        """Record how long an epoch end with a validation took (the last one will take about as
        long)."""
        self.epoch_end_seconds = float(seconds)

    def final_seconds(self) -> float:
        """Seconds set aside for the last validation, export and checkpoint."""
        if self.epoch_end_seconds is not None:
            return self.epoch_end_seconds
        if self.seconds_per_step is None:
            return 0.0
        per_image = self.seconds_per_step / max(self.batch_size, 1)
        return self.val_images * per_image * self.FORWARD_SHARE

    def update(self, step: int, steps: int, seconds: float, now: float) -> int:
        rate = seconds / max(steps, 1)
        self.seconds_per_step = rate if self.seconds_per_step is None else (
            0.7 * self.seconds_per_step + 0.3 * rate)
        left = self.seconds - (now - self.started) - self.final_seconds()
        left = max(0.0, left) * (1 - self.RESERVE)
        return int(min(self.asked, step + left / self.seconds_per_step))


@dataclass
class Schedule:
    """The planned length of training in steps (what the learning-rate schedule decays over)."""

    total: int


@dataclass
class TrainResult:
    out: Path
    step: int
    epochs_done: int
    best: dict | None
    export: Path | None
    stopped: str  # "finished" | "stop_after_epochs" | "time_limit"


def _step_seed(seed: int, rank: int, step: int) -> int:
    # Augmentation randomness is a function of (seed, rank, step): resuming needs no RNG state.
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729) % (2**63)


def _default_out(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.backbone}-{time.strftime('%Y%m%d-%H%M%S')}"


def _device_name(policy: DevicePolicy) -> str:
    if policy.device.type == "cuda":
        return policy.cpu
    return f"CPU ({policy.cpu}, {policy.threads} threads)"


@dataclass
class RunData:
    """What a run trains and validates on, and how the teacher's targets come.

    canvases: the pack has wide canvases (the student's views are cut from them); online: an
    online teacher describes each view (`--distill-targets consistent`); use_teacher: there is
    distillation at all (online, or the pack's fixed descriptors)."""

    dataset: object  # fmr.data.sources.TrainingSet
    validation: object | None  # fmr.data.pack.ValidationSet
    canvases: bool
    online: bool
    use_teacher: bool

    def targets(self, config: TrainConfig) -> str:
        """What the student learns from, in words (for the log and the model card)."""
        margin = f"{config.loss} (weight {config.margin_weight:g})"
        if not self.use_teacher:
            return margin
        kind = ("the teacher's descriptor of the same augmented view (online)" if self.online
                else "the teacher's fixed descriptor of each photo")
        mix = f", mixup {config.mix_prob:g}" if config.mix_prob else ""
        return f"{margin} + distillation (weight {config.distill_weight:g}) to {kind}{mix}"


def open_data(config: TrainConfig, ctx: distributed.Context) -> RunData:
    """Open the training set and (rank 0) the validation pairs; check the distillation asked
    for can happen."""
    from fmr.data.sources import open_training_set, open_validation

    dataset = open_training_set(config.data)
    canvases = dataset.canvases is not None
    online = config.distill_weight > 0 and config.distill_targets == "consistent"
    if online and not canvases:
        raise FmrError(f"--distill-targets consistent needs the pack's canvases: {config.data} "
                       "has none (prepare it with `fmr prepare --canvases`)")
    use_teacher = config.distill_weight > 0 and (online or dataset.teacher is not None)
    if config.distill_weight > 0 and not use_teacher and ctx.is_main:
        print(f"train: {config.data} has no teacher descriptors (teacher.npy): training without "
              "distillation (prepare the pack with --teacher dlib to use it)", file=sys.stderr)
    validation = None
    if ctx.is_main and config.val != "none":
        validation = open_validation(config.val or dataset.path)
        if validation is None and config.val:
            raise FmrError(f"{config.val}: no validation pairs (val.rec + val_pairs.txt) there")
    return RunData(dataset, validation, canvases, online, use_teacher)


def held_out_split(data: RunData):
    """The pack's held-out split as class ids (`fmr.data.pack.HeldOutClasses`) when its
    validation photos are held-out photos of its own classes (`fmr prepare --preset original`)
    and come from the same pack; else None (no closed-set accuracy, no centres exported)."""
    from fmr.data.pack import held_out_classes

    dataset, validation = data.dataset, data.validation
    if validation is None or dataset.kind != "pack":
        return None
    if Path(validation.source).resolve() != Path(dataset.path).resolve():
        return None  # --val from elsewhere: its labels are another pack's people
    held_out = held_out_classes(dataset.meta, validation.labels)
    if held_out is not None and len(held_out.names) != dataset.num_classes:
        raise FmrError(f"{dataset.path}: meta.json names {len(held_out.names)} classes but "
                       f"train.rec has {dataset.num_classes}; run `fmr prepare` again")
    return held_out


@dataclass
class Progress:
    """What a run has done so far; saved in every training state.

    train_seconds: wall-clock seconds of training over all processes that continued this run
    (plus, with --init-from, the hours of the model it started from), for the curve of
    validation results against CPU hours."""

    step: int = 0
    best: dict | None = None
    export: Path | None = None
    train_seconds: float = 0.0


def train(config: TrainConfig) -> TrainResult:
    """Train as `config` says (see `fmr.train.config.TrainConfig`); returns where it all went.
    `config` itself is left as it was."""
    config = replace(config)
    config.validate()
    ctx = distributed.setup(config.device)
    try:
        return Training(config, ctx).fit()
    finally:
        distributed.cleanup(ctx)


class Training:
    """One training process: everything `fit` needs, set up in `__init__` (see the module
    docstring)."""

    def __init__(self, config: TrainConfig, ctx: distributed.Context) -> None:
        from fmr.train.data import make_batches
        from fmr.train.validation import Validator

        self.started = time.monotonic()
        self.config, self.ctx = config, ctx
        self.policy = choose_policy(ctx.device, config.precision,
                                    channels_last=config.channels_last, compile=config.compile,
                                    threads=config.threads)
        state = load_state(resolve_resume(config.resume, config.out)) if config.resume else None
        if not config.out:  # every rank must agree on the time-stamped name
            config.out = str(distributed.broadcast_object(ctx, _default_out(config)))
        self.out = Path(config.out)
        self.log = RunLogger(self.out, enabled=ctx.is_main)

        self.data = data = open_data(config, ctx)
        random.seed(config.seed)
        np.random.seed(config.seed % 2**32)
        torch.manual_seed(config.seed)
        self.batches = make_batches(data.dataset, config, ctx, data.use_teacher, data.canvases,
                                    data.online)
        self.steps_per_epoch = self.batches.steps_per_epoch
        self.asked_steps = config.epochs * self.steps_per_epoch

        self.teacher = None
        if data.online:
            from fmr.train.teacher import OnlineTeacher

            self.teacher = OnlineTeacher(self.policy)
        self.teacher_mean = None
        if data.use_teacher and config.distill_center:
            self.teacher_mean = self.mean_descriptor()
        teacher_dim = None
        if data.use_teacher:
            teacher_dim = (self.teacher.dimension if data.online
                           else data.dataset.teacher.shape[1])
        self.module = build_module(config, data.dataset.num_classes, teacher_dim, self.policy)
        self.optimizer, self.parameters = make_optimizer(self.module, config, self.policy)
        self.schedule = Schedule(self.asked_steps)  # --time-budget re-plans it as it goes
        self.scheduler = make_scheduler(
            self.optimizer, lambda: self.schedule.total,
            int(round(config.warmup_epochs * self.steps_per_epoch)), config.poly_power)
        self.progress = Progress()
        self.initialised_from = None
        if state is not None:
            self.restore(state)
        elif config.init_from:
            card = init_backbone_from(self.module.backbone, config.init_from, config)
            self.initialised_from = config.init_from
            if config.init_centres == "class-means" and config.margin_weight > 0:
                self.imprint_centres()
            self.progress.train_seconds = 3600 * float(
                card.get("training", {}).get("hours_total") or 0.0)

        if self.policy.compile:
            compile_backbone(self.module,
                             lambda message: self.log.event("compile_failed", message=message))
        self.model = self.module
        if ctx.distributed:
            self.model = nn.parallel.DistributedDataParallel(
                self.module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        self.validator = None
        self.held_out = None
        if data.validation is not None:
            self.held_out = held_out_split(data)
            self.validator = Validator(
                data.validation, self.policy, config.val_mask_seed, held_out=self.held_out,
                report=lambda message: (self.log.event("closed_set_skipped", message=message),
                                        print(f"train: {message}", file=sys.stderr)))
        self.augment = AugmentSettings.from_config(config)
        self.generator = torch.Generator(device=ctx.device)
        self.description = data.dataset.describe()
        self.running = torch.zeros(len(STAT_NAMES), device=ctx.device)  # since the last log
        self.epoch_sums = torch.zeros(len(STAT_NAMES), device=ctx.device)
        self.epoch_started = (time.monotonic(), self.progress.step)
        self.session_started = (time.monotonic(), self.progress.train_seconds)

    def imprint_centres(self) -> None:
        """Set the margin head's centres to the loaded backbone's class means (`imprint`)."""
        from fmr.train.imprint import class_mean_centres

        if self.ctx.is_main:
            print("train: class centres from the loaded weights' mean embedding of each class",
                  file=sys.stderr)
        centres = class_mean_centres(self.module.backbone, self.data.dataset, self.policy,
                                     self.config.workers,
                                     self.config.progress and self.ctx.is_main)
        with torch.no_grad():
            self.module.head.weight.copy_(centres.to(self.module.head.weight.device))
        self.log.event("centres_imprinted", classes=int(centres.shape[0]))

    def mean_descriptor(self) -> torch.Tensor:
        """The teacher's mean descriptor over the training images (for `--distill-center`):
        from the pack's stored descriptors, or else from the online teacher on the unaugmented
        views of up to 2,048 images."""
        dataset = self.data.dataset
        if dataset.teacher is not None:
            stored = dataset.teacher.astype(np.float32)
            stored = stored[np.isfinite(stored).all(axis=1)]
            mean = torch.from_numpy(stored.mean(axis=0))
        else:
            from fmr.train.views import CHIP_SIZE, chip_to_canvas, cut, identity_views

            rows = np.linspace(0, len(dataset) - 1, min(len(dataset), 2048)).astype(int)
            total = None
            for start in range(0, len(rows), 64):
                part = rows[start : start + 64]
                canvases = torch.from_numpy(np.stack(
                    [dataset.canvases.decode(i) for i in part])).permute(0, 3, 1, 2).float()
                views = identity_views(len(part))
                chips = torch.from_numpy(dataset.canvases.chips[part])
                described = self.teacher.describe(cut(
                    canvases.to(self.ctx.device),
                    chip_to_canvas(views, chips, WIDE_CANVAS).to(self.ctx.device),
                    CHIP_SIZE)).sum(0)
                total = described if total is None else total + described
            mean = total.cpu() / len(rows)
        return mean.to(self.ctx.device)

    # ---- resume

    def restore(self, state: dict) -> None:
        """Continue from a training state: weights, optimiser, schedule, progress, RNG."""
        config, module = self.config, self.module
        if state["num_classes"] != self.data.dataset.num_classes:
            raise FmrError(
                f"the checkpoint was trained with {state['num_classes']} classes but {config.data} "
                f"has {self.data.dataset.num_classes}: resume with the same --data"
            )
        module.backbone.load_state_dict(state["backbone"])
        module.head.load_state_dict(state["head"])
        if module.projection is not None and state.get("projection") is not None:
            module.projection.load_state_dict(state["projection"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
        # Settings given for the resumed run win over the saved optimiser's (e.g. a lower --lr).
        self.scheduler.base_lrs = [config.lr for _ in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group.update(initial_lr=config.lr, weight_decay=config.weight_decay)
            if "momentum" in group:
                group["momentum"] = config.momentum
            group["lr"] = config.lr * self.scheduler.lr_lambdas[0](step)
        self.progress = Progress(step, state.get("best"),
                                 Path(state["export"]) if state.get("export") else None,
                                 float(state.get("train_seconds", 0.0)))
        ranks = state.get("rng_per_rank") or []
        if len(ranks) == self.ctx.world_size:
            restore_rng(ranks[self.ctx.rank], self.ctx.device)

    # ---- one step

    def step(self, batch) -> torch.Tensor:
        """One optimiser step on `batch`; returns the step's stats (on the device)."""
        config, progress = self.config, self.progress
        self.generator.manual_seed(_step_seed(config.seed, self.ctx.rank, progress.step))
        labels, targets, has_targets = batch.labels, batch.teacher, batch.has_teacher
        channels_last = self.policy.channels_last
        if self.data.online:
            views = augment_with_teacher(batch.images, batch.partners, batch.chips, labels,
                                         self.augment, self.generator, self.teacher,
                                         channels_last=channels_last)
            images, labels, targets, has_targets = (views.inputs, views.labels, views.targets,
                                                    None)
        else:
            images = augment_batch(batch.images, self.augment, self.generator,
                                   channels_last=channels_last,
                                   canvas=WIDE_CANVAS if self.data.canvases else CROP_CANVAS)
        if targets is not None and self.teacher_mean is not None:
            targets = F.normalize(targets - self.teacher_mean, dim=1)
        with_accuracy = (progress.step + 1) % config.log_every == 0
        with self.policy.autocast():
            loss, stats = self.model(images, labels, targets, has_targets,
                                     with_accuracy=with_accuracy)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters, max_norm=5.0)
        self.optimizer.step()
        self.scheduler.step()
        progress.step += 1
        return stats

    def read_stats(self, sums: torch.Tensor, steps: int) -> dict:
        """Sync point: sum over ranks, check finiteness, turn into means."""
        values = distributed.all_reduce_sum(self.ctx, sums.clone()).tolist()
        stats = dict(zip(STAT_NAMES, values, strict=True))
        if not math.isfinite(stats["loss"]):
            raise TrainingDiverged(
                f"the loss became {stats['loss']} at step {self.progress.step}; stopped. The "
                f"last good checkpoint is in {self.out / 'checkpoints'} (resume with --resume "
                "after lowering --lr or checking the data)"
            )
        n = max(1, steps * self.ctx.world_size)
        return {
            "loss": stats["loss"] / n,
            "margin_loss": stats["margin_loss"] / n,
            "distill_loss": stats["distill_loss"] / n,
            "angle_deg": stats["angle_sum"] / max(stats["labelled"], 1.0),
            "train_accuracy": stats["correct"] / stats["accuracy_count"]
            if stats["accuracy_count"] else None,
        }

    def train_hours(self) -> float:
        """Hours of training so far, over every process of this run (see `Progress`)."""
        since, before = self.session_started
        return (before + time.monotonic() - since) / 3600

    # ---- the loop

    def fit(self) -> TrainResult:
        from tqdm import tqdm

        config, ctx, progress = self.config, self.ctx, self.progress
        self.announce()
        bar = tqdm(total=self.schedule.total, initial=progress.step, desc="train", unit="step",
                   file=sys.stderr, disable=not (config.progress and ctx.is_main),
                   dynamic_ncols=True)
        start_epoch = progress.step // self.steps_per_epoch
        stop_step = self.asked_steps if config.stop_after_epochs is None else min(
            self.asked_steps, (start_epoch + config.stop_after_epochs) * self.steps_per_epoch)
        budget = None
        if config.time_budget:
            budget = StepBudget(
                config.time_budget, self.asked_steps, self.started,
                batch_size=config.batch_size,  # validation runs on one process
                val_images=0 if self.validator is None else self.validator.forward_passes())
        last_log = (time.monotonic(), progress.step)
        paused = 0.0  # seconds spent validating and saving since the last log line
        windows = 0  # log lines written by this process
        time_up = False
        epochs_done = start_epoch
        self.module.train()
        while progress.step < min(stop_step, self.schedule.total) and not time_up:
            epoch = progress.step // self.steps_per_epoch
            first = progress.step - epoch * self.steps_per_epoch
            for batch in self.batches.epoch(epoch, first):
                stats = self.step(batch)
                self.running += stats
                self.epoch_sums += stats
                bar.update(1)
                if progress.step % config.log_every == 0:
                    now = time.monotonic()
                    window = max(now - last_log[0] - paused, 1e-9)
                    self.log_train(epoch, progress.step - last_log[1], window, bar)
                    if budget is not None and windows > 0:
                        # the first window holds start-up (and compilation): not a speed
                        self.replan(budget, progress.step - last_log[1], window, now, bar)
                    last_log, paused, windows = (now, progress.step), 0.0, windows + 1
                    if config.time_limit is not None:
                        over = torch.tensor(float(now - self.started > config.time_limit),
                                            device=ctx.device)
                        time_up = bool(distributed.all_reduce_sum(ctx, over).item() > 0)
                if (config.save_every and progress.step % config.save_every == 0
                        and progress.step % self.steps_per_epoch):
                    self.read_stats(self.epoch_sums, 1)  # never save after a non-finite loss
                    paused_from = time.monotonic()
                    self.save("interval")
                    paused += time.monotonic() - paused_from
                if time_up or progress.step >= min(stop_step, self.schedule.total):
                    break
            paused_from = time.monotonic()
            validated = self.end_of_epoch(epoch, bar, final=time_up or progress.step >= min(
                stop_step, self.schedule.total))
            took = time.monotonic() - paused_from
            paused += took
            if budget is not None and validated:  # the last epoch end validates too
                budget.epoch_end_took(took)
            epochs_done = epoch + 1
        bar.close()
        stopped = "finished"
        if time_up:
            stopped = "time_limit"
        elif progress.step < self.schedule.total:
            stopped = "stop_after_epochs"
        if ctx.is_main:
            self.log.event("stop", step=progress.step, reason=stopped, best=progress.best,
                           export=None if progress.export is None else str(progress.export),
                           seconds=round(time.monotonic() - self.started, 1))
            print(f"train: {stopped} at step {progress.step}; export: {progress.export}",
                  file=sys.stderr)
        self.log.close()
        return TrainResult(self.out, progress.step, epochs_done, progress.best, progress.export,
                           stopped)

    def announce(self) -> None:
        """config.json, the start event and two lines on the console (rank 0)."""
        if not self.ctx.is_main:
            return
        config, data = self.config, self.data
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(json.dumps(config.to_dict(), indent=1) + "\n")
        self.log.event("start", step=self.progress.step, config=config.to_dict(),
                       data=self.description, device=_device_name(self.policy),
                       world_size=self.ctx.world_size, policy=self.policy.describe(),
                       steps_per_epoch=self.steps_per_epoch, total_steps=self.asked_steps,
                       targets=data.targets(config), initialised_from=self.initialised_from,
                       validation=None if data.validation is None
                       else data.validation.description,
                       torch=torch.__version__)
        print(
            f"train: {config.backbone} on {len(self.batches.indices)} of "
            f"{self.description['images']} images ({self.description['classes']} identities), "
            f"{data.targets(config)}; {self.ctx.world_size} process(es), up to {config.epochs} "
            f"epochs x {self.steps_per_epoch} steps of {config.batch_size}; out: {self.out}\n"
            f"train: {self.policy.summary()}",
            file=sys.stderr,
        )

    def log_train(self, epoch: int, steps: int, seconds: float, bar) -> None:
        values = self.read_stats(self.running, steps)
        values["lr"] = self.scheduler.get_last_lr()[0]
        values["images_per_s"] = steps * self.config.batch_size * self.ctx.world_size / seconds
        self.log.event("train", step=self.progress.step, epoch=epoch + 1, **values)
        self.log.scalars(self.progress.step, "train", values)
        bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{values['lr']:.3g}", refresh=False)
        self.running.zero_()

    def replan(self, budget: StepBudget, steps: int, seconds: float, now: float, bar) -> None:
        """`--time-budget`: fit the schedule's length to the measured speed."""
        planned = distributed.broadcast_object(
            self.ctx, budget.update(self.progress.step, steps, seconds, now))
        if planned != self.schedule.total:
            self.log.event("budget", step=self.progress.step, planned_steps=planned,
                           seconds_per_step=round(budget.seconds_per_step, 4),
                           budget=self.config.time_budget, asked_steps=self.asked_steps)
            self.schedule.total = bar.total = planned

    # ---- epoch ends: validate, export, save

    def end_of_epoch(self, epoch: int, bar, final: bool) -> bool:
        """Validate (when due), export the best, log the epoch and save a training state.
        Returns whether this process validated."""
        from tqdm import tqdm

        config, ctx, progress = self.config, self.ctx, self.progress
        steps_in_epoch = progress.step - self.epoch_started[1]
        stats = self.read_stats(self.epoch_sums, max(steps_in_epoch, 1))
        seconds = time.monotonic() - self.epoch_started[0]
        row = {"epoch": epoch + 1, "step": progress.step,
               "lr": self.scheduler.get_last_lr()[0], **stats,
               "images_per_s": steps_in_epoch * config.batch_size * ctx.world_size
               / max(seconds, 1e-9), "seconds": round(seconds, 2),
               "hours": round(self.train_hours(), 4)}
        distributed.average_buffers(ctx, self.module.backbone)
        result = None
        if ctx.is_main:
            if self.validator is not None and ((epoch + 1) % config.val_every == 0 or final):
                result = self.validate(epoch, row)
            self.log.epoch_row(row)
            self.log.scalars(progress.step, "epoch",
                             {k: v for k, v in row.items() if k != "epoch"})
            if result is not None and (progress.best is None
                                       or result["score"] >= progress.best["score"]):
                progress.best = {"epoch": epoch + 1, "step": progress.step, **result}
                progress.export = self.export(progress.best, *self.validator.calibration())
            elif self.validator is None and final:  # nothing to choose on: the last model
                progress.best = {"epoch": epoch + 1, "step": progress.step, "score": None}
                progress.export = self.export(progress.best, {}, {})
            tqdm.write(_epoch_line(epoch, self.schedule.total // self.steps_per_epoch + (
                self.schedule.total % self.steps_per_epoch > 0), stats, row, result),
                file=sys.stderr)
        progress.best = distributed.broadcast_object(ctx, progress.best)
        self.epoch_sums.zero_()
        self.epoch_started = (time.monotonic(), progress.step)
        self.save("epoch")
        return result is not None

    def validate(self, epoch: int, row: dict) -> dict:
        centres = self.module.head.weight if self.held_out is not None else None
        result = self.validator.evaluate(self.module.backbone, centres=centres)
        row["val_unmasked_accuracy"] = result["unmasked"]["accuracy"]
        row["val_masked_accuracy"] = result.get("masked", {}).get("accuracy")
        row["val_unmasked_tar"] = result["unmasked"]["tar_at_far_1e-3"]
        row["val_masked_tar"] = result.get("masked", {}).get("tar_at_far_1e-3")
        row["val_score"] = result["score"]
        closed = {}
        for condition in CLOSED_SET_CONDITIONS:
            for k in ("top1", "top5"):
                value = result.get("closed_set", {}).get(condition, {}).get(k)
                if value is not None:
                    row[f"val_{k}_{condition}"] = value
                    closed[f"closed_set_{k}_{condition}"] = value
        self.log.event("val", step=self.progress.step, epoch=epoch + 1, hours=row["hours"],
                       **result)
        self.log.scalars(self.progress.step, "val", {
            "unmasked_accuracy": row["val_unmasked_accuracy"],
            "masked_accuracy": row["val_masked_accuracy"],
            "unmasked_tar_far1e-3": row["val_unmasked_tar"],
            "masked_tar_far1e-3": row["val_masked_tar"], **closed})
        return result

    def export(self, selected: dict, calibration: dict, calibration_masked: dict) -> Path:
        """Write the selected model as `<out>/best.safetensors` + `best.json` with its card and
        its calibrations (unmasked pairs; a masked probe against unmasked photos)."""
        from fmr.modelfile import ModelCard, save_model_file

        config, data = self.config, self.data
        metrics = {"validation": None if selected.get("score") is None else {
            k: v for k, v in selected.items() if k not in ("epoch", "step")}}
        metrics["selected"] = {
            "epoch": selected["epoch"], "step": selected["step"],
            "rule": "highest mean of unmasked and masked validation TAR at FAR 1e-3 "
            "(all pairs; ties: later)"
            if self.validator is not None else "last epoch (no validation pairs)",
        }
        centres = None
        if self.held_out is not None and selected.get("closed_set"):
            metrics["closed_set"] = {
                **selected["closed_set"], "epoch": selected["epoch"],
                "measured_on": f"the held-out photos of this run's pack ({self.config.data}: "
                "fmr prepare --preset original, a split per identity) against the class "
                "centres of the same model (the margin head's weights); top-1/top-5 by cosine",
            }
            centres = (self.module.head.weight, self.held_out.names)
        card = ModelCard(
            name=f"{config.backbone} {self.out.name}",
            architecture=config.backbone,
            embedding_size=config.embedding_size,
            training={
                "recipe": config.to_dict(), "data": self.description,
                "validation": None if data.validation is None else data.validation.description,
                "device": _device_name(self.policy), "world_size": self.ctx.world_size,
                "policy": self.policy.describe(), "targets": data.targets(config),
                "initialised_from": self.initialised_from,
                "torch": torch.__version__, "steps": self.progress.step,
                "steps_per_epoch": self.steps_per_epoch,
                "wall_seconds": round(time.monotonic() - self.started, 1),
                "hours_total": round(self.train_hours(), 3),
            },
            metrics=metrics,
            calibration=calibration,
            calibration_masked=calibration_masked,
            notes="Trained by fmr's train.py; selected and calibrated on the validation split "
            "of training-side identities, never on evaluation data.",
            licence=LICENCE_NOTE,
        )
        path = save_model_file(self.out / "best", self.module.backbone, card,
                               storage=config.storage, class_centres=centres)
        self.log.event("export", step=self.progress.step, path=str(path),
                       selected=metrics["selected"])
        return path

    def save(self, reason: str) -> None:
        """A resumable training state (rank 0 writes it; every rank's RNG state goes in)."""
        ctx, module, progress = self.ctx, self.module, self.progress
        states = distributed.all_gather_objects(ctx, rng_state(ctx.device))
        if ctx.is_main:
            path = save_state(self.out, progress.step, {
                "step": progress.step, "epoch": progress.step // self.steps_per_epoch,
                "config": self.config.to_dict(),
                "num_classes": self.data.dataset.num_classes,
                "backbone": module.backbone.state_dict(), "head": module.head.state_dict(),
                "projection": None if module.projection is None
                else module.projection.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng_per_rank": states, "best": progress.best,
                "export": None if progress.export is None else str(progress.export),
                "train_seconds": self.train_hours() * 3600,
            }, keep=self.config.keep_checkpoints)
            self.log.event("checkpoint", step=progress.step, path=str(path), reason=reason)
        distributed.barrier(ctx)


def _epoch_line(epoch: int, planned_epochs: int, stats: dict, row: dict,
                result: dict | None) -> str:
    line = (f"epoch {epoch + 1}/{planned_epochs}: loss {stats['loss']:.3f} "
            f"(margin {stats['margin_loss']:.3f}, distill {stats['distill_loss']:.3f}), "
            f"angle {stats['angle_deg']:.1f} deg, {row['images_per_s']:.0f} img/s")
    if result is not None:
        line += f", val TAR@FAR1e-3 unmasked {result['unmasked']['tar_at_far_1e-3']:.4f}"
        if "masked" in result:
            line += f" masked {result['masked']['tar_at_far_1e-3']:.4f}"
        line += f" (accuracy {result['unmasked']['accuracy']:.4f})"
        closed = result.get("closed_set")
        if closed:
            line += ", closed-set top-1 " + " ".join(
                f"{c} {closed[c]['top1']:.4f}" for c in CLOSED_SET_CONDITIONS if c in closed)
    return line
