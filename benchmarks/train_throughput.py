"""Training throughput (images/s): train.py's own path against a bare fp32 training step.

For each backbone, in one run:

- baseline: a bare training step of the backbone alone (forward, a loss on the embedding,
  backward, SGD), fp32, eager, channels-last, all usable cores, random input, no margin head,
  batch 32 (`--baseline-batch`);
- train.py: `python train.py` itself with its default flags on a tiny RecordIO folder (64 random
  JPEG crops of 2 identities: `--batch-size 32 --epochs 12 --log-every 4 --val none`, so 2 steps
  per epoch and epoch ends, loader restarts, augmentation and synthetic masks all count), read
  from the `images_per_s` of log.jsonl's train events (the first, which holds start-up, left
  out; median of the rest);
- train.py --compile (with `--with-compile`): the same with torch.compile, after its warm-up
  (compilation happens in the first log window, which is left out).

and the ratio of each to the baseline. The device policy train.py chose (precision and why, the
CPU's bf16 instructions, threads) is printed first.

    python benchmarks/train_throughput.py --device cpu
    python benchmarks/train_throughput.py --device cpu --models iresnet18_half --with-compile
    python benchmarks/train_throughput.py --device cuda --models iresnet50 --batch-size 256

Prints a markdown table; `--json FILE` also saves the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--models", default="iresnet18,ressanet18",
                        help="comma-separated backbones (default iresnet18,ressanet18)")
    parser.add_argument("--baseline-batch", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32, help="train.py's batch size")
    parser.add_argument("--epochs", type=int, default=12, help="train.py epochs (2 steps each)")
    parser.add_argument("--steps", type=int, default=6, help="timed baseline steps")
    parser.add_argument("--with-compile", action="store_true",
                        help="also measure train.py --compile")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    return parser.parse_args(argv)


def baseline_images_per_s(name: str, batch: int, steps: int, device: torch.device) -> float:
    """A bare fp32 eager channels-last training step of the backbone (median of `steps`)."""
    from fmr.models import create_model
    from fmr.train.device import usable_cores

    if device.type == "cpu":
        torch.set_num_threads(usable_cores())
    torch.manual_seed(0)
    model = create_model(name).to(device).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 112, 112, device=device).contiguous(
        memory_format=torch.channels_last)
    times = []
    for i in range(steps + 1):
        started = time.perf_counter()
        loss = model(x).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first step allocates and picks kernels
            times.append(time.perf_counter() - started)
    del model, optimizer
    return batch / statistics.median(times)


def tiny_recordio(folder: Path, images: int = 64) -> Path:
    """`images` random 112x112 JPEG crops of two identities as train.rec + train.idx."""
    import cv2

    from fmr.data.recordio import write_image_set

    rng = np.random.default_rng(0)
    encoded = []
    for _ in range(images):
        crop = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
        encoded.append(cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    labels = [0] * (images // 2) + [1] * (images - images // 2)
    folder.mkdir(parents=True, exist_ok=True)
    write_image_set(folder / "train.rec", encoded, labels)
    return folder


def train_py_images_per_s(name: str, data: Path, out: Path, args, extra=()) -> tuple[float, dict]:
    """Median images/s of train.py's train events (the first left out), and its start event."""
    command = [sys.executable, str(ROOT / "train.py"), "--data", str(data), "--out", str(out),
               "--backbone", name, "--device", args.device, "--batch-size",
               str(args.batch_size), "--epochs", str(args.epochs), "--log-every", "4",
               "--val", "none", "--quiet", *extra]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"train.py failed ({' '.join(command)}):\n{result.stderr[-2000:]}")
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    speeds = [e["images_per_s"] for e in events if e["kind"] == "train"][1:]
    start = next(e for e in events if e["kind"] == "start")
    return statistics.median(speeds), start


def main(argv=None) -> int:
    args = parse_args(argv)
    from fmr.train.device import choose_policy, cpu_flags

    device = torch.device(args.device)
    policy = choose_policy(device)
    bf16 = [f for f in ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f") if f in cpu_flags()]
    print(f"device: {policy.summary()}; CPU flags of note: {', '.join(bf16) or 'none (AVX2)'}; "
          f"torch {torch.__version__}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = tiny_recordio(Path(tmp) / "tiny")
        for name in [m for m in args.models.split(",") if m]:
            base = baseline_images_per_s(name, args.baseline_batch, args.steps, device)
            speed, start = train_py_images_per_s(name, data, Path(tmp) / f"{name}-default", args)
            row = {"model": name, "baseline": base, "train_py": speed,
                   "policy": start.get("policy")}
            if args.with_compile:
                row["train_py_compile"], _ = train_py_images_per_s(
                    name, data, Path(tmp) / f"{name}-compile", args, ("--compile",))
            rows.append(row)
            print(f"{name}: baseline {base:.1f} img/s, train.py {speed:.1f} img/s"
                  + (f", train.py --compile {row['train_py_compile']:.1f} img/s"
                     if args.with_compile else ""), flush=True)
    header = ["model", "bare fp32 eager step", "train.py (defaults)", "ratio"]
    if args.with_compile:
        header += ["train.py --compile", "ratio"]
    print(f"\nTraining throughput, images/s ({policy.cpu or device}; baseline batch "
          f"{args.baseline_batch}, train.py batch {args.batch_size})\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = [row["model"], f"{row['baseline']:.1f}", f"{row['train_py']:.1f}",
                 f"{row['train_py'] / row['baseline']:.2f}x"]
        if args.with_compile:
            cells += [f"{row['train_py_compile']:.1f}",
                      f"{row['train_py_compile'] / row['baseline']:.2f}x"]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": policy.describe(),
                                               "torch": torch.__version__, "rows": rows},
                                              indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
