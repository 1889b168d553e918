"""Fine-tuning dlib's network for masks against its frozen self: `python train.py mask-finetune`.

Template-level knowledge distillation (Huber et al., "Mask-invariant face recognition through
template-level knowledge distillation", FG 2021): the student starts as dlib's face-recognition
ResNet (`fmr.models.dlib_resnet`), the teacher is the same network frozen. Every step:

1. a batch of training faces on their wide canvases (`fmr prepare --canvases`: 240x240 around
   the ArcFace alignment, with dlib's own chip geometry per photo) gets random views
   (`fmr.train.views`: rotation, zoom, shift, flip, colour), and dlib's 150x150 chip of each
   view is cut from the rendered canvas;
2. the teacher describes each chip as it is (unmasked): the target;
3. the student sees the same chip, with a synthetic mask drawn on it with probability
   `--mask-prob` (training styles and the fmr renderer only: KN95 and the warp renderer stay
   held out for evaluation), and is pulled towards the target by cosine distance. Masked views
   teach it to describe a masked face where the face lands unmasked; unmasked views (weighted
   by `--unmasked-weight`) keep plain faces where the teacher puts them;
4. optionally ArcFace on the labelled people (`--arcface-weight`) as a small extra term.

How the result is used (`fmr.verify.embedder.DlibMaskEmbedder`): a face the mask detector finds
masked is described by the fine-tuned network, any other by dlib's own (the teacher), so plain
faces are described exactly as dlib describes them and a masked one lands where that face lands
unmasked. The ablation (docs/model_card.md) chose this over one network for every face.

Validation: the pack's validation faces (40 CelebA people kept out of training), dlib chips cut
from their canvases; TAR at FAR 1e-3 over all pairs of a masked probe (the student) against the
unmasked faces (the teacher), which picks the best step, and beside it the student on unmasked
pairs (`fmr.train.validation.Validator`). The best step is exported as `best.safetensors` with
both calibrations (unmasked: the teacher's; masked: the student's probe against the teacher's
gallery). Nothing here imports dlib: the weights come from face_recognition_models' `.dat` file
through the PyTorch port.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fmr.errors import DataError, FmrError
from fmr.models.dlib_resnet import ARCHITECTURE as DLIB_ARCHITECTURE

LAYER_CHOICES = ("all", "last")
# "last": the two 256-wide stages (the last four residual blocks) and the embedding layer.
LAST_BLOCKS = 4
ARCHITECTURE = DLIB_ARCHITECTURE
FAMILY_NAME = "dlib-mask"


@dataclass
class FinetuneConfig:
    """Settings of `train.py mask-finetune` (flags of the same names; see `--help`)."""

    data: str = ""
    out: str = ""
    val: str = ""
    init_from: str = "dlib"
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    mask_prob: float = 0.5
    unmasked_weight: float = 1.0
    arcface_weight: float = 0.0
    layers: str = "all"
    time_budget: float = 0.0
    steps: int = 0
    val_every: int = 400
    val_mask_seed: int = 1234
    val_at_start: bool = True
    threads: int = 0
    precision: str = "auto"
    seed: int = 0
    resume: bool = False
    progress: bool = True


HELP = {
    "data": "pack with canvases (`fmr prepare --preset shared --canvases`)",
    "out": "run folder: best.safetensors (+ .json), state.pt, log.jsonl",
    "val": "pack whose validation canvases to score (default: --data)",
    "init_from": "'dlib' (face_recognition_models' network) or a dlib-mask .safetensors",
    "batch_size": "faces per step (default {default})",
    "lr": "AdamW learning rate after warm-up, cosine to 0 (default {default})",
    "weight_decay": "AdamW weight decay (default {default})",
    "warmup_steps": "linear warm-up steps (default {default})",
    "mask_prob": "share of views the student sees masked (default {default})",
    "unmasked_weight": "weight of the unmasked views' term; 0: masked views only (default "
                       "{default})",
    "arcface_weight": "weight of ArcFace on the labelled people; 0: off (default {default})",
    "layers": "which layers learn: all, or the last (the 256-wide stages and the embedding "
              "layer) (default {default})",
    "time_budget": "seconds of training; the schedule ends then (default: use --steps)",
    "steps": "steps of training when no --time-budget (default {default})",
    "val_every": "validate (and keep the best) every N steps (default {default})",
    "val_mask_seed": "seed of the validation masks (default {default})",
    "val_at_start": "score the starting network first (the baseline the run must beat)",
    "threads": "CPU threads (default: the usable cores)",
    "precision": "auto (bf16 where the CPU has it), bf16 or fp32 (default {default})",
    "seed": "seed of the views, masks and order (default {default})",
    "resume": "continue the run in --out from its state.pt",
    "progress": "print progress lines",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py mask-finetune",
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  fmr prepare --preset shared --canvases --max-mib 300 --workers 2 "
               "--out data/canvas-pack\n  python train.py mask-finetune --data data/canvas-pack "
               "--out runs/dlib-mask --time-budget 7200",
    )
    for field in dataclasses.fields(FinetuneConfig):
        flag = "--" + field.name.replace("_", "-")
        text = HELP[field.name].replace("{default}", str(field.default))
        if field.type == "bool":
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                                default=field.default, help=text)
        else:
            kind = {"int": int, "float": float, "str": str}[field.type]
            extra = {"choices": LAYER_CHOICES} if field.name == "layers" else {}
            parser.add_argument(flag, dest=field.name, type=kind, default=field.default,
                                required=field.name in ("data", "out"), help=text, **extra)
    return parser


def main(argv: list[str]) -> int:
    config = FinetuneConfig(**vars(build_parser().parse_args(argv)))
    try:
        finetune(config)
    except FmrError as exc:
        print(f"train.py mask-finetune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("train.py mask-finetune: interrupted (continue with --resume)", file=sys.stderr)
        return 130
    return 0


# ---------------------------------------------------------------------------------------------
# data


def _decode_canvases(canvases, progress: bool, label: str) -> torch.Tensor:
    """All canvases of a pack as one uint8 (N, 3, S, S) tensor (decoded once: ~4 GB for 23k)."""
    n, size = len(canvases.chips), canvases.size
    out = torch.empty((n, 3, size, size), dtype=torch.uint8)
    started = time.perf_counter()
    for i in range(n):
        out[i] = torch.from_numpy(canvases.decode(i)).permute(2, 0, 1)
        if progress and (i + 1) % 5000 == 0:
            print(f"mask-finetune: decoded {i + 1:,}/{n:,} {label} canvases "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    return out


def chip_views(canvases: torch.Tensor, chips: torch.Tensor, views: torch.Tensor):
    """(chips (N, 3, 150, 150) float in [0, 255], mask geometry (N, 2, 3)) of `views` of uint8
    canvases (N, 3, S, S) whose dlib chip maps are `chips` (N, 2, 3)."""
    from fmr.train.views import (
        CHIP_SIZE,
        WIDE_CANVAS,
        chip_geometry_theta,
        chip_to_canvas,
        cut,
        render_canvases,
    )

    rendered = render_canvases(canvases, None, views, WIDE_CANVAS)
    cut_chips = cut(rendered, chip_to_canvas(views, chips, WIDE_CANVAS), CHIP_SIZE)
    return cut_chips, chip_geometry_theta(views, chips)


def validation_chips(pack: Path, seed: int, progress: bool):
    """(labels, pairs, same, plain chips, masked chips) of a pack's validation faces: dlib chips
    of their canvases, unaugmented; the masked copies carry one training-style mask each, drawn
    with `seed`."""
    from fmr.data import pack as packs
    from fmr.masks.tensor import mask_batch
    from fmr.train.views import identity_views

    validation = packs.read_validation(pack)
    size = (packs.read_meta(pack).get("canvases") or {}).get("size", 240)
    canvases = None if validation is None else packs.read_canvases(
        pack, len(validation.labels), size, validation=True)
    if canvases is None:
        raise DataError(f"{pack}: no validation canvases (val_canvas.rec); prepare it with "
                        "`fmr prepare --preset shared --canvases`")
    images = _decode_canvases(canvases, progress, "validation")
    chips = torch.from_numpy(canvases.chips)
    plain, geometry = chip_views(images, chips, identity_views(len(images)))
    generator = torch.Generator().manual_seed(seed)
    masked = mask_batch(plain, 1.0, generator=generator, geometry=geometry)
    return validation, plain.round().to(torch.uint8), masked.round().to(torch.uint8)


# ---------------------------------------------------------------------------------------------
# the networks


def load_student(init_from: str) -> torch.nn.Module:
    """dlib's network with the weights `init_from` names ('dlib' or a checkpoint file)."""
    from fmr.models.dlib_resnet import DlibFormatError, load_dlib_resnet
    from fmr.train.teacher import dlib_weights_path

    if init_from == "dlib":
        try:
            return load_dlib_resnet(dlib_weights_path())
        except (OSError, DlibFormatError) as exc:
            raise FmrError(f"dlib's network cannot be loaded ({exc}); it comes with the "
                           "face_recognition_models package (scripts/setup.sh)") from exc
    from fmr.modelfile import load_model_file

    loaded = load_model_file(init_from)
    if loaded.card.architecture != ARCHITECTURE:
        raise FmrError(f"{init_from}: a {loaded.card.architecture} checkpoint; --init-from "
                       f"takes 'dlib' or a {FAMILY_NAME} checkpoint ({ARCHITECTURE})")
    return loaded.model


