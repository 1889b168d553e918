"""End-to-end time to verify one photo pair: load, detect, align, embed with each backbone, compare.

    .venv/bin/python benchmarks/verify.py                  # median of 20, IResNet + ResSaNet
    .venv/bin/python benchmarks/verify.py --depth 34 --backbones iresnet,ressanet,dlib
    .venv/bin/python benchmarks/verify.py --quick          # 3 repeats, to check it runs

Uses the checkpoints `fmr verify --backbone iresnet/ressanet` would use; where a family has
none yet, a random-init model of `--depth` stands in (same architecture, same cost). Every
repeat starts from the image files (nothing cached but the loaded models and the detector), as
`fmr.verify.verify_pair` does for the app. Prints a markdown table of per-stage medians.
Target: under 0.5 s per pair with both backbones on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fmr.settings import data_dir  # noqa: E402

TARGET_SECONDS = 0.5


def load_embedders(families: list[str], depth: int, scratch: Path) -> list:
    """Embedders per family: the trained checkpoint when there is one, else random-init."""
    from fmr.errors import CheckpointError
    from fmr.verify import load_backbone
    from fmr.verify.lookup import find_checkpoint

    embedders = []
    for family in families:
        try:
            path = find_checkpoint(family)
        except CheckpointError:
            import torch

            from fmr.modelfile import ModelCard, save_model_file
            from fmr.models import create_model

            torch.manual_seed(0)
            name = f"{family}{depth}"
            card = ModelCard(name=f"{name}-random-init", architecture=name)
            path = save_model_file(scratch / name, create_model(name).eval(), card, "fp16")
        embedders.append(load_backbone(str(path) if family != "dlib" else "dlib"))
    return embedders


def verify_once(path_a: Path, path_b: Path, embedders, times: dict[str, list[float]]) -> None:
    """One full pair, timing each stage into `times`."""
    from fmr.faces import detect_faces, load_image, select_face
    from fmr.verify import compare

    t0 = time.perf_counter()
    images = [load_image(path_a), load_image(path_b)]
    t1 = time.perf_counter()
    faces = [select_face(detect_faces(image), image.shape) for image in images]
    t2 = time.perf_counter()
    times["load"].append(t1 - t0)
    times["detect"].append(t2 - t1)
    start = t2
    for embedder in embedders:
        # align + flip-averaged embedding of both faces in one batch (4 crops)
        a, b = embedder.embed_faces(list(zip(images, faces, strict=True)))
        compare(a, b, embedder)
        now = time.perf_counter()
        times[f"embed+compare {embedder.name}"].append(now - start)
        start = now
    times["total"].append(start - t0)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    photos = data_dir() / "photos"
    parser.add_argument(
        "--a", type=Path, default=photos / "obama" / "obama.jpg", help="first photo"
    )
    parser.add_argument(
        "--b", type=Path, default=photos / "obama" / "obama2.jpg", help="second photo"
    )
    parser.add_argument("--backbones", default="iresnet,ressanet", help="comma-separated families")
    parser.add_argument(
        "--depth", type=int, default=18, help="depth of stand-in random models (18)"
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repeats first (default 2)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--quick", action="store_true", help="3 repeats, 1 warm-up: a smoke check")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.warmup = 3, 1
    for path in (args.a, args.b):
        if not path.is_file():
            parser.error(f"{path} not found (set FMR_DATA_DIR or pass --a/--b)")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        embedders = load_embedders(args.backbones.split(","), args.depth, Path(scratch))
        times: dict[str, list[float]] = {"load": [], "detect": []}
        for embedder in embedders:
            times[f"embed+compare {embedder.name}"] = []
        times["total"] = []
        for _ in range(args.warmup):
            verify_once(args.a, args.b, embedders, {k: [] for k in times})
        for _ in range(args.repeats):
            verify_once(args.a, args.b, embedders, times)

    print(
        f"verify one pair end to end: {args.a.name} + {args.b.name}; {args.repeats} repeats "
        f"after {args.warmup} warm-up; {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}"
    )
    print()
    print("| stage | median ms | min ms | max ms |")
    print("|---|---|---|---|")
    for stage, values in times.items():
        ms = [v * 1000 for v in values]
        print(f"| {stage} | {statistics.median(ms):.1f} | {min(ms):.1f} | {max(ms):.1f} |")
    median_total = statistics.median(times["total"])
    verdict = "meets" if median_total < TARGET_SECONDS else "misses"
    print()
    print(f"median total {median_total:.3f} s: {verdict} the {TARGET_SECONDS} s target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
