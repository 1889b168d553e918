"""Backbone sizes and CPU latency: parameters, GFLOPs (multiply-adds at 112x112) and fp32
forward time at several batch sizes, printed as a markdown table.

    python benchmarks/models.py                       # iresnet/ressanet 18/50/100, batch 1 and 32
    python benchmarks/models.py --quick               # a fast check that everything runs
    python benchmarks/models.py --models iresnet18 iresnet34 iresnet50 ressanet18 ressanet34 \
        ressanet50 --batch-sizes 4                    # one verify pair with flips = 4 crops

Latency: median wall time of `--repeats` forward passes (after `--warmup` untimed ones) of a
random-weight model in eval mode under torch.inference_mode, fp32, contiguous NCHW input, on
`--threads` CPU threads (default: torch's default, one per core). Weights do not change the
time of these models, so random ones measure what trained ones would. Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from fmr.models import (  # noqa: E402
    INPUT_SIZE,
    count_flops,
    count_parameters,
    create_model,
)

DEFAULT_MODELS = ["iresnet18", "iresnet50", "iresnet100", "ressanet18", "ressanet50", "ressanet100"]


def measure_latency(model: torch.nn.Module, batch_size: int, warmup: int, repeats: int) -> float:
    """Median seconds of one forward pass on a (batch_size, 3, 112, 112) fp32 batch."""
    images = torch.randn(batch_size, 3, INPUT_SIZE, INPUT_SIZE)
    times = []
    with torch.inference_mode():
        for index in range(warmup + repeats):
            start = time.perf_counter()
            model(images)
            if index >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, metavar="NAME")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32], metavar="N")
    parser.add_argument("--warmup", type=int, default=3, help="untimed passes first (default 3)")
    parser.add_argument("--repeats", type=int, default=10, help="timed passes (default 10)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true",
                        help="iresnet18 and ressanet18, batch 1 and 4, 1 warmup + 2 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.batch_sizes, args.warmup, args.repeats = (
            ["iresnet18", "ressanet18"], [1, 4], 1, 2)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"threads; torch {torch.__version__}; fp32, eval, inference_mode; "
          f"median of {args.repeats} after {args.warmup} warm-up passes\n")
    latency_columns = [f"batch {b} (ms)" for b in args.batch_sizes]
    per_image = [f"ms/image @{b}" for b in args.batch_sizes if b > 1]
    header = ["model", "params", "GFLOPs", *latency_columns, *per_image]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    torch.manual_seed(0)
    for name in args.models:
        model = create_model(name).eval()
        seconds = [measure_latency(model, b, args.warmup, args.repeats) for b in args.batch_sizes]
        cells = [
            name,
            f"{count_parameters(model) / 1e6:.1f}M",
            f"{count_flops(model) / 1e9:.2f}",
            *(f"{s * 1e3:.0f}" for s in seconds),
            *(f"{s * 1e3 / b:.1f}" for s, b in zip(seconds, args.batch_sizes, strict=True)
              if b > 1),
        ]
        print("| " + " | ".join(cells) + " |", flush=True)
        del model
    return 0


if __name__ == "__main__":
    sys.exit(main())
