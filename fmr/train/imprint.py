"""Class centres imprinted from the backbone's own embeddings (`--init-centres class-means`).

A run that starts from an exported model (`--init-from`) gets its backbone but not the margin
head: exports carry no class centres for the training people (or carry them for another pack).
Random centres make the first epochs' ArcFace loss huge (46 at the start of issue 21's H200 arms)
and its gradients pull a trained backbone away from what it knew. Setting each centre to the mean
of its class's embeddings ("weight imprinting", Qi et al. 2018) starts the loss where the backbone
already is, so a short continuation on a CPU spends its steps learning rather than recovering.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fmr.data.sources import TrainingSet
from fmr.train.data import decode_all
from fmr.train.device import DevicePolicy
from fmr.train.validation import embed_crops

# Crops decoded and embedded at a time: bounds the host memory (4,096 x 112 x 112 x 3 = 154 MB).
CHUNK = 4096


def class_mean_centres(backbone: torch.nn.Module, dataset: TrainingSet, policy: DevicePolicy,
                       workers: int = 2, progress: bool = True) -> torch.Tensor:
    """Unit-norm mean embedding of each class: float32 (num_classes, E) on the policy's device.

    Every labelled image counts once, unaugmented and flip-averaged (as validation embeds);
    unlabelled images (label -1) are left out. A class with no image keeps a zero row (it cannot
    occur in a pack: every class has an image)."""
    labelled = np.flatnonzero(dataset.labels >= 0)
    sums = None
    for start in range(0, len(labelled), CHUNK):
        indices = labelled[start : start + CHUNK]
        crops = decode_all(dataset, indices, workers, progress)
        images = torch.from_numpy(crops).permute(0, 3, 1, 2)
        embeddings = embed_crops(backbone, images, policy)  # float32
        if sums is None:
            sums = torch.zeros(dataset.num_classes, embeddings.shape[1],
                               device=embeddings.device)
        labels = torch.from_numpy(dataset.labels[indices]).to(embeddings.device)
        sums.index_add_(0, labels, embeddings)
    if sums is None:
        raise ValueError("class_mean_centres: the training set has no labelled image")
    return F.normalize(sums, dim=1)
