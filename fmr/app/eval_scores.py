"""Evaluation-pair scores the app ships: one small JSON file per backbone in assets/eval_scores/.

The ArcFace angles page draws genuine and impostor distributions, a live threshold table and
ROC curves for each backbone on the evaluation pairs (LFW View-2 folds 6-10), unmasked and with
the second photo masked. Those numbers come from `fmr eval --out DIR`; this module turns such
a folder into compact files the repository can carry (tens of KB each):

    fmr eval --backbone dlib --out runs/eval-dlib
    fmr eval --backbone dlib --mask-second surgical --mask-renderer warp --out runs/eval-dlib
    python -m fmr.app.eval_scores runs/eval-dlib          # writes assets/eval_scores/dlib.json

Per condition a file keeps the cosine scores of the listed pairs (1,500 same-person and 1,500
different-person pairs, exact, rounded to 1e-5), and from metrics.json the k-fold accuracy and
TAR at FAR over all pairs of the evaluation images (millions of impostor pairs: the only way
to measure FAR 1e-4). The listed scores are re-read from the embedding cache `fmr eval` left in
DIR/cache; nothing is recomputed when the cache is complete.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmr.settings import REPO_ROOT

FORMAT_VERSION = 1
SCORE_DECIMALS = 5


def scores_dir() -> Path:
    """Where the app looks for score files (assets/eval_scores/ in the repository)."""
    return REPO_ROOT / "assets" / "eval_scores"


@dataclass(frozen=True)
class ConditionScores:
    """Scores of one backbone in one condition. genuine, impostor: (G,), (I,) float64 cosine
    scores of the listed pairs whose faces were found. summary: k-fold accuracy, all-pairs TAR
    at FAR and counts, as stored."""

    key: str
    label: str
    genuine: np.ndarray
    impostor: np.ndarray
    summary: dict

    @property
    def masked(self) -> bool:
        return self.key != "unmasked"


@dataclass(frozen=True)
class BackboneScores:
    """Every condition of one backbone (the contents of one score file)."""

    backbone: str
    name: str
    protocol: str
    source: str
    conditions: dict[str, ConditionScores]
    protocol_short: str = ""

    @property
    def pair_count(self) -> str:
        """ "1,500 same-person and 1,500 different-person pairs" (of the first condition)."""
        first = next(iter(self.conditions.values()))
        return (f"{first.genuine.size:,} same-person and {first.impostor.size:,} "
                "different-person pairs")


def load_scores(folder: Path | None = None) -> dict[str, BackboneScores]:
    """backbone family -> its scores, for every readable file in `folder` (default
    `scores_dir()`). Unreadable files are skipped; `score_file_problems` says why."""
    folder = scores_dir() if folder is None else Path(folder)
    found: dict[str, BackboneScores] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            scores = _parse(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        found[scores.backbone] = scores
    return found


def score_file_problems(folder: Path | None = None) -> list[str]:
    """One line per score file that cannot be read (for a note in the page)."""
    folder = scores_dir() if folder is None else Path(folder)
    problems = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            _parse(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"{path}: not a score file fmr can read ({exc})")
    return problems


def _parse(data: dict) -> BackboneScores:
    if data.get("format") != FORMAT_VERSION:
        raise ValueError(f"format {data.get('format')!r}, expected {FORMAT_VERSION}")
    conditions = {}
    for key, entry in data["conditions"].items():
        conditions[key] = ConditionScores(
            key=key,
            label=str(entry["label"]),
            genuine=np.asarray(entry["genuine"], dtype=np.float64),
            impostor=np.asarray(entry["impostor"], dtype=np.float64),
            summary=dict(entry.get("summary", {})),
        )
    if not conditions:
        raise ValueError("no conditions")
    return BackboneScores(
        backbone=str(data["backbone"]),
        name=str(data.get("name", data["backbone"])),
        protocol=str(data.get("protocol", "")),
        source=str(data.get("source", "")),
        conditions=conditions,
        protocol_short=str(data.get("protocol_short") or data.get("protocol", "")),
    )


# --------------------------------------------------------------------------------------------
# Building score files from `fmr eval --out DIR`
# --------------------------------------------------------------------------------------------


def folds_label(folds) -> str:
    """[6, 7, 8, 9, 10] -> "6-10"; [1, 3] -> "1, 3"."""
    folds = sorted(int(f) for f in folds)
    if folds and folds == list(range(folds[0], folds[-1] + 1)) and len(folds) > 2:
        return f"{folds[0]}-{folds[-1]}"
    return ", ".join(map(str, folds))


def condition_label(condition: dict) -> str:
    """A short label for a `fmr eval` condition: "unmasked", "one photo masked: surgical,
    warp renderer", "both photos masked: ..."."""

    def mask(side: dict) -> str:
        return f"{side['style']}, {side.get('renderer', 'fmr')} renderer"

    first, second = condition.get("first", {}), condition.get("second", {})
    if not first.get("masked") and not second.get("masked"):
        return "unmasked"
    if first.get("masked") and second.get("masked"):
        if mask(first) == mask(second):
            return f"both photos masked: {mask(first)}"
        return f"both photos masked: {mask(first)} / {mask(second)}"
    return f"one photo masked: {mask(first if first.get('masked') else second)}"


def _condition(entry: dict):
    from fmr.eval.protocols import Condition

    if not entry.get("masked"):
        return Condition()
    return Condition(entry["style"], entry.get("renderer", "fmr"), int(entry.get("seed", 0)))


def _spec(entry: dict) -> str:
    """The backbone spec `fmr eval` cached embeddings under ("dlib" or the checkpoint path)."""
    return "dlib" if entry["backbone"] == "dlib" else str(entry["checkpoint"])


