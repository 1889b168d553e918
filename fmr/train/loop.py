"""The training loop behind `python train.py`: one flat function, `train(config)`.

Per step: a uint8 batch already on the device (`fmr.train.data`) -> augmentation there (masks,
flip, affine, colour; `fmr.train.augment`) -> backbone under bf16 autocast (CUDA), channels-last,
torch.compile'd -> margin loss on the class centres (fp32) + distillation loss -> SGD. Nothing
is read back to the host except every `--log-every` steps, when the running sums are logged.

After each epoch (rank 0): validation on the held-out pairs (unmasked and masked), an export of
the best model so far (`<out>/best.safetensors` + `best.json`, calibrated on the validation
pairs), and a resumable state file (`<out>/checkpoints/step-N.pt`). A non-finite loss stops
the run with a message; the last state file on disk is the last good one.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import dataclass
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
    from fmr.checkpoints import load_checkpoint

    loaded = load_checkpoint(path)
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
    92% of the time left at the smoothed speed, never more than `asked` nor fewer than one more
    than done. The learning-rate schedule reads the plan at every step, so it warms up and then
    decays to zero exactly at the end of the budget, whatever the machine's speed.
    """

    RESERVE = 0.08  # share of the time left kept for validations, exports, checkpoints

    def __init__(self, seconds: float, asked: int, started: float) -> None:
        self.seconds = float(seconds)
        self.asked = int(asked)
        self.started = started
        self.seconds_per_step: float | None = None

    def update(self, step: int, steps: int, seconds: float, now: float) -> int:
        rate = seconds / max(steps, 1)
        self.seconds_per_step = rate if self.seconds_per_step is None else (
            0.7 * self.seconds_per_step + 0.3 * rate)
        left = max(0.0, self.seconds - (now - self.started)) * (1 - self.RESERVE)
        return int(min(self.asked, max(step + 1, step + left / self.seconds_per_step)))


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


def _targets(config: TrainConfig, online: bool, use_teacher: bool) -> str:
    """What the student learns from, in words (for the log and the model card)."""
    margin = f"{config.loss} (weight {config.margin_weight:g})"
    if not use_teacher:
        return margin
    kind = ("the teacher's descriptor of the same augmented view (online)" if online
            else "the teacher's fixed descriptor of each photo")
    mix = f", mixup {config.mix_prob:g}" if config.mix_prob else ""
    return f"{margin} + distillation (weight {config.distill_weight:g}) to {kind}{mix}"


def _default_out(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.backbone}-{time.strftime('%Y%m%d-%H%M%S')}"


def _device_name(policy: DevicePolicy) -> str:
    if policy.device.type == "cuda":
        return policy.cpu
    return f"CPU ({policy.cpu}, {policy.threads} threads)"


def train(config: TrainConfig) -> TrainResult:
    """Train as `config` says (see `fmr.train.config.TrainConfig`); returns where it all went."""
    config.validate()
    ctx = distributed.setup(config.device)
    try:
        return _train(config, ctx)
    finally:
        distributed.cleanup(ctx)


