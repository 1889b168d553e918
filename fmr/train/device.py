"""How a training step uses the hardware it runs on: one policy for the loop, the validator and
the throughput benchmark.

`choose_policy` decides, and says why:

- precision: `bf16` autocast on CUDA; on a CPU only where it has bf16 instructions (AMX-BF16 or
  AVX512-BF16 in `/proc/cpuinfo`) and a short probe (a few convolution steps, forward and
  backward) confirms bf16 is faster there; `fp32` otherwise (an AVX2-only CPU emulates bf16 and
  is slower with it). `--precision bf16|fp32` forces a choice.
- channels-last memory layout, on CUDA and CPU alike (oneDNN's fast convolutions want NHWC).
- threads: the cores this process may use (its CPU affinity and cgroup quota), so no core
  idles and none is oversubscribed.
- the fused optimiser kernels where torch has them (CUDA, and CPU since torch 2.4).
- torch.compile: on by default on CUDA, an option on CPU. A graph the compiler cannot handle
  falls back to eager for that module, and the log says so (`CompiledForward`); nothing is
  silenced globally.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

PRECISIONS = ("auto", "bf16", "fp32")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
PROBE_MIN_SPEEDUP = 1.1  # bf16 must beat fp32 by this factor in the probe to be chosen


@dataclass(frozen=True)
class DevicePolicy:
    """Where and how to run: see the module docstring. `reason` says why this precision."""

    device: torch.device
    precision: str  # "bf16" | "fp32"
    channels_last: bool
    threads: int | None  # CPU threads torch uses (None: not set, on CUDA)
    compile: bool
    fused_optimizer: bool
    reason: str
    cpu: str = ""

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of the forward pass (a no-op in fp32)."""
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                              enabled=self.bf16)

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """A float batch (N, 3, H, W) in the memory layout the model expects."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Moves `model` to the device in the chosen memory layout (in place; returns it)."""
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def describe(self) -> dict:
        """JSON-ready summary for logs and model cards."""
        info = asdict(self)
        info["device"] = str(self.device)
        return info

    def summary(self) -> str:
        """One line for the console."""
        where = self.cpu or str(self.device)
        threads = f", {self.threads} threads" if self.threads else ""
        return (f"{where}{threads}: {self.precision} ({self.reason}), "
                f"{'channels-last' if self.channels_last else 'NCHW'}, "
                f"{'compiled' if self.compile else 'eager'}, "
                f"{'fused' if self.fused_optimizer else 'plain'} optimiser")


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_name() -> str:
    """The CPU model name ("AMD EPYC", "Intel(R) Xeon(R) ..."), or the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _probe_step_seconds(precision: str, steps: int = 3) -> float:
    """Seconds per forward+backward step of a small conv-BN-PReLU stack at 56x56 (median)."""
    torch.manual_seed(0)
    layers = []
    for _ in range(3):
        layers += [nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)]
    model = nn.Sequential(*layers).to(memory_format=torch.channels_last)
    x = torch.randn(16, 64, 56, 56).contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(steps + 1):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            y = model(x)
        y.float().square().mean().backward()
        if i:  # the first step pays one-off set-up costs
            times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


@functools.lru_cache(maxsize=1)
def probe_cpu_bf16() -> tuple[float, float]:
    """(fp32, bf16) seconds per probe step on this CPU (cached for the process)."""
    return _probe_step_seconds("fp32"), _probe_step_seconds("bf16")


def _choose_cpu_precision(requested: str, flags: set[str]) -> tuple[str, str]:
    has = [f for f in BF16_CPU_FLAGS if f in flags]
    if requested == "fp32":
        return "fp32", "asked for"
    if requested == "bf16":
        note = f"asked for; the CPU has {', '.join(has)}" if has else (
            "asked for, but this CPU has no AMX-BF16 or AVX512-BF16: emulated, expect it slower")
        return "bf16", note
    if not has:
        return "fp32", "no AMX-BF16 or AVX512-BF16 on this CPU"
    fp32_s, bf16_s = probe_cpu_bf16()
    speedup = fp32_s / max(bf16_s, 1e-9)
    if speedup >= PROBE_MIN_SPEEDUP:
        return "bf16", f"{', '.join(has)}; probe: bf16 {speedup:.2f}x faster than fp32"
    return "fp32", f"{', '.join(has)}, but the probe found bf16 only {speedup:.2f}x fp32"


def choose_policy(
    device: torch.device,
    precision: str = "auto",
    *,
    channels_last: bool = True,
    compile: bool | None = None,
    threads: int | None = None,
) -> DevicePolicy:
    """The policy for `device` (see the module docstring). On CPU this also sets torch's thread
    count (`threads`, default: the usable cores)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        if precision == "fp32" or not supported:
            chosen, reason = "fp32", "asked for" if precision == "fp32" else "no bf16 on this GPU"
        else:
            chosen, reason = "bf16", "CUDA"
        return DevicePolicy(device, chosen, channels_last, None,
                            True if compile is None else compile, True, reason,
                            torch.cuda.get_device_name(device))
    count = threads or usable_cores()
    torch.set_num_threads(count)
    chosen, reason = _choose_cpu_precision(precision, cpu_flags())
    return DevicePolicy(device, chosen, channels_last, count, bool(compile), True, reason,
                        cpu_name())


class CompiledForward:
    """`torch.compile(module)` that falls back to the eager module, loudly, when compiling fails.

    Compilation happens at the first call; if it raises, the error is reported once through
    `report` (and stderr) and every later call runs eagerly. Parameters are the module's own, so
    state dicts, optimisers and DDP are unaffected.
    """

    def __init__(self, module: nn.Module, report: Callable[[str], None] | None = None,
                 **compile_options) -> None:
        self.module = module
        self.compiled: Callable | None = torch.compile(module, **compile_options)
        self.report = report
        self.failure: str | None = None

    def __call__(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as exc:  # torch._dynamo / inductor errors have no common base
                self.compiled = None
                first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                self.failure = f"{type(exc).__name__}: {first_line}"
                message = (f"torch.compile failed for {type(self.module).__name__} "
                           f"({self.failure}); running it eagerly instead")
                print(f"train: warning: {message}", file=sys.stderr)
                if self.report is not None:
                    self.report(message)
        return self.module(*args, **kwargs)
