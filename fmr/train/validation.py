"""Validation during training: verification accuracy on held-out identities, unmasked and masked.

The validation crops go to the device once. Their masked copies are drawn once too, with a
fixed seed (`--val-mask-seed`) and the training mask styles, so every epoch is scored on the
same masks and epochs compare. Pairs are scored twice: both photos unmasked, and the second
photo masked (the first stays unmasked, like a masked probe against an enrolment photo).
Accuracy is the LFW protocol's 10-fold accuracy (`fmr.eval.metrics.kfold_accuracy`), with folds
interleaved over the pair list so each fold mixes same and different pairs.

The best export's calibration (`fmr.eval.calibration.calibrate`) uses all pairs of the
validation images: every same-identity pair as genuine, every cross-identity pair as impostor,
in both conditions (unmasked/unmasked and masked probe/unmasked gallery).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fmr.data.pack import ValidationSet

EMBED_BATCH = 256


def masked_copies(images: torch.Tensor, seed: int) -> torch.Tensor:
    """A synthetic mask on every crop of a uint8 (N, 3, H, W) CPU tensor, fixed by `seed`."""
    from fmr.masks.tensor import mask_batch

    generator = torch.Generator().manual_seed(seed)
    return mask_batch(images, 1.0, generator=generator)


@torch.no_grad()
def embed_crops(
    model: torch.nn.Module, images: torch.Tensor, device: torch.device, channels_last: bool
) -> torch.Tensor:
    """Flip-averaged, L2-normalised embeddings (N, E) float32 of uint8 (N, 3, 112, 112) crops."""
    was_training = model.training
    model.eval()
    outputs = []
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                              enabled=device.type == "cuda")
    for start in range(0, len(images), EMBED_BATCH):
        x = images[start : start + EMBED_BATCH].to(device, non_blocking=True).float()
        x = x.mul_(2.0 / 255.0).sub_(1.0)
        both = torch.cat([x, x.flip(3)])
        if channels_last:
            both = both.contiguous(memory_format=torch.channels_last)
        with autocast:
            both = model(both).float()
        outputs.append(both[: len(x)] + both[len(x) :])
    model.train(was_training)
    return F.normalize(torch.cat(outputs), dim=1)


class Validator:
    """Scores a backbone on a `ValidationSet` (see the module docstring)."""

    def __init__(self, validation: ValidationSet, device: torch.device, mask_seed: int,
                 channels_last: bool = False, masks: bool = True):
        self.validation = validation
        self.device = device
        self.channels_last = channels_last and device.type == "cuda"
        crops = torch.from_numpy(validation.images).permute(0, 3, 1, 2).contiguous()
        self.images = crops.to(device)
        self.masked = masked_copies(crops, mask_seed).to(device) if masks else None
        self.pairs = torch.from_numpy(validation.pairs).to(device)
        self.same = validation.same
        # Interleaved folds: the pair list holds all same pairs first.
        self.n_folds = min(10, len(self.same))
        self.folds = np.arange(len(self.same)) % self.n_folds

    def embeddings(self, model) -> tuple[torch.Tensor, torch.Tensor | None]:
        unmasked = embed_crops(model, self.images, self.device, self.channels_last)
        masked = None
        if self.masked is not None:
            masked = embed_crops(model, self.masked, self.device, self.channels_last)
        return unmasked, masked

    def _accuracy(self, first: torch.Tensor, second: torch.Tensor) -> dict:
        from fmr.eval.metrics import kfold_accuracy

        scores = (first[self.pairs[:, 0]] * second[self.pairs[:, 1]]).sum(1).cpu().numpy()
        result = kfold_accuracy(scores, self.same, folds=self.folds)
        genuine = scores[self.same]
        return {
            "accuracy": result.mean,
            "accuracy_std": result.std,
            "mean_genuine_angle_deg": float(np.degrees(np.arccos(np.clip(genuine, -1, 1))).mean()),
        }

    def evaluate(self, model) -> dict:
        """{"unmasked": {...}, "masked": {...}, "score": mean accuracy} for model selection."""
        unmasked, masked = self.embeddings(model)
        result = {"pairs": int(len(self.same)), "unmasked": self._accuracy(unmasked, unmasked)}
        accuracies = [result["unmasked"]["accuracy"]]
        if masked is not None:
            result["masked"] = self._accuracy(unmasked, masked)
            accuracies.append(result["masked"]["accuracy"])
        result["score"] = float(np.mean(accuracies))
        return result

    def calibration(self, model) -> dict:
        """`calibrate` on all pairs of the validation images, unmasked and masked probes."""
        from fmr.eval.calibration import calibrate
        from fmr.eval.metrics import all_pair_scores

        unmasked, masked = self.embeddings(model)
        labels = self.validation.labels
        u = unmasked.cpu().numpy()
        genuine, impostor = all_pair_scores(u, labels)
        parts = "all pairs of the validation images, both unmasked"
        if masked is not None:
            g_masked, i_masked = all_pair_scores(u, labels, probe_embeddings=masked.cpu().numpy())
            genuine = np.concatenate([genuine, g_masked])
            impostor = np.concatenate([impostor, i_masked])
            parts += ", plus masked probe vs unmasked gallery (training mask styles, fixed seed)"
        description = self.validation.description
        measured_on = (
            f"validation split of training-side identities ({description.get('path', '')}: "
            f"{len(labels)} images of {len(set(labels.tolist()))} identities); {parts}"
        )
        return calibrate(genuine, impostor, measured_on=measured_on)
