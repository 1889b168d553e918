"""`fmr models`: the registered architectures with parameters and FLOPs."""

from __future__ import annotations

import argparse

HELP = "list the backbone architectures with parameters and GFLOPs"
DESCRIPTION = """\
List the architectures fmr can build (train.py --model, checkpoint cards), with parameters
and multiply-adds for one 112x112 image (GFLOPs, the convention insightface reports). Counted
on shape-only tensors: instant, whatever the size.

example:
  fmr models
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embedding-size", type=int, default=512,
                        help="embedding size to count with (default 512)")


def run(args: argparse.Namespace) -> int:
    import torch

    from fmr.models import INPUT_SIZE, count_flops, count_parameters, create_model, list_models

    names = list_models()
    width = max(len(name) for name in names)
    print(f"{'model':<{width}} {'params':>9} {'GFLOPs':>7}")
    for name in names:
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            model = create_model(name, embedding_size=args.embedding_size)
        params = count_parameters(model) / 1e6
        gflops = count_flops(model, INPUT_SIZE) / 1e9
        print(f"{name:<{width}} {params:>8.1f}M {gflops:>7.2f}")
    return 0