def _summary(entry: dict) -> dict:
    listed, all_pairs = entry["listed_pairs"], entry.get("all_pairs", {})
    return {
        "kfold_accuracy": {
            "mean": listed["kfold_accuracy"]["mean"],
            "std": listed["kfold_accuracy"]["std"],
        },
        "listed_failed": listed.get("n_failed", 0),
        "all_pairs": {
            key: all_pairs[key]
            for key in ("n_images", "n_identities", "n_genuine", "n_impostor", "eer", "tar_at_far")
            if key in all_pairs
        }
        | (
            # the ROC at 10 points per decade of FAR, to 4 significant digits
            {"roc": {k: [float(f"{v:.4g}") for v in all_pairs["roc"][k]] for k in ("far", "tar")}}
            if "roc" in all_pairs
            else {}
        ),
    }


def build_scores(
    eval_dir: str | Path, progress: bool = True, checkpoints: list[str] | None = None
) -> dict[str, dict]:
    """Score-file contents (backbone family -> JSON dict) from an `fmr eval --out` folder.

    Reads every `<condition>/metrics.json` in `eval_dir` and the embedding cache beside them.
    `checkpoints` (paths, or "dlib") keeps only those backbones of a run that evaluated several
    exports of one family; each family must end with one. Raises `DataError` when the folder
    holds no metrics or a family is left with several checkpoints.
    """
    from fmr.errors import DataError
    from fmr.eval.protocols import lfw_pairs
    from fmr.pipelines.embedding import embed_images

    eval_dir = Path(eval_dir)
    reports = sorted(eval_dir.glob("*/metrics.json"))
    if not reports:
        raise DataError(
            f"{eval_dir}: no <condition>/metrics.json inside; run `fmr eval --out {eval_dir}` first"
        )
    keep = None
    if checkpoints is not None:
        keep = {c if c == "dlib" else str(Path(c).resolve()) for c in checkpoints}
    files: dict[str, dict] = {}
    for report_path in reports:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        protocol = report["protocol"]
        pairs = lfw_pairs(
            protocol["pairs_file"], protocol["root"], [int(f) for f in protocol["folds"]]
        )
        first = _condition(report["condition"]["first"])
        second = _condition(report["condition"]["second"])
        entries = [e for e in report["backbones"] if keep is None or _spec(e) in keep]
        families = [entry["backbone"] for entry in entries]
        repeated = sorted({family for family in families if families.count(family) > 1})
        if repeated:
            raise DataError(
                f"{report_path}: several {' and '.join(repeated)} checkpoints; choose one per"
                " family with --checkpoint"
            )
        for entry in entries:
            spec = _spec(entry)
            common = {
                "cache_dir": eval_dir / "cache",
                "policy": protocol.get("multi_face", "center"),
                "root": pairs.root,
                "progress": progress,
            }
            # The same images `fmr eval` embedded (so the cache has them all): every image in
            # the first photo's condition, the second photos in the second's.
            gallery = embed_images(pairs.images, [spec], first, **common)[spec]
            if second == first:
                probe = gallery
            else:
                rows = np.unique(pairs.second)
                part = embed_images([pairs.images[i] for i in rows], [spec], second, **common)
                probe = part[spec].scatter(rows, len(pairs.images))
            ok = gallery.ok[pairs.first] & probe.ok[pairs.second]
            scores = np.einsum(
                "ij,ij->i", gallery.embeddings[pairs.first], probe.embeddings[pairs.second]
            ).astype(np.float64)
            genuine = np.round(scores[pairs.same & ok], SCORE_DECIMALS)
            impostor = np.round(scores[~pairs.same & ok], SCORE_DECIMALS)
            family = entry["backbone"]
            data = files.setdefault(
                family,
                {
                    "format": FORMAT_VERSION,
                    "backbone": family,
                    "name": entry.get("name", family),
                    "architecture": entry.get("architecture", ""),
                    "protocol": protocol["description"],
                    "protocol_short": f"LFW folds {folds_label(protocol['folds'])}",
                    "source": f"fmr eval --out {eval_dir} (fmr {report.get('fmr_version', '?')},"
                    f" {report.get('created', '')})",
                    "conditions": {},
                },
            )
            data["conditions"][report["condition"]["name"]] = {
                "label": condition_label(report["condition"]),
                "genuine": genuine.tolist(),
                "impostor": impostor.tolist(),
                "summary": _summary(entry),
            }
    if not files:
        raise DataError(f"{eval_dir}: none of the backbones asked for was evaluated there")
    for data in files.values():  # unmasked first, then the masked conditions by name
        data["conditions"] = dict(
            sorted(data["conditions"].items(), key=lambda item: (item[0] != "unmasked", item[0]))
        )
    return files


def write_scores(files: dict[str, dict], out_dir: str | Path | None = None) -> list[Path]:
    """Write each backbone's score file as `<out_dir>/<family>.json`; returns the paths."""
    out_dir = scores_dir() if out_dir is None else Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for family, data in files.items():
        path = out_dir / f"{family}.json"
        path.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fmr.app.eval_scores",
        description="Turn `fmr eval --out DIR` results into the app's score files "
        "(assets/eval_scores/<backbone>.json).",
    )
    parser.add_argument("eval_dir", help="the --out folder of one or more `fmr eval` runs")
    parser.add_argument("--out", help=f"output folder (default {scores_dir()})")
    parser.add_argument(
        "--checkpoint",
        action="append",
        metavar="FILE",
        help="only this backbone of the run (a checkpoint path, or dlib); repeat it. Needed "
        "when the run evaluated several checkpoints of one family",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    from fmr.errors import FmrError

    try:
        written = write_scores(
            build_scores(args.eval_dir, not args.quiet, args.checkpoint), args.out
        )
    except FmrError as exc:
        print(f"fmr.app.eval_scores: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
