"""Batches of uint8 crops on the training device, in a deterministic order.

Two ways to feed the GPU, chosen by `--in-memory` (auto: by size):

- in memory: decode the whole set once (JPEG, threads) into one uint8 tensor on the device
  (10k crops are 376 MB) and gather each batch by index there: no per-step host work beyond
  an index slice, no transfer. The fastest path for packs like the shared-data one.
- streaming: a DataLoader whose worker processes decode the JPEGs of each batch (MS1M's 5.2M
  images do not fit), pinned memory and non-blocking copies to the device.

Either way the order of epoch e is a permutation seeded by (seed, e); rank r of a distributed
run takes every world_size-th index of it, and the last partial batch is dropped (static
shapes for torch.compile). Resuming at step k of an epoch skips exactly its first k batches.
Augmentation happens afterwards, on the device (`fmr.train.augment`).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from fmr.data.sources import TrainingSet
from fmr.errors import DataError

CROP_BYTES = 3 * 112 * 112
PARTNER_SEED_OFFSET = 7919
IN_MEMORY_LIMIT = {"cuda": 24 * 2**30, "cpu": 4 * 2**30}  # decoded bytes, for --in-memory auto


@dataclass
class Batch:
    """images: uint8 (B, 3, 112, 112) crops, or (B, 3, S, S) canvases with `canvases` loaders;
    labels: int64 (B,), -1 = no class; teacher: float32 (B, D) unit-norm descriptors or None;
    has_teacher: bool (B,) or None. Canvas batches also carry `partners` (B, 3, S, S), other
    photos' canvases for mixup, and `chips` (B, 2, 3), dlib's chip geometry of each photo.
    All on the device."""

    images: torch.Tensor
    labels: torch.Tensor
    teacher: torch.Tensor | None
    has_teacher: torch.Tensor | None
    partners: torch.Tensor | None = None
    chips: torch.Tensor | None = None


def training_indices(dataset: TrainingSet, use_teacher: bool, online_teacher: bool = False
                     ) -> np.ndarray:
    """Images that can teach something: labelled ones, plus unlabelled ones with a teacher
    descriptor when distillation is on (every one, with an online teacher)."""
    usable = dataset.labels >= 0
    if online_teacher:
        usable[:] = True
    elif use_teacher and dataset.teacher is not None:
        usable |= np.isfinite(dataset.teacher[:, 0].astype(np.float32))
    return np.flatnonzero(usable)


def epoch_order(indices: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The permutation of `indices` for `epoch` (the same for every rank and every resume)."""
    rng = np.random.default_rng([seed, epoch])
    return indices[rng.permutation(len(indices))]


def teacher_arrays(dataset: TrainingSet, use_teacher: bool):
    """(teacher float32 with NaN rows zeroed, has_teacher bool) or (None, None)."""
    if not use_teacher or dataset.teacher is None:
        return None, None
    teacher = dataset.teacher.astype(np.float32)
    has = np.isfinite(teacher).all(axis=1)
    teacher[~has] = 0.0
    return teacher, has


class Batches:
    """Shared by both loaders: which indices each step of each epoch uses on this rank."""

    def __init__(self, dataset: TrainingSet, batch_size: int, seed: int, rank: int,
                 world_size: int, use_teacher: bool, canvases: bool = False,
                 online_teacher: bool = False):
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.canvases = canvases
        self.indices = training_indices(dataset, use_teacher, online_teacher)
        # the pack's fixed descriptors travel with the batches; an online teacher needs none
        self.use_teacher = use_teacher and dataset.teacher is not None and not online_teacher
        per_rank = len(self.indices) // world_size
        self.steps_per_epoch = per_rank // batch_size
        if self.steps_per_epoch == 0:
            raise DataError(
                f"{dataset.path}: {len(self.indices)} usable images are fewer than one batch of "
                f"{batch_size} x {world_size} process(es); lower --batch-size"
            )

    def step_indices(self, epoch: int, partners: bool = False) -> np.ndarray:
        """(steps_per_epoch, batch_size) dataset indices of this rank's batches in `epoch`
        (with `partners`: the mixup partner of each, from a second permutation)."""
        seed = self.seed + PARTNER_SEED_OFFSET if partners else self.seed
        order = epoch_order(self.indices, seed, epoch)[self.rank :: self.world_size]
        used = self.steps_per_epoch * self.batch_size
        return order[:used].reshape(self.steps_per_epoch, self.batch_size)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        raise NotImplementedError


def decode_all(
    dataset: TrainingSet, indices: np.ndarray, workers: int, progress: bool,
    canvases: bool = False,
) -> np.ndarray:
    """Decode `indices` into one (N, S, S, 3) uint8 array (112x112 crops, or the pack's canvases),
    with threads (cv2 frees the GIL)."""
    from tqdm import tqdm

    size = dataset.canvases.size if canvases else 112
    decode = dataset.canvases.decode if canvases else dataset.decode
    out = np.empty((len(indices), size, size, 3), dtype=np.uint8)

    def work(position: int) -> None:
        out[position] = decode(int(indices[position]))

    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        bar = tqdm(total=len(indices), desc=f"decoding {'canvases' if canvases else 'crops'}",
                   unit="img", disable=not progress, dynamic_ncols=True)
        for _ in pool.map(work, range(len(indices)), chunksize=256):
            bar.update(1)
        bar.close()
    return out


