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
from fmr.train import distributed
from fmr.train.augment import AugmentSettings, augment_batch
from fmr.train.config import TrainConfig
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

    forward returns (total loss, stats): stats is a float32 vector in `STAT_NAMES` order,
    detached, for logging without host syncs.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, projection: nn.Module | None,
                 distill_weight: float):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.projection = projection
        self.distill_weight = float(distill_weight)
        self.__dict__["backbone_forward"] = backbone  # replaced by the compiled one, unregistered

    def forward(self, images, labels, teacher=None, has_teacher=None, with_accuracy: bool = False):
        embeddings = self.backbone_forward(images)
        with torch.autocast(device_type=images.device.type, enabled=False):
            embeddings = embeddings.float()
            margin_loss = self.head(embeddings, labels)
            distill_loss = embeddings.new_zeros(())
            if self.projection is not None and teacher is not None:
                projected = F.normalize(self.projection(embeddings), dim=1)
                weight = has_teacher.float()
                cosine = (projected * teacher).sum(dim=1)
                distill_loss = ((1.0 - cosine) * weight).sum() / weight.sum().clamp(min=1.0)
            loss = margin_loss + self.distill_weight * distill_loss
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
                 device: torch.device) -> TrainModule:
    """Backbone, margin head and (with a teacher) the distillation projection, on `device`.

    On CUDA the backbone is channels-last (with `config.channels_last`) and cuDNN picks the
    fastest convolution algorithms for the fixed batch shape.
    """
    from fmr.losses import ArcFace, CosFace, MarginHead
    from fmr.models import create_model

    backbone = create_model(config.backbone, embedding_size=config.embedding_size,
                            dropout=config.dropout)
    margin_class = ArcFace if config.loss == "arcface" else CosFace
    margin = margin_class(s=config.scale, m=config.margin_value())
    head = MarginHead(config.embedding_size, num_classes, margin, config.sample_rate)
    projection = None
    if teacher_dim:
        projection = nn.Linear(config.embedding_size, teacher_dim, bias=False)
    module = TrainModule(backbone, head, projection, config.distill_weight).to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if config.channels_last:
            backbone.to(memory_format=torch.channels_last)
    return module


def compile_backbone(module: TrainModule) -> None:
    """torch.compile the backbone's forward; parameters and state dict keys stay unchanged.

    A graph the compiler cannot handle runs eagerly instead of ending the run: GPU time is
    scarce, and eager bf16 is only slower, not wrong.
    """
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True
    module.__dict__["backbone_forward"] = torch.compile(module.backbone)


def make_optimizer(module: nn.Module, config: TrainConfig, device: torch.device):
    """SGD with momentum and weight decay on every trainable parameter (fused kernels on CUDA).

    Returns (optimizer, the parameter list, for gradient clipping)."""
    parameters = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay,
                                fused=device.type == "cuda" or None)
    return optimizer, parameters


