"""Margin losses for face recognition: ArcFace, CosFace and their combined form, plus the
class-centre head (`MarginHead`) with optional sampled softmax over the class centres.

The combined margin of insightface: for the target class, cos(theta) becomes
cos(m1 * theta + m2) - m3, then every logit is multiplied by s:

- ArcFace: m1 = 1, m2 = 0.5, m3 = 0 (additive angular margin);
- CosFace: m1 = 1, m2 = 0, m3 = 0.35-0.4 (additive cosine margin);
- SphereFace-like: m1 > 1.

Choices made here, with why:

- Exact gradients. The target logit is a differentiable function of the cosine; no
  straight-through trick (insightface's fast path computes the margin under no_grad, so the
  gradient is that of plain softmax), no "easy margin".
- Monotonic past pi. When m1 * theta + m2 exceeds pi, cos(.) would turn back up and reward a
  worse angle. fmr uses SphereFace's monotonic extension psi(phi) = (-1)^k cos(phi) - 2k for
  phi in [k*pi, (k+1)*pi]: for ArcFace this is -2 - cos(theta + m) when theta > pi - m. It is
  continuous with a continuous derivative at the switch and keeps decreasing in theta, unlike
  insightface's fallback cos(theta) - m*sin(m), which jumps at theta = pi - m.
- No NaN at cos = +-1. For m1 = 1 (ArcFace, CosFace, combined) the target logit uses
  cos(theta + m2) = c*cos(m2) - sin(theta)*sin(m2) with sin(theta) = sqrt(max(1 - c^2, eps)),
  which is finite with a finite gradient everywhere; the exact gradient of cos(theta + m2)
  with respect to c is infinite at c = +-1 (that of acos), and the eps bounds it there. For
  m1 != 1 theta = acos(c) on c clamped to [-1 + 1e-6, 1 - 1e-6].
- fp32. Cosines, margins, logits and the cross-entropy run in fp32 with autocast disabled, so a
  bf16 backbone does not round s * cos (up to 64) to 8 bits of mantissa.
- Labels < 0 mean "no class label": no margin, no cross-entropy (the training loop uses such
  images for distillation only). The loss is the mean over labelled samples (0 when none).
- Sampled softmax, not Partial FC. `sample_rate < 1` keeps every positive centre and a random
  share of the negatives in each step's softmax, as insightface's PartialFC_V2 does, but the
  centres are NOT sharded across ranks: each rank holds all of them, with their gradient and
  optimiser state, and DDP all-reduces the full (num_classes, E) gradient. What it saves is
  the logits: N x ceil(sample_rate x C) cosines, margins and softmax per step instead of N x C
  (time and activation memory of the head), not the memory of the centres. For more
  identities than one device holds, shard the centres as PartialFC_V2 does.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

SIN_EPS = 1e-12  # floor of 1 - cos^2 under the square root: sin(theta) >= 1e-6
ACOS_EPS = 1e-6


def _fp32_region(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


class CombinedMarginLoss(nn.Module):
    """Cosines -> scaled logits with the combined margin on the target class.

    Target logit s * (psi(m1 * theta + m2) - m3), other logits s * cos(theta), where psi is cos
    extended monotonically past pi (see the module docstring). Despite the insightface name this
    module returns logits; `MarginHead` applies the softmax cross-entropy.
    """

    def __init__(self, s: float = 64.0, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0) -> None:
        super().__init__()
        self.s, self.m1, self.m2, self.m3 = float(s), float(m1), float(m2), float(m3)

    def extra_repr(self) -> str:
        return f"s={self.s}, m1={self.m1}, m2={self.m2}, m3={self.m3}"

    def target_logit(self, cosine: torch.Tensor) -> torch.Tensor:
        """psi(m1 * theta + m2) - m3 for cosines c = cos(theta) (any shape, fp32), unscaled."""
        if self.m1 == 1.0 and self.m2 == 0.0:
            return cosine - self.m3
        if self.m1 == 1.0:
            sin_theta = torch.sqrt(torch.clamp(1.0 - cosine * cosine, min=SIN_EPS))
            cos_phi = cosine * math.cos(self.m2) - sin_theta * math.sin(self.m2)
            # phi = theta + m2 > pi  <=>  theta > pi - m2  <=>  c < cos(pi - m2)
            past_pi = cosine < math.cos(math.pi - self.m2)
            return torch.where(past_pi, -2.0 - cos_phi, cos_phi) - self.m3
        theta = torch.acos(torch.clamp(cosine, -1.0 + ACOS_EPS, 1.0 - ACOS_EPS))
        phi = self.m1 * theta + self.m2
        k = torch.floor(phi.detach() / math.pi)
        sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
        return sign * torch.cos(phi) - 2.0 * k - self.m3

    def forward(self, cosine: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """cosine: (N, C) cosines between embeddings and class centres; labels: (N,) int64
        class indices, < 0 for "no label" (no margin). Returns (N, C) fp32 logits."""
        with _fp32_region(cosine.device):
            cosine = cosine.float()
            labelled = labels >= 0
            index = torch.where(labelled, labels, torch.zeros_like(labels)).unsqueeze(1)
            target = cosine.gather(1, index)
            margin_target = torch.where(labelled.unsqueeze(1), self.target_logit(target), target)
            logits = cosine.scatter(1, index, margin_target)
            return logits * self.s


class ArcFace(CombinedMarginLoss):
    """Additive angular margin: target logit s * cos(theta + m) (Deng et al., CVPR 2019)."""

    def __init__(self, s: float = 64.0, m: float = 0.5) -> None:
        super().__init__(s=s, m1=1.0, m2=m, m3=0.0)


class CosFace(CombinedMarginLoss):
    """Additive cosine margin: target logit s * (cos(theta) - m) (Wang et al., CVPR 2018)."""

    def __init__(self, s: float = 64.0, m: float = 0.4) -> None:
        super().__init__(s=s, m1=1.0, m2=0.0, m3=m)


class MarginOutput(NamedTuple):
    """`MarginHead(..., return_logits=True)`: unpacks as (loss, target_cosine, correct).

    loss: scalar fp32, mean cross-entropy over labelled samples.
    target_cosine: (L,) fp32, detached, cosine between each labelled sample (label >= 0, in
        batch order) and its own class centre, before the margin (for angle statistics).
    correct: scalar int64, labelled samples whose nearest centre (plain cosine, no margin) is
        their own class; training accuracy = correct / target_cosine.numel(). With sampled
        softmax the nearest centre is searched among the sampled classes only.
    """

    loss: torch.Tensor
    target_cosine: torch.Tensor
    correct: torch.Tensor


class MarginHead(nn.Module):
    """Class centres + margin + softmax cross-entropy, with optional sampled softmax.

    weight: (num_classes, E) class centres, L2-normalised in the forward pass.
    margin: a `CombinedMarginLoss` (ArcFace(), CosFace(), ...).
    sample_rate: share of class centres in each step's softmax (sampled softmax, the sampling
        of Partial FC, An et al. 2021, without its sharding: see the module docstring):
        all centres of the batch's labels plus random other centres up to
        ceil(sample_rate * num_classes) in total. 1.0 = full softmax. Only in training mode;
        evaluation uses every class.

    forward(embeddings (N, E), labels (N,) int64, labels < 0 ignored) -> loss (scalar fp32), or
    with return_logits=True a `MarginOutput(loss, target_cosine, correct)`: the batch's
    training accuracy at the cost of an argmax over logits already computed.

    Under DistributedDataParallel: the centres are replicated on every rank (wrap the head in
    DDP with the backbone, or on its own); each rank computes the loss of its local batch, with
    its own sample of negatives, and DDP averages the gradients. Centres outside a rank's sample
    get zero gradient from that rank. Memory per rank: num_classes x E fp32 centres (93k
    identities x 512: 190 MB, plus gradient and optimiser state), whatever the sample rate and
    the number of ranks, and N x sampled logits (what sampling saves).
    Cosines, logits and loss are fp32 even under bf16 autocast.
    """

    def __init__(
        self, embedding_size: int, num_classes: int, margin: nn.Module, sample_rate: float = 1.0
    ) -> None:
        super().__init__()
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        self.margin = margin
        self.sample_rate = sample_rate
        self.weight = nn.Parameter(torch.normal(0.0, 0.01, (num_classes, embedding_size)))

    @property
    def num_sampled(self) -> int:
        return min(self.num_classes, math.ceil(self.sample_rate * self.num_classes))

    def sample_classes(
        self, labels: torch.Tensor, num_sampled: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampled softmax: the class indices to keep (sorted, every label of the batch included,
        at least `num_sampled` of them) and `labels` re-indexed into that subset (< 0 kept)."""
        labelled = labels >= 0
        priority = torch.rand(self.num_classes, device=labels.device)
        priority[labels[labelled]] = 2.0  # positives first
        num_positive = int((priority > 1.0).sum())
        keep = torch.topk(priority, max(num_sampled, num_positive), sorted=False).indices
        keep = keep.sort().values
        local = torch.searchsorted(keep, torch.clamp(labels, min=0))
        return keep, torch.where(labelled, local, labels)

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, return_logits: bool = False
    ) -> torch.Tensor | MarginOutput:
        with _fp32_region(embeddings.device):
            weight = self.weight
            if self.training and self.sample_rate < 1.0:
                keep, labels = self.sample_classes(labels, self.num_sampled)
                weight = weight[keep]
            cosine = F.linear(F.normalize(embeddings.float()), F.normalize(weight.float()))
            logits = self.margin(cosine, labels)
            labelled = labels >= 0
            loss = F.cross_entropy(
                logits, torch.where(labelled, labels, -100), ignore_index=-100, reduction="sum"
            ) / labelled.sum().clamp(min=1)
            if not return_logits:
                return loss
            with torch.no_grad():
                labelled_cosine = cosine[labelled]
                target = labels[labelled]
                target_cosine = labelled_cosine.gather(1, target[:, None]).squeeze(1)
                correct = (labelled_cosine.argmax(dim=1) == target).sum()
            return MarginOutput(loss, target_cosine, correct)