class InMemoryBatches(Batches):
    """The whole decoded set on the device; batches are index gathers there."""

    def __init__(self, dataset, batch_size, seed, rank, world_size, use_teacher, device,
                 workers: int = 8, progress: bool = True, canvases: bool = False,
                 online_teacher: bool = False):
        super().__init__(dataset, batch_size, seed, rank, world_size, use_teacher, canvases,
                         online_teacher)
        self.device = device
        decoded = decode_all(dataset, self.indices, workers, progress, canvases)
        # Position in `self.indices` of each dataset index, to gather on the device.
        self.position = np.full(len(dataset), -1, dtype=np.int64)
        self.position[self.indices] = np.arange(len(self.indices))
        self.images = torch.from_numpy(decoded).to(device).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.from_numpy(dataset.labels[self.indices]).to(device)
        teacher, has = teacher_arrays(dataset, self.use_teacher)
        self.teacher = self.has_teacher = self.chips = None
        if teacher is not None:
            self.teacher = torch.from_numpy(teacher[self.indices]).to(device)
            self.has_teacher = torch.from_numpy(has[self.indices]).to(device)
        if canvases:
            self.chips = torch.from_numpy(dataset.canvases.chips[self.indices]).to(device)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        steps = torch.from_numpy(self.position[self.step_indices(epoch)]).to(self.device)
        partner_steps = None
        if self.canvases:
            partner_steps = torch.from_numpy(
                self.position[self.step_indices(epoch, partners=True)]).to(self.device)
        for step in range(start_step, self.steps_per_epoch):
            rows = steps[step]
            yield Batch(
                self.images.index_select(0, rows),
                self.labels.index_select(0, rows),
                None if self.teacher is None else self.teacher.index_select(0, rows),
                None if self.has_teacher is None else self.has_teacher.index_select(0, rows),
                None if partner_steps is None else self.images.index_select(0, partner_steps[step]),
                None if self.chips is None else self.chips.index_select(0, rows),
            )


class _DecodedItems(torch.utils.data.Dataset):
    def __init__(self, dataset: TrainingSet, teacher, has_teacher):
        self.dataset, self.teacher, self.has_teacher = dataset, teacher, has_teacher

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        image = torch.from_numpy(self.dataset.decode(i)).permute(2, 0, 1).contiguous()
        label = int(self.dataset.labels[i])
        if self.teacher is None:
            return image, label
        return image, label, torch.from_numpy(self.teacher[i]), bool(self.has_teacher[i])


class StreamingBatches(Batches):
    """JPEG decoding in DataLoader worker processes, batch by batch."""

    def __init__(self, dataset, batch_size, seed, rank, world_size, use_teacher, device,
                 workers: int = 8):
        super().__init__(dataset, batch_size, seed, rank, world_size, use_teacher)
        self.device = device
        self.workers = workers
        teacher, has = teacher_arrays(dataset, self.use_teacher)
        self.items = _DecodedItems(dataset, teacher, has)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        plan = self.step_indices(epoch)[start_step:].tolist()
        if not plan:
            return
        cuda = self.device.type == "cuda"
        loader = torch.utils.data.DataLoader(
            self.items, batch_sampler=plan, num_workers=self.workers, pin_memory=cuda,
            prefetch_factor=4 if self.workers > 0 else None,
        )
        for item in loader:
            moved = [t.to(self.device, non_blocking=True) for t in item]
            images, labels = moved[0], moved[1].long()
            teacher = moved[2].float() if len(moved) > 2 else None
            has = moved[3].bool() if len(moved) > 3 else None
            yield Batch(images, labels, teacher, has)


def make_batches(dataset: TrainingSet, config, ctx, use_teacher: bool,
                 canvases: bool = False, online_teacher: bool = False) -> Batches:
    """The loader `config.in_memory` asks for (auto: in memory when the decoded set is small).
    With `canvases` the pack's canvases are decoded into memory instead of the crops (they have
    no streaming path); `online_teacher` makes every image usable (none needs a stored
    descriptor)."""
    args = (dataset, config.batch_size, config.seed, ctx.rank, ctx.world_size, use_teacher,
            ctx.device)
    if canvases:
        return InMemoryBatches(*args, workers=max(1, config.workers),
                               progress=config.progress and ctx.is_main, canvases=True,
                               online_teacher=online_teacher)
    choice = config.in_memory
    if choice == "auto":
        decoded = len(training_indices(dataset, use_teacher)) * CROP_BYTES
        choice = "yes" if decoded <= IN_MEMORY_LIMIT.get(ctx.device.type, 0) else "no"
    if choice == "yes":
        return InMemoryBatches(*args, workers=max(1, config.workers),
                               progress=config.progress and ctx.is_main)
    return StreamingBatches(*args, workers=config.workers)