def hours_before(init_from: str) -> float:
    """CPU hours already in the weights `init_from` names: 0 for dlib's own, else the
    checkpoint card's `hours_total` (a run continued from a shipped fine-tune counts both)."""
    if init_from == "dlib":
        return 0.0
    from fmr.modelfile import card_of

    hours = card_of(init_from).training.get("hours_total")
    return float(hours) if isinstance(hours, int | float) else 0.0


def trainable_parameters(model: torch.nn.Module, layers: str) -> list[torch.nn.Parameter]:
    """Freeze what `layers` keeps fixed; return the parameters that learn."""
    if layers not in LAYER_CHOICES:
        raise FmrError(f"--layers {layers!r}: choose one of {', '.join(LAYER_CHOICES)}")
    model.requires_grad_(layers == "all")
    if layers == "last":
        for module in (*model.blocks[-LAST_BLOCKS:], model.fc):
            module.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def describe(model: torch.nn.Module, chips: torch.Tensor, policy, batch: int = 128):
    """Unit-norm (N, 128) float32 descriptors of uint8 or float chips (N, 3, 150, 150)."""
    out = []
    with torch.no_grad(), policy.autocast():
        for start in range(0, len(chips), batch):
            x = policy.prepare_input(chips[start : start + batch].float())
            out.append(F.normalize(model(x).float(), dim=1))
    return torch.cat(out)