def _train(config: TrainConfig, ctx: distributed.Context) -> TrainResult:
    from fmr.checkpoints import ModelCard, save_checkpoint
    from fmr.data.sources import open_training_set, open_validation
    from fmr.train.data import make_batches
    from fmr.train.validation import Validator

    started = time.monotonic()
    device = ctx.device
    cuda = device.type == "cuda"
    policy = choose_policy(device, config.precision, channels_last=config.channels_last,
                           compile=config.compile, threads=config.threads)
    state = None
    if config.resume:
        state = load_state(resolve_resume(config.resume, config.out))
    if not config.out:  # every rank must agree on the time-stamped name
        config.out = str(distributed.broadcast_object(ctx, _default_out(config)))
    out = Path(config.out)
    log = RunLogger(out, enabled=ctx.is_main)

    # ---- data
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
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    torch.manual_seed(config.seed)
    batches = make_batches(dataset, config, ctx, use_teacher, canvases, online)
    steps_per_epoch = batches.steps_per_epoch
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))

    # ---- model, loss, optimiser
    teacher = None
    if online:
        from fmr.train.teacher import OnlineTeacher

        teacher = OnlineTeacher(policy)
    teacher_dim = None
    if use_teacher:
        teacher_dim = teacher.dimension if online else dataset.teacher.shape[1]
    module = build_module(config, dataset.num_classes, teacher_dim, policy)
    backbone, head, projection = module.backbone, module.head, module.projection
    channels_last = policy.channels_last
    initialised_from = None
    if config.init_from and state is None:
        initialised_from = init_backbone_from(backbone, config.init_from, config)
    optimizer, parameters = make_optimizer(module, config, policy)
    schedule = Schedule(total_steps)  # --time-budget re-plans its length as it goes
    scheduler = make_scheduler(optimizer, lambda: schedule.total, warmup_steps,
                               config.poly_power)

    step = 0
    best: dict | None = None
    export_path: Path | None = None
    if state is not None:
        if state["num_classes"] != dataset.num_classes:
            raise FmrError(
                f"the checkpoint was trained with {state['num_classes']} classes but {config.data} "
                f"has {dataset.num_classes}: resume with the same --data"
            )
        backbone.load_state_dict(state["backbone"])
        head.load_state_dict(state["head"])
        if projection is not None and state.get("projection") is not None:
            projection.load_state_dict(state["projection"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
        # Settings given for the resumed run win over the saved optimiser's (e.g. a lower --lr).
        scheduler.base_lrs = [config.lr for _ in optimizer.param_groups]
        for group in optimizer.param_groups:
            group.update(initial_lr=config.lr, momentum=config.momentum,
                         weight_decay=config.weight_decay)
            group["lr"] = config.lr * scheduler.lr_lambdas[0](step)
        best = state.get("best")
        export_path = Path(state["export"]) if state.get("export") else None
        ranks = state.get("rng_per_rank") or []
        if len(ranks) == ctx.world_size:
            restore_rng(ranks[ctx.rank], device)

    if policy.compile:
        compile_backbone(module, lambda message: log.event("compile_failed", message=message))
    model = module
    if ctx.distributed:
        model = nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if cuda else None
        )
    validator = None
    if validation is not None:
        validator = Validator(validation, policy, config.val_mask_seed)
    augment = AugmentSettings.from_config(config)
    generator = torch.Generator(device=device)

    description = dataset.describe()
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=1) + "\n")
        log.event("start", step=step, config=config.to_dict(), data=description,
                  device=_device_name(policy), world_size=ctx.world_size,
                  policy=policy.describe(), steps_per_epoch=steps_per_epoch,
                  total_steps=total_steps, targets=_targets(config, online, use_teacher),
                  initialised_from=None if initialised_from is None else config.init_from,
                  validation=None if validation is None else validation.description,
                  torch=torch.__version__)
        print(
            f"train: {config.backbone} on {len(batches.indices)} of {description['images']} "
            f"images ({description['classes']} identities), "
            f"{_targets(config, online, use_teacher)}; {ctx.world_size} process(es), "
            f"{config.epochs} epochs x {steps_per_epoch} steps of {config.batch_size}; "
            f"out: {out}\ntrain: {policy.summary()}",
            file=sys.stderr,
        )

    from tqdm import tqdm

    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", file=sys.stderr,
               disable=not (config.progress and ctx.is_main), dynamic_ncols=True)
    autocast = policy.autocast()
    running = torch.zeros(len(STAT_NAMES), device=device)  # since the last log line
    epoch_sums = torch.zeros(len(STAT_NAMES), device=device)
    last_log = (time.monotonic(), step)
    epoch_started = (time.monotonic(), step)
    stopped = "finished"
    epochs_done = step // steps_per_epoch

    def read_stats(sums: torch.Tensor, steps: int) -> dict:
        """Sync point: sum over ranks, check finiteness, turn into means."""
        values = distributed.all_reduce_sum(ctx, sums.clone()).tolist()
        stats = dict(zip(STAT_NAMES, values, strict=True))
        if not math.isfinite(stats["loss"]):
            raise TrainingDiverged(
                f"the loss became {stats['loss']} at step {step}; stopped. The last good "
                f"checkpoint is in {out / 'checkpoints'} (resume with --resume after lowering "
                "--lr or checking the data)"
            )
        n = max(1, steps * ctx.world_size)
        return {
            "loss": stats["loss"] / n,
            "margin_loss": stats["margin_loss"] / n,
            "distill_loss": stats["distill_loss"] / n,
            "angle_deg": stats["angle_sum"] / max(stats["labelled"], 1.0),
            "train_accuracy": stats["correct"] / stats["accuracy_count"]
            if stats["accuracy_count"] else None,
        }

    def save(reason: str) -> None:
        states = distributed.all_gather_objects(ctx, rng_state(device))
        if ctx.is_main:
            path = save_state(out, step, {
                "step": step, "epoch": step // steps_per_epoch, "config": config.to_dict(),
                "num_classes": dataset.num_classes, "backbone": backbone.state_dict(),
                "head": head.state_dict(),
                "projection": None if projection is None else projection.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng_per_rank": states, "best": best,
                "export": None if export_path is None else str(export_path),
            }, keep=config.keep_checkpoints)
            log.event("checkpoint", step=step, path=str(path), reason=reason)
        distributed.barrier(ctx)

    def end_of_epoch(epoch: int, final: bool) -> None:
        nonlocal best, export_path, epoch_sums, epoch_started
        steps_in_epoch = step - epoch_started[1]
        stats = read_stats(epoch_sums, max(steps_in_epoch, 1))
        seconds = time.monotonic() - epoch_started[0]
        row = {"epoch": epoch + 1, "step": step, "lr": scheduler.get_last_lr()[0], **stats,
               "images_per_s": steps_in_epoch * config.batch_size * ctx.world_size
               / max(seconds, 1e-9), "seconds": round(seconds, 2)}
        if ctx.is_main:
            result = None
            if validator is not None and ((epoch + 1) % config.val_every == 0 or final):
                result = validator.evaluate(backbone)
                row["val_unmasked_accuracy"] = result["unmasked"]["accuracy"]
                row["val_masked_accuracy"] = result.get("masked", {}).get("accuracy")
                row["val_unmasked_tar"] = result["unmasked"]["tar_at_far_1e-3"]
                row["val_masked_tar"] = result.get("masked", {}).get("tar_at_far_1e-3")
                row["val_score"] = result["score"]
                row["hours"] = round((time.monotonic() - started) / 3600, 4)
                log.event("val", step=step, epoch=epoch + 1, **result)
                log.scalars(step, "val", {"unmasked_accuracy": row["val_unmasked_accuracy"],
                                          "masked_accuracy": row["val_masked_accuracy"],
                                          "unmasked_tar_far1e-3": row["val_unmasked_tar"],
                                          "masked_tar_far1e-3": row["val_masked_tar"]})
            log.epoch_row(row)
            log.scalars(step, "epoch", {k: v for k, v in row.items() if k != "epoch"})
            if result is not None and (best is None or result["score"] >= best["score"]):
                best = {"epoch": epoch + 1, "step": step, **result}
                export_path = export(best, validator.calibration(backbone))
            elif validator is None and final:  # nothing to choose on: export the last model
                best = {"epoch": epoch + 1, "step": step, "score": None}
                export_path = export(best, {})
            tqdm.write(
                f"epoch {epoch + 1}/{config.epochs}: loss {stats['loss']:.3f} "
                f"(margin {stats['margin_loss']:.3f}, distill {stats['distill_loss']:.3f}), "
                f"angle {stats['angle_deg']:.1f} deg, {row['images_per_s']:.0f} img/s"
                + ("" if result is None else
                   f", val TAR@FAR1e-3 unmasked {result['unmasked']['tar_at_far_1e-3']:.4f}"
                   + (f" masked {result['masked']['tar_at_far_1e-3']:.4f}"
                      if "masked" in result else "")
                   + f" (accuracy {result['unmasked']['accuracy']:.4f})"),
                file=sys.stderr,
            )
        best = distributed.broadcast_object(ctx, best)
        epoch_sums = torch.zeros_like(epoch_sums)
        epoch_started = (time.monotonic(), step)
        save("epoch")

    def export(selected: dict, calibration: dict) -> Path:
        metrics = {"validation": None if selected.get("score") is None else {
            k: v for k, v in selected.items() if k not in ("epoch", "step")}}
        metrics["selected"] = {
            "epoch": selected["epoch"], "step": selected["step"],
            "rule": "highest mean of unmasked and masked validation TAR at FAR 1e-3 "
            "(all pairs; ties: later)"
            if validator is not None else "last epoch (no validation pairs)",
        }
        card = ModelCard(
            name=f"{config.backbone} {out.name}",
            architecture=config.backbone,
            embedding_size=config.embedding_size,
            training={
                "recipe": config.to_dict(), "data": description,
                "validation": None if validation is None else validation.description,
                "device": _device_name(policy), "world_size": ctx.world_size,
                "policy": policy.describe(), "targets": _targets(config, online, use_teacher),
                "initialised_from": config.init_from if initialised_from is not None else None,
                "torch": torch.__version__, "steps": step, "steps_per_epoch": steps_per_epoch,
                "wall_seconds": round(time.monotonic() - started, 1),
            },
            metrics=metrics,
            calibration=calibration,
            notes="Trained by fmr's train.py; selected and calibrated on the validation split "
            "of training-side identities, never on evaluation data.",
            licence=LICENCE_NOTE,
        )
        path = save_checkpoint(out / "best", backbone, card, storage=config.storage)
        log.event("export", step=step, path=str(path), selected=metrics["selected"])
        return path

    # ---- the loop
    start_epoch = step // steps_per_epoch
    stop_step = total_steps if config.stop_after_epochs is None else min(
        total_steps, (start_epoch + config.stop_after_epochs) * steps_per_epoch)
    budget = StepBudget(config.time_budget, total_steps, started) if config.time_budget else None
    time_up = False
    paused = 0.0  # seconds spent validating and saving since the last log line
    windows = 0  # log lines written by this process
    module.train()
    while step < min(stop_step, schedule.total) and not time_up:
        epoch = step // steps_per_epoch
        for batch in batches.epoch(epoch, step - epoch * steps_per_epoch):
            generator.manual_seed(_step_seed(config.seed, ctx.rank, step))
            labels, targets, has_targets = batch.labels, batch.teacher, batch.has_teacher
            if online:
                views = augment_with_teacher(batch.images, batch.partners, batch.chips, labels,
                                             augment, generator, teacher,
                                             channels_last=channels_last)
                images, labels, targets, has_targets = (views.inputs, views.labels,
                                                        views.targets, None)
            else:
                images = augment_batch(batch.images, augment, generator,
                                       channels_last=channels_last,
                                       canvas=WIDE_CANVAS if canvases else CROP_CANVAS)
            log_now = (step + 1) % config.log_every == 0
            with autocast:
                loss, stats = model(images, labels, targets, has_targets, with_accuracy=log_now)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, max_norm=5.0)
            optimizer.step()
            scheduler.step()
            running += stats
            epoch_sums += stats
            step += 1
            bar.update(1)
            if log_now:
                now = time.monotonic()
                values = read_stats(running, step - last_log[1])
                values["lr"] = scheduler.get_last_lr()[0]
                window = max(now - last_log[0] - paused, 1e-9)
                values["images_per_s"] = ((step - last_log[1]) * config.batch_size
                                          * ctx.world_size / window)
                log.event("train", step=step, epoch=epoch + 1, **values)
                log.scalars(step, "train", values)
                bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{values['lr']:.3g}",
                                refresh=False)
                if budget is not None and windows > 0:
                    # the first window holds start-up (and compilation): not a speed
                    planned = distributed.broadcast_object(
                        ctx, budget.update(step, step - last_log[1], window, now))
                    if planned != schedule.total:
                        log.event("budget", step=step, planned_steps=planned,
                                  seconds_per_step=round(budget.seconds_per_step, 4),
                                  budget=config.time_budget, asked_steps=total_steps)
                        schedule.total = bar.total = planned
                running.zero_()
                last_log = (now, step)
                paused = 0.0
                windows += 1
                if config.time_limit is not None:
                    over = torch.tensor(float(now - started > config.time_limit), device=device)
                    time_up = bool(distributed.all_reduce_sum(ctx, over).item() > 0)
            if config.save_every and step % config.save_every == 0 and step % steps_per_epoch:
                read_stats(epoch_sums, 1)  # never write a checkpoint after a non-finite loss
                paused_from = time.monotonic()
                save("interval")
                paused += time.monotonic() - paused_from
            if time_up or step >= min(stop_step, schedule.total):
                break
        paused_from = time.monotonic()
        end_of_epoch(epoch, final=time_up or step >= min(stop_step, schedule.total))
        paused += time.monotonic() - paused_from
        epochs_done = epoch + 1
    bar.close()
    if time_up:
        stopped = "time_limit"
    elif step < schedule.total:
        stopped = "stop_after_epochs"
    if ctx.is_main:
        log.event("stop", step=step, reason=stopped, best=best,
                  export=None if export_path is None else str(export_path),
                  seconds=round(time.monotonic() - started, 1))
        print(f"train: {stopped} at step {step}; export: {export_path}", file=sys.stderr)
    log.close()
    return TrainResult(out, step, epochs_done, best, export_path, stopped)