def fit_epochs(config: TrainConfig, step: int, steps_per_epoch: int, seconds_per_step: float,
               elapsed: float) -> dict:
    """How many epochs fit in `config.time_budget` at the measured speed (at most --epochs).

    Keeps 8% of the remaining time for validation, exports and checkpoints at epoch ends.
    """
    remaining = max(0.0, config.time_budget - elapsed) * 0.92
    total = step + remaining / max(seconds_per_step, 1e-9)
    epochs = int(min(config.epochs, max(step // steps_per_epoch + 1, total // steps_per_epoch)))
    return {"epochs": epochs, "seconds_per_step": seconds_per_step, "elapsed": elapsed,
            "budget": config.time_budget, "asked_epochs": config.epochs}


def shrink_epochs(epochs: int, done: int, seconds_per_epoch: float, seconds_left: float) -> int:
    """The epochs to plan for when `done` are over and each takes `seconds_per_epoch`
    (validation and checkpoints included): `epochs`, or fewer if they would not fit in
    `seconds_left` (never fewer than `done`)."""
    fit = done + int(max(0.0, seconds_left) * 0.95 // max(seconds_per_epoch, 1e-9))
    return max(done, min(epochs, fit))


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


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


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
    state = None
    if config.resume:
        state = load_state(resolve_resume(config.resume, config.out))
    if not config.out:  # every rank must agree on the time-stamped name
        config.out = str(distributed.broadcast_object(ctx, _default_out(config)))
    out = Path(config.out)
    log = RunLogger(out, enabled=ctx.is_main)

    # ---- data
    dataset = open_training_set(config.data)
    use_teacher = config.distill_weight > 0 and dataset.teacher is not None
    if config.distill_weight > 0 and dataset.teacher is None and ctx.is_main:
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
    batches = make_batches(dataset, config, ctx, use_teacher)
    steps_per_epoch = batches.steps_per_epoch
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))

    # ---- model, loss, optimiser
    teacher_dim = dataset.teacher.shape[1] if use_teacher else None
    module = build_module(config, dataset.num_classes, teacher_dim, device)
    backbone, head, projection = module.backbone, module.head, module.projection
    channels_last = config.channels_last and cuda
    optimizer, parameters = make_optimizer(module, config, device)
    schedule = {"total": total_steps}  # --time-budget may shorten it after a few steps
    scheduler = make_scheduler(optimizer, lambda: schedule["total"], warmup_steps,
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

    if cuda if config.compile is None else config.compile:
        compile_backbone(module)
    model = module
    if ctx.distributed:
        model = nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if cuda else None
        )
    validator = None
    if validation is not None:
        validator = Validator(validation, device, config.val_mask_seed, channels_last)
    augment = AugmentSettings.from_config(config)
    generator = torch.Generator(device=device)

    description = dataset.describe()
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=1) + "\n")
        log.event("start", step=step, config=config.to_dict(), data=description,
                  device=_device_name(device), world_size=ctx.world_size,
                  steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                  validation=None if validation is None else validation.description,
                  torch=torch.__version__)
        print(
            f"train: {config.backbone} on {description['images']} images of "
            f"{description['classes']} identities ({_device_name(device)}, "
            f"{ctx.world_size} process(es)), {config.epochs} epochs x {steps_per_epoch} steps "
            f"of {config.batch_size}; out: {out}",
            file=sys.stderr,
        )

    from tqdm import tqdm

    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", file=sys.stderr,
               disable=not (config.progress and ctx.is_main), dynamic_ncols=True)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda)
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
                row["val_score"] = result["score"]
                log.event("val", step=step, epoch=epoch + 1, **result)
                log.scalars(step, "val", {"unmasked_accuracy": row["val_unmasked_accuracy"],
                                          "masked_accuracy": row["val_masked_accuracy"]})
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
                   f", val unmasked {result['unmasked']['accuracy']:.4f}"
                   + (f" masked {result['masked']['accuracy']:.4f}" if "masked" in result else "")),
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
            "rule": "highest mean of unmasked and masked validation accuracy (ties: later)"
            if validator is not None else "last epoch (no validation pairs)",
        }
        card = ModelCard(
            name=f"{config.backbone} {out.name}",
            architecture=config.backbone,
            embedding_size=config.embedding_size,
            training={
                "recipe": config.to_dict(), "data": description,
                "validation": None if validation is None else validation.description,
                "device": _device_name(device), "world_size": ctx.world_size,
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
    last_epoch = config.epochs if config.stop_after_epochs is None else min(
        config.epochs, start_epoch + config.stop_after_epochs)
    time_up = False
    # --time-budget: time steps [probe[0], probe[1]) (after compilation), then fit the epochs.
    probe = (step + 10, step + 30) if config.time_budget else None
    probe_started = 0.0
    previous_epoch_end = None  # the first epoch's time includes start-up and compilation
    module.train()
    epoch = start_epoch
    while epoch < last_epoch:  # --time-budget may lower last_epoch during the first epoch
        for batch in batches.epoch(epoch, step - epoch * steps_per_epoch):
            generator.manual_seed(_step_seed(config.seed, ctx.rank, step))
            images = augment_batch(batch.images, augment, generator, channels_last=channels_last)
            log_now = (step + 1) % config.log_every == 0
            with autocast:
                loss, stats = model(images, batch.labels, batch.teacher, batch.has_teacher,
                                    with_accuracy=log_now)
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
                values["images_per_s"] = ((step - last_log[1]) * config.batch_size
                                          * ctx.world_size / max(now - last_log[0], 1e-9))
                log.event("train", step=step, epoch=epoch + 1, **values)
                log.scalars(step, "train", values)
                bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{values['lr']:.3g}",
                                refresh=False)
                running.zero_()
                last_log = (now, step)
                if config.time_limit is not None:
                    over = torch.tensor(float(now - started > config.time_limit), device=device)
                    time_up = bool(distributed.all_reduce_sum(ctx, over).item() > 0)
            if probe and step == probe[0]:
                if cuda:
                    torch.cuda.synchronize(device)
                probe_started = time.monotonic()
            if probe and step == probe[1]:
                if cuda:
                    torch.cuda.synchronize(device)
                fitted = fit_epochs(config, step, steps_per_epoch,
                                    (time.monotonic() - probe_started) / (probe[1] - probe[0]),
                                    time.monotonic() - started)
                fitted = distributed.broadcast_object(ctx, fitted)
                log.event("budget", step=step, **fitted)
                config.epochs = fitted["epochs"]
                schedule["total"] = total_steps = config.epochs * steps_per_epoch
                last_epoch = min(last_epoch, config.epochs)
                bar.total = total_steps
                probe = None
            if config.save_every and step % config.save_every == 0 and step % steps_per_epoch:
                read_stats(epoch_sums, 1)  # never write a checkpoint after a non-finite loss
                save("interval")
            if time_up:
                break
        if config.time_budget and probe is None and previous_epoch_end is not None:
            # Behind the budget (validation, a busier GPU)? End earlier rather than be cut off.
            now = time.monotonic()
            left = shrink_epochs(config.epochs, epoch + 1, now - previous_epoch_end,
                                 config.time_budget - (now - started))
            left = distributed.broadcast_object(ctx, left)
            if left < config.epochs:
                log.event("budget", step=step, epochs=left, asked_epochs=config.epochs,
                          reason="behind the time budget")
                config.epochs = left
                schedule["total"] = total_steps = config.epochs * steps_per_epoch
                last_epoch = min(last_epoch, config.epochs)
                bar.total = total_steps
        end_of_epoch(epoch, final=time_up or epoch + 1 >= last_epoch)
        previous_epoch_end = time.monotonic()
        epochs_done = epoch + 1
        epoch += 1
        if time_up:
            break
    bar.close()
    if time_up:
        stopped = "time_limit"
    elif epochs_done < config.epochs:
        stopped = "stop_after_epochs"
    if ctx.is_main:
        log.event("stop", step=step, reason=stopped, best=best,
                  export=None if export_path is None else str(export_path),
                  seconds=round(time.monotonic() - started, 1))
        print(f"train: {stopped} at step {step}; export: {export_path}", file=sys.stderr)
    log.close()
    return TrainResult(out, step, epochs_done, best, export_path, stopped)