def cosine_schedule(step: int, total: int, warmup: int) -> float:
    """The learning-rate factor at `step`: linear warm-up, then a cosine to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------
# the loop


def distillation_losses(student_out: torch.Tensor, target: torch.Tensor, masked: torch.Tensor):
    """(masked-view term, unmasked-view term): mean cosine distance (1 - cos) of the student's
    descriptors (N, 128) to the teacher's unmasked `target` (N, 128), over the masked views and
    the others (`masked`: (N,) bool). An empty group gives 0."""
    distance = 1 - (F.normalize(student_out.float(), dim=1) * target).sum(1)
    zero = distance.new_zeros(())
    return (distance[masked].mean() if masked.any() else zero,
            distance[~masked].mean() if (~masked).any() else zero)


def finetune(config: FinetuneConfig) -> Path:
    from fmr.data.sources import open_training_set
    from fmr.masks.tensor import TRAIN_STYLES, mask_batch
    from fmr.train.device import choose_policy
    from fmr.train.validation import Validator
    from fmr.train.views import ViewSettings, sample_views

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    log_file = open(out / "log.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (closed below)

    def report(kind: str, **values) -> None:
        log_file.write(json.dumps({"event": kind, "time": time.time(), **values}) + "\n")
        log_file.flush()

    policy = choose_policy(torch.device("cpu") if not torch.cuda.is_available()
                           else torch.device("cuda"), config.precision,
                           threads=config.threads or None)
    print(f"mask-finetune: {policy.summary()}", flush=True)
    dataset = open_training_set(config.data)
    if dataset.canvases is None:
        raise DataError(f"{config.data}: the pack has no canvases; prepare it with "
                        "`fmr prepare --preset shared --canvases`")
    canvases = _decode_canvases(dataset.canvases, config.progress, "training")
    chip_maps = torch.from_numpy(dataset.canvases.chips)
    labels = torch.from_numpy(dataset.labels.astype(np.int64))
    validation, val_plain, val_masked = validation_chips(Path(config.val or config.data),
                                                         config.val_mask_seed, config.progress)

    teacher = policy.prepare_model(load_student("dlib")).eval().requires_grad_(False)
    student = policy.prepare_model(load_student(config.init_from))
    params = trainable_parameters(student, config.layers)
    head = None
    if config.arcface_weight > 0:
        from fmr.losses import ArcFace, MarginHead

        head = MarginHead(128, dataset.num_classes, ArcFace()).to(policy.device)
        params = params + list(head.parameters())
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    # The fine-tuned network describes masked faces, dlib's own the others (`DlibMaskEmbedder`):
    # validation compares the student's masked probes with the teacher's unmasked gallery.
    validator = Validator(validation, policy, config.val_mask_seed, images=val_plain,
                          masked=val_masked, embed=lambda model, x: describe(model, x, policy),
                          gallery_model=teacher)

    if not config.steps and not config.time_budget:
        raise FmrError("say how long to train: --steps N or --time-budget SECONDS")
    step, best, spent, planned = 0, None, 0.0, None
    state_file = out / "state.pt"
    if config.resume:
        if not state_file.is_file():
            raise FmrError(f"{state_file}: nothing to resume")
        state = torch.load(state_file, map_location="cpu", weights_only=False)
        student.load_state_dict(state["student"])
        optimiser.load_state_dict(state["optimiser"])
        if head is not None and state.get("head"):
            head.load_state_dict(state["head"])
        step, best, spent = state["step"], state["best"], state["seconds"]
        planned = state.get("total")
    generator = torch.Generator().manual_seed(config.seed * 1000 + step)
    settings = ViewSettings(blur_prob=0.1)
    order = torch.randperm(len(canvases), generator=generator)
    position = 0
    # The schedule's length in steps: --steps, else measured against --time-budget once (at the
    # 20th step of the first process) and kept by --resume.
    total = config.steps or planned
    first_step = step
    started = time.perf_counter() - spent
    report("start", config=dataclasses.asdict(config), policy=policy.describe(),
           data=dataset.describe(), validation_images=len(val_plain))

    validated = -1

    def validate() -> None:
        nonlocal best, validated
        validated = step
        student.eval()
        result = validator.evaluate(student)
        # Also the student on unmasked faces: what a face wrongly found masked gets.
        own = describe(student, val_plain, policy)
        result["student_unmasked"] = validator.pair_metrics(own, own, masked=False)
        result["score"] = result["masked"]["tar_at_far_1e-3"]  # the gallery side is fixed
        student.train()
        line = (f"mask-finetune: step {step}: validation TAR@FAR1e-3 masked probe (student) "
                f"against unmasked (dlib) {result['masked']['tar_at_far_1e-3']:.2%}, accuracy "
                f"{result['masked']['accuracy']:.2%}; the student on unmasked pairs "
                f"{result['student_unmasked']['tar_at_far_1e-3']:.2%} / "
                f"{result['student_unmasked']['accuracy']:.2%} (dlib "
                f"{result['unmasked']['tar_at_far_1e-3']:.2%} / "
                f"{result['unmasked']['accuracy']:.2%})")
        report("validation", step=step, **result)
        if best is None or result["score"] > best["score"]:
            best = {"score": result["score"], "step": step, "result": result}
            export(out / "best.safetensors", student, validator, config, dataset, step,
                   time.perf_counter() - started, result)
            line += " best so far: exported"
        print(line, flush=True)

    if step == 0 and config.val_at_start:
        validate()  # the starting point: dlib itself (or the checkpoint resumed from)
    student.train()
    window = []
    last_print = loop_started = time.perf_counter()
    while total is None or step < total:
        elapsed = time.perf_counter() - started
        if config.time_budget and elapsed >= config.time_budget:
            break
        if position + config.batch_size > len(order):
            order, position = torch.randperm(len(canvases), generator=generator), 0
        index = order[position : position + config.batch_size]
        position += config.batch_size
        views = sample_views(len(index), settings, generator)
        plain, geometry = chip_views(canvases[index], chip_maps[index], views)
        target = describe(teacher, plain, policy)
        shown = mask_batch(plain, config.mask_prob, TRAIN_STYLES, generator, geometry)
        masked = (shown != plain).flatten(1).any(1)
        for group in optimiser.param_groups:
            group["lr"] = config.lr * cosine_schedule(step, total or 10**9,
                                                      config.warmup_steps)
        with policy.autocast():
            output = student(policy.prepare_input(shown))
        masked_term, plain_term = distillation_losses(output, target, masked)
        loss = masked_term + config.unmasked_weight * plain_term
        if head is not None:
            known = labels[index] >= 0
            if known.any():
                arc = head(F.normalize(output.float()[known], dim=1), labels[index][known])
                loss = loss + config.arcface_weight * arc
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        step += 1
        window.append((float(masked_term.detach()), float(plain_term.detach())))
        if total is None and step == first_step + 20:
            # From the time per step so far, with a margin for the validations to come.
            seconds_per_step = (time.perf_counter() - loop_started) / 20
            total = step + int((config.time_budget - (time.perf_counter() - started))
                               / (seconds_per_step * (1 + 0.08)))
            print(f"mask-finetune: {seconds_per_step:.2f} s a step: {total:,} steps in the "
                  f"budget", flush=True)
        if step % 50 == 0 and config.progress:
            m, p = np.mean(window, axis=0)
            window.clear()
            now = time.perf_counter()
            print(f"mask-finetune: step {step:,}/{total or 0:,}: masked term {m:.4f}, "
                  f"unmasked term {p:.4f}, lr {optimiser.param_groups[0]['lr']:.2e}, "
                  f"{(now - last_print) / 50:.2f} s a step, {(now - started) / 60:.1f} min",
                  flush=True)
            last_print = now
            report("train", step=step, masked_term=float(m), unmasked_term=float(p))
        if step % config.val_every == 0 or step == total:
            validate()
            torch.save({"student": student.state_dict(), "optimiser": optimiser.state_dict(),
                        "head": head.state_dict() if head is not None else None, "step": step,
                        "best": best, "seconds": time.perf_counter() - started,
                        "total": total}, state_file)
    if validated != step:
        validate()
    report("end", step=step, best=best)
    log_file.close()
    print(f"mask-finetune: done: {step:,} steps, {(time.perf_counter() - started) / 3600:.2f} h; "
          f"best at step {best['step']}: {out / 'best.safetensors'}", flush=True)
    return out / "best.safetensors"


def export(path: Path, student, validator, config: FinetuneConfig, dataset, step: int,
           seconds: float, result: dict) -> None:
    """The student as a checkpoint with its card: both calibrations from the validator."""
    from fmr.cards import ModelCard
    from fmr.modelfile import save_model_file

    plain, masked = validator.calibration()
    model = copy.deepcopy(student).float().eval()
    card = ModelCard(
        name=FAMILY_NAME,
        architecture=ARCHITECTURE,
        embedding_size=128,
        input_size=150,
        input_normalisation="dlib: 5-point shapes, get_face_chip(size=150, padding=0.25)",
        training={
            "recipe": "mask-finetune: dlib's network against its frozen self (masked view -> "
                      "the teacher's descriptor of the same view unmasked)",
            "config": dataclasses.asdict(config),
            "data": dataset.describe(),
            "step": step,
            # this run's hours plus those of the weights it started from
            "hours_total": round(hours_before(config.init_from) + seconds / 3600, 3),
            "hours_this_run": round(seconds / 3600, 3),
            "validation": result,
        },
        calibration=plain,
        calibration_masked=masked,
        notes="dlib's face-recognition ResNet fine-tuned so that a masked face lands where the "
              "same face lands unmasked. Trained on research data sets (LFW outside pair folds "
              "6-10, CelebA): for research and demonstration.",
        licence="weights derived from dlib's public-domain model; training data for research "
                "use only",
    )
    save_model_file(path, model, card, storage="fp16")
