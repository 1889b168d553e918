"""Learning-rate schedule: linear warmup, then polynomial decay to zero (as insightface's
PolyScheduler)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def warmup_poly_factor(step: int, total_steps: int, warmup_steps: int, power: float = 2.0) -> float:
    """Multiplier of the base learning rate at optimiser step `step` (0-based).

    Warmup: (step + 1) / warmup_steps for the first `warmup_steps` steps (never 0, so the first
    step already learns). Then (1 - progress) ** power, progress going from 0 at the end of
    warmup to 1 at `total_steps`.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return (1.0 - progress) ** power


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int | Callable[[], int],
    warmup_steps: int,
    power: float = 2.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepping once per optimiser step (its state_dict resumes exactly).

    `total_steps` may be a function, read at every step: `--time-budget` fixes the length of
    the schedule only after measuring the first steps.
    """
    length = total_steps if callable(total_steps) else (lambda: total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_poly_factor(step, length(), warmup_steps, power)
    )
