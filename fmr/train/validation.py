"""Validation during training: verification accuracy on held-out identities, unmasked and masked.

The validation crops go to the device once. Their masked copies are drawn once too, with a
fixed seed (`--val-mask-seed`) and the training mask styles, so every epoch is scored on the
same masks and epochs compare. Pairs are scored twice: both photos unmasked, and the second
photo masked (the first stays unmasked, like a masked probe against an enrolment photo).
Accuracy is the LFW protocol's 10-fold accuracy (`fmr.metrics.kfold_accuracy`), with folds
interleaved over the pair list so each fold mixes same and different pairs. Beside it, the true
accept rate at a false accept rate of 1e-3 over all pairs of the validation images (every
same-identity pair genuine, every cross-identity pair impostor; `VAL_FAR`), which keeps
separating models after accuracy on the listed pairs saturates. The mean of the unmasked and
masked TAR is the score that picks the best epoch.

The best export gets two calibrations (`fmr.metrics.calibration.calibrate`) over all pairs of the
validation images, every same-identity pair genuine and every cross-identity pair impostor: one
with both photos unmasked (the card's `calibration`), one with a masked probe against the
unmasked gallery (`calibration_masked`, used when a photo of a pair wears a synthetic mask).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fmr.data.pack import HeldOutClasses, ValidationSet
from fmr.models.inputs import DEFAULT_INPUT, embed_flip_averaged
from fmr.train.device import DevicePolicy

EMBED_BATCH = 256
VAL_FAR = 1e-3
CLOSED_SET_CONDITIONS = {
    "unmasked": "the held-out photos as they are",
    "surgical": "surgical mask, fmr renderer (a training style), fixed seed",
    "kn95_warp": "KN95 mask, warp renderer on the template landmarks (a style and a renderer "
    "training never uses), fixed seed",
}


def masked_copies(images: torch.Tensor, seed: int) -> torch.Tensor:
    """A synthetic mask on every crop of a uint8 (N, 3, H, W) CPU tensor, fixed by `seed`."""
    from fmr.masks.tensor import mask_batch

    generator = torch.Generator().manual_seed(seed)
    return mask_batch(images, 1.0, generator=generator)


def warp_kn95_copies(crops: np.ndarray, seed: int) -> np.ndarray:
    """KN95 from the warp renderer on every aligned crop of uint8 (N, H, W, 3), image i with
    seed (seed, i), on the template's landmarks (no dlib). Raises ImportError or FmrError when
    the renderer cannot run here."""
    from fmr.masks import mask_aligned

    out = np.empty_like(crops)
    for i, crop in enumerate(crops):
        out[i] = mask_aligned(crop, "KN95", np.random.default_rng([seed, i]), renderer="warp")[0]
    return out


class ClosedSetConditions:
    """The held-out photos in each closed-set condition (see the module docstring), uint8
    (N, 3, 112, 112) tensors on `device`; `skipped` names a condition that could not be drawn,
    and why."""

    def __init__(self, crops: torch.Tensor, seed: int, device, report=None):
        from fmr.errors import FmrError
        from fmr.masks.tensor import mask_batch

        self.images: dict[str, torch.Tensor] = {"unmasked": crops.to(device)}
        generator = torch.Generator().manual_seed(seed)
        self.images["surgical"] = mask_batch(crops, 1.0, styles=("surgical",),
                                             generator=generator).to(device)
        self.skipped: dict[str, str] = {}
        try:
            hwc = crops.permute(0, 2, 3, 1).contiguous().numpy()
            warped = warp_kn95_copies(hwc, seed)
            self.images["kn95_warp"] = torch.from_numpy(warped).permute(0, 3, 1, 2).contiguous(
            ).to(device)
        except (ImportError, FmrError, OSError) as exc:
            self.skipped["kn95_warp"] = f"the warp renderer cannot run here ({exc})"
            if report is not None:
                report(f"closed-set accuracy: KN95 (warp) skipped: {self.skipped['kn95_warp']}")

    def accuracy(self, model, centres: torch.Tensor, held_out: HeldOutClasses,
                 policy: DevicePolicy, unmasked: torch.Tensor | None = None) -> dict:
        """{"images", "identities", "classes", "<condition>": {"top1", "top5"}, ...,
        "conditions": what each means, "skipped": {condition: why}} for `model` against
        `centres` (C, E). `unmasked`: embeddings of the unmasked photos when already made."""
        from fmr.metrics import closed_set_accuracy

        c = F.normalize(centres.detach().float(), dim=1).cpu().numpy()
        result: dict = {}
        for name, images in self.images.items():
            if name == "unmasked" and unmasked is not None:
                embeddings = unmasked
            else:
                embeddings = embed_crops(model, images, policy)
            score = closed_set_accuracy(embeddings.cpu().numpy(), held_out.class_ids, c)
            result.update(images=score.images, identities=score.identities,
                          classes=score.classes)
            result[name] = {"top1": score.top1, "top5": score.top5}
        result["conditions"] = {k: v for k, v in CLOSED_SET_CONDITIONS.items() if k in result}
        if self.skipped:
            result["skipped"] = dict(self.skipped)
        return result


@torch.no_grad()
def embed_crops(model: torch.nn.Module, images: torch.Tensor, policy: DevicePolicy) -> torch.Tensor:
    """Flip-averaged, L2-normalised embeddings (N, E) float32 of uint8 (N, 3, 112, 112) crops,
    run as the training `policy` says (precision, memory layout)."""
    was_training = model.training
    model.eval()
    outputs = []
    for start in range(0, len(images), EMBED_BATCH):
        x = DEFAULT_INPUT.normalise(images[start : start + EMBED_BATCH].to(policy.device,
                                                                            non_blocking=True))
        outputs.append(embed_flip_averaged(model, x, prepare=policy.prepare_input,
                                           autocast=policy.autocast))
    model.train(was_training)
    return torch.cat(outputs)


class Validator:
    """Scores a backbone on a `ValidationSet` (see the module docstring)."""

    def __init__(self, validation: ValidationSet, policy: DevicePolicy, mask_seed: int,
                 masks: bool = True, held_out: HeldOutClasses | None = None, report=None, *,
                 images: torch.Tensor | None = None, masked: torch.Tensor | None = None,
                 embed=None, gallery_model=None):
        """images, masked, embed: for a network that does not read the 112x112 crops (dlib's
        150x150 chips, say): its own uint8 (N, 3, H, W) inputs of the validation faces, their
        masked copies, and `embed(model, images)` -> unit-norm (N, E) embeddings.
        gallery_model: a fixed network that describes the unmasked faces instead of the one
        scored (a student that only ever sees masked faces, compared with its teacher's
        descriptors of unmasked ones); its embeddings are made once."""
        self.validation = validation
        self.policy = policy
        device = policy.device
        crops = torch.from_numpy(validation.images).permute(0, 3, 1, 2).contiguous()
        self.images = (crops if images is None else images).to(device)
        if masked is not None:
            self.masked = masked.to(device)
        else:
            self.masked = masked_copies(crops, mask_seed).to(device) if masks else None
        self.embed = embed or (lambda model, x: embed_crops(model, x, policy))
        self.gallery = None if gallery_model is None else self.embed(gallery_model, self.images)
        # Closed-set accuracy against the class centres: packs with a held-out split only.
        self.held_out = held_out
        self.closed_set = None
        if held_out is not None:
            self.closed_set = ClosedSetConditions(crops, mask_seed, device, report)
        self.pairs = torch.from_numpy(validation.pairs).to(device)
        self.same = validation.same
        # Interleaved folds: the pair list holds all same pairs first.
        self.n_folds = min(10, len(self.same))
        self.folds = np.arange(len(self.same)) % self.n_folds

    def forward_passes(self) -> int:
        """Crops one `evaluate` runs through the model (flip-averaged: two passes each)."""
        sets = 1 + (self.masked is not None)
        if self.closed_set is not None:
            sets += len(self.closed_set.images) - 1  # its unmasked embeddings are shared
        return 2 * sets * len(self.images)

    def embeddings(self, model) -> tuple[torch.Tensor, torch.Tensor | None]:
        unmasked = self.gallery if self.gallery is not None else self.embed(model, self.images)
        masked = None
        if self.masked is not None:
            masked = self.embed(model, self.masked)
        return unmasked, masked

    def pair_metrics(self, gallery: torch.Tensor, probes: torch.Tensor, masked: bool) -> dict:
        """Accuracy on the listed pairs and TAR at FAR 1e-3 over all pairs, of gallery (N, E)
        against probes (N, E) embeddings of the validation images (`masked`: the probes are
        masked copies, so every probe meets every other gallery image)."""
        from fmr.metrics import all_pair_scores, kfold_accuracy, tar_at_far

        scores = (gallery[self.pairs[:, 0]] * probes[self.pairs[:, 1]]).sum(1).cpu().numpy()
        result = kfold_accuracy(scores, self.same, folds=self.folds)
        genuine = scores[self.same]
        g = gallery.cpu().numpy()
        all_genuine, all_impostor = all_pair_scores(
            g, self.validation.labels, probe_embeddings=probes.cpu().numpy() if masked else None)
        point = tar_at_far(all_genuine, all_impostor, [VAL_FAR])[0]
        return {
            "accuracy": result.mean,
            "accuracy_std": result.std,
            "tar_at_far_1e-3": point.tar,
            "mean_genuine_angle_deg": float(np.degrees(np.arccos(np.clip(genuine, -1, 1))).mean()),
        }

    def evaluate(self, model, centres: torch.Tensor | None = None) -> dict:
        """{"unmasked": {...}, "masked": {...}, "score": mean TAR at FAR 1e-3} for model
        selection, and with `centres` (C, E) on a pack with a held-out split
        "closed_set": top-1/top-5 per condition (`ClosedSetConditions.accuracy`; not part of
        the score). The embeddings are kept for `calibration` of the same model."""
        unmasked, masked = self.last = self.embeddings(model)
        result = {"pairs": int(len(self.same)),
                  "unmasked": self.pair_metrics(unmasked, unmasked, masked=False)}
        rates = [result["unmasked"]["tar_at_far_1e-3"]]
        if masked is not None:
            result["masked"] = self.pair_metrics(unmasked, masked, masked=True)
            rates.append(result["masked"]["tar_at_far_1e-3"])
        result["score"] = float(np.mean(rates))
        if self.closed_set is not None and centres is not None:
            result["closed_set"] = self.closed_set.accuracy(model, centres, self.held_out,
                                                            self.policy, unmasked=unmasked)
        return result

    def calibration(self, model=None) -> tuple[dict, dict]:
        """(unmasked, masked-probe) calibrations over all pairs of the validation images, of
        `model`, or of the model `evaluate` just scored when None. The masked one is {} when
        the validator has no masked copies."""
        from fmr.metrics import all_pair_scores
        from fmr.metrics.calibration import calibrate

        unmasked, masked = self.last if model is None else self.embeddings(model)
        labels = self.validation.labels
        u = unmasked.cpu().numpy()
        description = self.validation.description
        where = (f"validation split of training-side identities ({description.get('path', '')}: "
                 f"{len(labels)} images of {len(set(labels.tolist()))} identities)")
        plain = calibrate(*all_pair_scores(u, labels),
                          measured_on=f"{where}; all pairs, both photos unmasked")
        if masked is None:
            return plain, {}
        probes = all_pair_scores(u, labels, probe_embeddings=masked.cpu().numpy())
        return plain, calibrate(*probes, measured_on=(
            f"{where}; every masked probe (training mask styles, fixed seed) against every "
            "other unmasked image"))
