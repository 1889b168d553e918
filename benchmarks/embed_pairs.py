"""LFW pair accuracy of `fmr embed` outputs: which face `--multi-face` takes, measured end to end.

    .venv/bin/python benchmarks/embed_pairs.py list --folds 1-5 > photos.txt
    fmr embed $(cat photos.txt) --backbone dlib --workers 1 --out default.npz
    fmr embed $(cat photos.txt) --backbone dlib --workers 1 --multi-face center --out center.npz
    .venv/bin/python benchmarks/embed_pairs.py score --folds 1-5 default.npz center.npz

`list` prints the photos of the pairs of the chosen folds of ../shared/data/lfw/pairs.txt (or
FMR_DATA_DIR), one a line. `score` prints, for each .npz, the LFW-protocol accuracy over those
pairs (each pairs.txt fold scored at the threshold chosen on the other folds; cosine of the
embeddings, -1 where a photo failed), and with two files the photos whose embeddings differ.
Folds 1-5 are training-side; never tune on folds 6-10.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _folds(text: str) -> set[int]:
    first, _, last = text.partition("-")
    return set(range(int(first), int(last or first) + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("list", "score"))
    parser.add_argument("files", nargs="*", metavar="FILE.npz")
    parser.add_argument("--folds", default="1-5", help="pairs.txt folds (default 1-5)")
    args = parser.parse_args()

    from fmr.data.lfw import read_pairs
    from fmr.metrics.verification import kfold_accuracy
    from fmr.settings import data_dir

    folds = _folds(args.folds)
    root = data_dir() / "lfw"
    if folds & {6, 7, 8, 9, 10} and args.action == "score":
        parser.error("folds 6-10 are the evaluation set: measure with fmr eval, not here")
    pairs = [p for p in read_pairs(root / "pairs.txt") if p.fold in folds]
    images = root / "images"
    if args.action == "list":
        print("\n".join(sorted({str(x) for p in pairs for x in p.paths(images)})))
        return
    tables = []
    for file in args.files:
        with np.load(file) as data:
            index = {str(path): i for i, path in enumerate(data["paths"])}
            embeddings, ok = data["embeddings"], data["ok"]
            scores = []
            for pair in pairs:
                a, b = (index[str(x)] for x in pair.paths(images))
                scores.append(float(embeddings[a] @ embeddings[b]) if ok[a] and ok[b] else -1.0)
            result = kfold_accuracy(np.array(scores), np.array([p.same for p in pairs]),
                                    folds=np.array([p.fold for p in pairs]))
            tables.append((data["paths"], embeddings))
        print(f"{file}: {int(ok.sum())} of {ok.size} photos embedded; accuracy over "
              f"{len(pairs):,} pairs of folds {args.folds}: {100 * result.mean:.2f}% "
              f"+- {100 * result.std:.2f}")
    if len(tables) == 2:
        (paths, first), (other_paths, second) = tables
        assert list(map(str, paths)) == list(map(str, other_paths)), "the files list other photos"
        differ = np.flatnonzero(np.abs(first - second).max(axis=1) > 1e-6)
        names = ", ".join(Path(str(paths[i])).name for i in differ[:20])
        print(f"{len(differ)} photos embedded differently: {names}")


if __name__ == "__main__":
    main()
