"""Training throughput (images/s) of train.py's step, per backbone and batch size.

Three feeds, the same step (forward, margin loss, distillation when the pack has a teacher,
backward, gradient clipping, SGD) as `fmr.train.loop`:

- synthetic: random normalised batches already on the device (the model step alone; what
  insightface's arcface_torch benchmark measures);
- pack: the real pack decoded once onto the device, each step gathering its batch there and
  augmenting it (masks, flip, affine, colour), as train.py does for small packs;
- stream: the real pack decoded batch by batch in DataLoader worker processes, copied to the
  device and augmented (train.py's path for sets too big for memory, e.g. MS1M).

    python benchmarks/train_throughput.py --data data/shared-pack            # GPU: the table
    python benchmarks/train_throughput.py --quick                            # CPU: a check

Prints the device name and a markdown table; `--json FILE` saves the figures. Reference on one
H200 (insightface arcface_torch, fp16, synthetic, 93k classes) at batch 512 / 128: r18 3,776 /
3,073, r50 2,589 / 2,189, r100 1,744 / 1,498 img/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REFERENCE_H200 = {  # insightface arcface_torch, img/s at batch (512, 128)
    "iresnet18": (3776, 3073),
    "iresnet50": (2589, 2189),
    "iresnet100": (1744, 1498),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/shared-pack", help="pack for the real-data feeds")
    parser.add_argument("--models", default="iresnet18,iresnet50,iresnet100,ressanet50")
    parser.add_argument("--batch-sizes", default="128,512")
    parser.add_argument("--feeds", default="synthetic,pack,stream")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (compile)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the backbone (default: on for CUDA)")
    parser.add_argument("--mask-prob", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=8, help="decoding workers (stream feed)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny CPU check: iresnet18, batch 8, 2 steps")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.batch_sizes, args.steps, args.warmup = "iresnet18", "8", 2, 1
        args.device = "cpu" if args.device == "auto" else args.device
    return args


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args, name: str, batch_size: int, feeds: list[str], dataset, device) -> dict:
    """Images per second of each feed: `args.steps` timed training steps after `args.warmup`
    untimed ones. One model (compiled once) serves every feed of this batch size."""
    from fmr.train.augment import AugmentSettings, augment_batch
    from fmr.train.config import TrainConfig
    from fmr.train.data import InMemoryBatches, StreamingBatches
    from fmr.train.loop import build_module, compile_backbone, make_optimizer

    cuda = device.type == "cuda"
    config = TrainConfig(backbone=name, batch_size=batch_size, mask_prob=args.mask_prob,
                         workers=args.workers, device=str(device))
    use_teacher = dataset is not None and dataset.teacher is not None
    num_classes = dataset.num_classes if dataset is not None else 1000
    teacher_dim = dataset.teacher.shape[1] if use_teacher else None
    module = build_module(config, num_classes, teacher_dim, device)
    if cuda if args.compile is None else args.compile:
        compile_backbone(module)
    optimizer, parameters = make_optimizer(module, config, device)
    module.train()
    augment = AugmentSettings.from_config(config)
    generator = torch.Generator(device=device).manual_seed(0)
    channels_last = cuda and config.channels_last
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda)

    def synthetic():
        x = torch.randn(batch_size, 3, 112, 112, device=device).clamp_(-1, 1)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, num_classes, (batch_size,), device=device)
        teacher = has = None
        if teacher_dim:
            teacher = torch.nn.functional.normalize(
                torch.randn(batch_size, teacher_dim, device=device), dim=1)
            has = torch.ones(batch_size, dtype=torch.bool, device=device)
        while True:
            yield x, labels, teacher, has

    def real(feed: str):
        if feed == "pack":
            loader = InMemoryBatches(dataset, batch_size, 0, 0, 1, use_teacher, device,
                                     workers=args.workers, progress=False)
        else:
            loader = StreamingBatches(dataset, batch_size, 0, 0, 1, use_teacher, device,
                                      workers=args.workers)
        epoch = 0
        while True:
            for batch in loader.epoch(epoch):
                images = augment_batch(batch.images, augment, generator,
                                       channels_last=channels_last)
                yield images, batch.labels, batch.teacher, batch.has_teacher
            epoch += 1

    results = {}
    for feed in feeds:
        stream = synthetic() if feed == "synthetic" else real(feed)
        started = 0.0
        try:
            for i in range(args.warmup + args.steps):
                if i == args.warmup:
                    synchronize(device)
                    started = time.perf_counter()
                images, labels, teacher, has = next(stream)
                with autocast:
                    loss, _ = module(images, labels, teacher, has)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(parameters, max_norm=5.0)
                optimizer.step()
            synchronize(device)
            results[feed] = args.steps * batch_size / (time.perf_counter() - started)
        except torch.OutOfMemoryError:
            results[feed] = None
        finally:
            stream.close()
        print(f"{name} batch {batch_size} {feed}: "
              f"{'out of memory' if results[feed] is None else round(results[feed])} img/s",
              flush=True)
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    from fmr.data.sources import open_training_set
    from fmr.train.distributed import setup

    ctx = setup(args.device)
    device = ctx.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    feeds = [f for f in args.feeds.split(",") if f]
    dataset = None
    if any(f != "synthetic" for f in feeds):
        if Path(args.data).exists():
            dataset = open_training_set(args.data)
        else:
            print(f"no pack at {args.data}: measuring the synthetic feed only (make one with "
                  "`fmr prepare --preset shared --teacher dlib`)", file=sys.stderr)
            feeds = ["synthetic"]
    print(f"device: {name}; torch {torch.__version__}; compile "
          f"{'auto' if args.compile is None else args.compile}; mask prob {args.mask_prob}; "
          f"data {args.data if dataset is not None else 'synthetic'}", flush=True)
    rows = []
    for model in args.models.split(","):
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            row = {"model": model, "batch": batch_size,
                   **measure(args, model, batch_size, feeds, dataset, device)}
            if device.type == "cuda":
                torch.cuda.empty_cache()
            reference = REFERENCE_H200.get(model)
            row["reference_h200"] = None if reference is None else reference[
                0 if batch_size == 512 else 1] if batch_size in (128, 512) else None
            rows.append(row)
    header = ["model", "batch", *feeds, "reference_h200"]
    print(f"\nTraining throughput, images/s ({name})\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = [str(row[h]) if h in ("model", "batch") else
                 ("-" if row.get(h) is None else f"{row[h]:,.0f}") for h in header]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "torch": torch.__version__,
                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
