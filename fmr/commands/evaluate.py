"""`fmr eval`: verification accuracy, TAR at FAR, EER and charts on a pairs protocol, and 1:N
identification (rank-1/rank-5, DIR at FPIR) on its images; `--calibrate` sets thresholds on the
validation split and stores them in the model card."""

from __future__ import annotations

import argparse

from fmr.commands.common import add_backbone_arguments, add_multi_face_argument

HELP = "evaluate backbones on LFW pairs (unmasked or masked) and calibrate thresholds"
DESCRIPTION = """\
Embeds every image of the pairs once per backbone and condition (cached under --out/cache, so
a re-run or another condition reuses them), then writes into --out/<condition>/:
  metrics.json  k-fold accuracy over the folds of the pairs file (LFW protocol: each
                fold's threshold chosen on the other folds, mean +- std), TAR at FAR
                1e-1..1e-4 with thresholds, ROC, EER, score and angle distributions
                (degrees), how the calibrated threshold does, and 1:N identification
  report.html   interactive plotly charts (offline)
  roc.png, scores.png, angles.png
The listed pairs give the accuracy; TAR at FAR, ROC and EER use ALL pairs of the evaluation
images (millions of different-person pairs: the 1,500 listed ones cannot measure FAR 1e-3).
With --mask-second, every masked second photo (probe) is compared with every unmasked image
but its own (gallery), as in the masked face recognition challenge; --mask-first as well gives
masked-masked pairs. The k-fold accuracy needs two folds or more.

Identification (1:N, printed after the summary; --no-identification skips it) searches the
same images: an unmasked gallery of one photo per person (the first by path), probes in the
second photo's condition, people ranked by their best entry. Closed set: every person
enrolled (people with one photo are distractors), the other photos of people with two or more
are the probes: rank-1, rank-5, CMC to rank 20. Open set: half of the people with two or more
photos are enrolled (fixed by a hash of the name), their other photos are mated probes; every
photo of the others is a non-mated probe: DIR (right person first, score >= threshold) at
FPIR (share of non-mated probes with a score >= threshold) 1% and 10%, thresholds set on the
non-mated probes; and the FPIR and DIR of the card's calibrated threshold for FPIR 1% in a
gallery of that size (fmr.metrics.open_set_threshold; calibration_masked for masked probes).
On folds 6-10: 2,195 enrolled and 1,695 probes (closed), 406 enrolled, 833 mated and 2,651
non-mated probes (open). With a mask, nearly every photo is embedded masked (3,558 of 3,890
instead of the 2,310 second photos).

By default this runs the LFW View-2 pairs of folds 6-10 of the shared data, the project's
evaluation set. Its people are never used for training, tuning or calibration.

--calibrate first measures genuine and impostor scores on the validation split (training-side
identities: fmr.data.splits.shared_split), sets the threshold for --target-far and stores the
calibration in each checkpoint's model card (checkpoints/dlib_reference.json for dlib);
--calibrate-only stops there.

--closed-set PACK (with --checkpoint) measures closed-set identification instead: each
held-out photo of a pack with a held-out split (fmr prepare --preset original) is assigned
the nearest class centres by cosine, top-1 and top-5, unmasked, with a surgical mask (a
training style) and with KN95 from the warp renderer (a style and renderer training never
uses). The checkpoint must be a train.py export on that same pack: it carries the class
centres and the identity names (never shipped checkpoints). Masks are seeded with
--mask-seed, by default the run's own --val-mask-seed, so the numbers match its log.

examples:
  fmr eval --closed-set data/original-pack --checkpoint runs/r18h-seed0/best.safetensors
  fmr eval --backbone dlib --out runs/eval-dlib
  fmr eval --backbone dlib --mask-second surgical --mask-renderer warp --out runs/eval-dlib
  fmr eval --backbone iresnet,ressanet --mask-second KN95 --mask-renderer warp --out runs/eval
  fmr eval --checkpoint runs/iresnet18-x/best.safetensors --calibrate --out runs/eval-r18
  fmr eval --checkpoint runs/a/best.safetensors --checkpoint runs/b/best.safetensors --out runs/ab
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pairs", metavar="FILE", help="pairs file (default: the shared data's lfw/pairs.txt)"
    )
    parser.add_argument(
        "--root", metavar="DIR", help="images folder (default: images/ beside the pairs file)"
    )
    parser.add_argument(
        "--protocol", default="lfw", choices=("lfw",), help="pairs protocol (default lfw)"
    )
    parser.add_argument(
        "--folds",
        default="6-10",
        help="folds to evaluate: a range (6-10, the evaluation folds; the default), a list, or all",
    )
    add_backbone_arguments(parser, allow_list=True,
                           checkpoint_help="evaluate this checkpoint instead of --backbone")
    parser.add_argument(
        "--mask-second", metavar="STYLE", help="mask the second photo of each pair (probe)"
    )
    parser.add_argument(
        "--mask-first", metavar="STYLE", help="mask the first photo too (masked-masked)"
    )
    parser.add_argument(
        "--mask-renderer",
        default="fmr",
        choices=("fmr", "warp"),
        help="fmr: the renderer training uses; warp: a homography renderer training never sees",
    )
    parser.add_argument(
        "--mask-seed", type=int, default=None,
        help="seed of the per-image masks (default 0; --closed-set: the run's --val-mask-seed)",
    )
    # LFW's protocol: the labelled person is the centred face (LFW crops are centred on them),
    # and the published figures were measured so. --calibrate's validation photos use main.
    add_multi_face_argument(
        parser, default="center",
        note=" for the pairs: LFW centres its labelled person; --calibrate takes each "
        "validation photo's main face, as fmr verify does",
    )
    parser.add_argument("--out", metavar="DIR",
                        help="output folder (required; with --closed-set optional: it then "
                        "receives closed_set.json)")
    parser.add_argument(
        "--closed-set", metavar="PACK",
        help="closed-set top-1/top-5 of --checkpoint on the held-out photos of PACK (a pack "
        "from fmr prepare --preset original, the one the checkpoint was trained on)")
    parser.add_argument(
        "--calibrate", action="store_true", help="calibrate on the validation split first"
    )
    parser.add_argument("--calibrate-only", action="store_true", help="calibrate, store, and stop")
    parser.add_argument(
        "--target-far",
        type=float,
        default=1e-3,
        help="false accept rate the calibrated threshold is set for (default 1e-3)",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="also store the headline numbers in each backbone's model card (metrics; "
        "identification's under <key>/identification)",
    )
    parser.add_argument(
        "--no-identification", action="store_true",
        help="skip the 1:N identification metrics (closed-set rank-1/rank-5, open-set DIR at "
        "FPIR): with a mask, they embed nearly every image in the probe condition")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _specs(args) -> tuple[list[str], list[dict]]:
    """Backbone specs ("dlib" or checkpoint paths) without loading any model."""
    from fmr.verify.lookup import FAMILIES, find_checkpoint, missing_reason, resolve_checkpoint

    if args.checkpoint:
        specs = [str(resolve_checkpoint(file).resolve()) for file in args.checkpoint]
        return list(dict.fromkeys(specs)), []  # one entry per file, in the order given
    families = FAMILIES if args.backbone == "all" else tuple(args.backbone.split(","))
    specs, missing = [], []
    for family in families:
        reason = missing_reason(family)
        if reason is not None:
            if args.backbone != "all":
                find_checkpoint(family)  # raises the CheckpointError with the reason
            missing.append({"backbone": family, "reason": reason})
        else:
            specs.append("dlib" if family == "dlib" else str(find_checkpoint(family).resolve()))
    return specs, missing


def _distinguish_names(entries: list[dict]) -> None:
    """Two run exports of one architecture share a card name (two seeds, say): add each one's
    run folder to the name, so the report's rows and charts can be told apart."""
    from collections import Counter
    from pathlib import Path

    counts = Counter((entry["name"], entry["backbone"]) for entry in entries)
    for entry in entries:
        if counts[(entry["name"], entry["backbone"])] > 1:
            entry["name"] = f"{entry['name']} [{Path(entry['checkpoint']).parent.name}]"


def _canonical_style(style: str | None) -> str | None:
    """The mask style's canonical name ("n95" -> "N95"), "random", or None."""
    if style is None or style == "random":
        return style
    from fmr.errors import FmrError

    try:
        from fmr.masks import canonical_style
    except ImportError as exc:
        raise FmrError(
            "synthetic masks (fmr.masks) are not available in this installation"
        ) from exc
    return canonical_style(style)


def _calibrate(args, specs, out) -> None:
    import sys

    from fmr.eval.protocols import CALIBRATION_MASKS
    from fmr.metrics.calibration import calibrate
    from fmr.pipelines.embedding import validation_scores
    from fmr.settings import data_dir
    from fmr.verify.embedder import save_card_fields

    common = dict(cache_dir=out / "cache", workers=args.workers, progress=not args.quiet)
    plain, description = validation_scores(specs, data_dir(), **common)
    masked, masked_description = validation_scores(specs, data_dir(), masked=CALIBRATION_MASKS,
                                                   **common)
    for spec in specs:
        calibrations = {
            "calibration": calibrate(*plain[spec], args.target_far, measured_on=description),
            "calibration_masked": calibrate(*masked[spec], args.target_far,
                                            measured_on=masked_description),
        }
        card = save_card_fields(spec, **calibrations)
        for key, calibration in calibrations.items():
            which = " (a masked photo against an unmasked one)" if key.endswith("masked") else ""
            print(
                f"fmr eval: calibrated {spec}{which}: threshold "
                f"{calibration['threshold']:.4f} at FAR {calibration['far']:.2g} (FRR "
                f"{calibration['frr']:.2%}), inconclusive from "
                f"{calibration['inconclusive']['low']:.4f}; {calibration['n_genuine']:,} genuine "
                f"and {calibration['n_impostor']:,} impostor validation pairs; card: {card}",
                file=sys.stderr,
            )


def _record(report: dict, specs: list[str], condition_name: str) -> None:
    """Headline numbers into each card's metrics, under e.g. "lfw-folds6-10/unmasked"; the
    identification ones (rank-1, rank-5, DIR at FPIR) under "lfw-folds6-10/unmasked/
    identification"."""
    import sys

    from fmr.verify.embedder import save_metrics

    folds = report["protocol"]["folds"]
    key = f"{report['protocol']['name']}-folds{folds[0]}-{folds[-1]}/{condition_name}"
    for spec, entry in zip(specs, report["backbones"], strict=True):
        all_pairs = entry["all_pairs"]
        values = {
            "accuracy": entry["listed_pairs"]["kfold_accuracy"]["mean"],
            "accuracy_std": entry["listed_pairs"]["kfold_accuracy"]["std"],
            "tar_at_far": {
                f"{p['far_target']:g}": p["tar"] for p in all_pairs.get("tar_at_far", [])
            },
            "eer": all_pairs.get("eer"),
            "pairs": report["protocol"]["n_pairs"],
            "condition": report["condition"]["label"],
            "created": report["created"],
        }
        card = save_metrics(spec, key, values)
        print(f"fmr eval: recorded {key} in {card}", file=sys.stderr)
        identification = entry.get("identification")
        if identification:
            closed, open_set = identification["closed_set"], identification["open_set"]
            dir_at = {f"{p['fpir_target']:g}": p["dir"] for p in open_set.get("dir_at_fpir", [])}
            values = {
                "rank_1": closed.get("rank_1"),
                "rank_5": closed.get("rank_5"),
                "dir_at_fpir": dir_at,
                "gallery": identification["sizes"]["closed_set"]["n_gallery"],
                "probes": identification["sizes"]["closed_set"]["n_probes"],
                "open_set_gallery": identification["sizes"]["open_set"]["n_gallery"],
                "condition": f"gallery {identification['gallery_condition']}, probes "
                f"{identification['probe_condition']}",
                "created": report["created"],
            }
            card = save_metrics(spec, f"{key}/identification", values)
            print(f"fmr eval: recorded {key}/identification in {card}", file=sys.stderr)


def _identification_tables(pairs, sets, specs, first, second, gallery, wide_probe, common):
    """spec -> (unmasked gallery table, probe-condition table) for the identification
    protocol, reusing the run's tables where their condition matches (the cache makes any
    extra embedding of an image already seen cheap)."""
    import numpy as np

    from fmr.eval.protocols import Condition
    from fmr.pipelines.embedding import embed_images

    size = len(pairs.images)

    def embedded(rows, condition):
        part = embed_images([pairs.images[i] for i in rows], specs, condition, **common)
        return {spec: table.scatter(rows, size) for spec, table in part.items()}

    unmasked = Condition()
    if first == unmasked:
        id_gallery = gallery
    elif second == unmasked:  # a masked first photo only: every image is needed unmasked
        id_gallery = embedded(np.union1d(sets.gallery_rows, sets.probe_rows), unmasked)
    else:
        id_gallery = embedded(sets.gallery_rows, unmasked)
    if second == first:
        id_probe = gallery
    elif second == unmasked:
        id_probe = id_gallery
    else:
        id_probe = wide_probe
    return id_gallery, id_probe


def run(args: argparse.Namespace) -> int:
    import datetime
    import sys
    from pathlib import Path

    from fmr import __version__
    from fmr.errors import FmrError

    if args.closed_set:
        return _closed_set(args)
    if not args.out:
        raise FmrError("--out DIR is required (where the metrics and reports go)")
    if args.mask_seed is None:
        args.mask_seed = 0
    if not 0.0 < args.target_far < 1.0:
        raise FmrError(
            f"--target-far {args.target_far}: a false accept rate between 0 and 1, e.g. 1e-3"
        )
    args.mask_second = _canonical_style(args.mask_second)
    args.mask_first = _canonical_style(args.mask_first)
    out = Path(args.out)
    specs, missing = _specs(args)
    if not specs:
        raise FmrError("no backbone available: " + "; ".join(m["reason"] for m in missing))
    for m in missing:
        print(f"fmr eval: skipping {m['backbone']}: {m['reason']}", file=sys.stderr)
    if args.calibrate or args.calibrate_only:
        _calibrate(args, specs, out)
        if args.calibrate_only:
            return 0

    import numpy as np

    from fmr.eval.protocols import (
        Condition,
        identification_metrics,
        identification_sets,
        lfw_pairs,
        pair_metrics,
    )
    from fmr.eval.report import identification_table, summary_rows, summary_table, write_report
    from fmr.pipelines.embedding import embed_images
    from fmr.settings import data_dir
    from fmr.verify.embedder import load_backbone

    pairs_file = Path(args.pairs) if args.pairs else data_dir() / "lfw" / "pairs.txt"
    root = Path(args.root) if args.root else pairs_file.parent / "images"
    pairs = lfw_pairs(pairs_file, root, args.folds)
    if np.unique(pairs.fold).size < 2:
        raise FmrError(
            f"--folds {args.folds}: the k-fold accuracy needs at least two folds (each fold's "
            "threshold is chosen on the others), e.g. --folds 6-7"
        )
    first = (
        Condition(args.mask_first, args.mask_renderer, args.mask_seed)
        if args.mask_first
        else Condition()
    )
    second = (
        Condition(args.mask_second, args.mask_renderer, args.mask_seed)
        if args.mask_second
        else Condition()
    )
    common = {
        "cache_dir": out / "cache",
        "policy": args.multi_face,
        "workers": args.workers,
        "root": root,
        "progress": not args.quiet,
    }
    sets = None if args.no_identification else identification_sets(pairs)
    gallery = embed_images(pairs.images, specs, first, **common)
    wide_probe = None  # the probe condition's embeddings of every identification probe
    if second == first:
        probe = gallery
    else:
        # Probes: the second photos of the pairs (each once), in the second photo's condition;
        # identification searches more probes in it, embedded in the same pass.
        rows = np.unique(pairs.second)
        wanted = rows if sets is None else np.union1d(rows, sets.probe_rows)
        part = embed_images([pairs.images[i] for i in wanted], specs, second, **common)
        wide_probe = {spec: t.scatter(wanted, len(pairs.images)) for spec, t in part.items()}
        probe = {spec: table.restricted(rows) for spec, table in wide_probe.items()}
    if sets is not None:
        id_gallery, id_probe = _identification_tables(
            pairs, sets, specs, first, second, gallery, wide_probe, common
        )

    parts = [f"first-{first.key}"] if first.style else []
    parts += [f"second-{second.key}"] if second.style else []
    condition_name = "_".join(parts) or "unmasked"
    label = "unmasked" if not parts else f"first photo {first.label}, second photo {second.label}"
    entries = []
    for spec in specs:
        embedder = load_backbone(spec)
        entry = embedder.describe()
        entry.update(
            pair_metrics(
                pairs,
                gallery[spec],
                probe[spec],
                calibration=embedder.calibration,
                same_condition=second == first,
            )
        )
        entry["failed_images"] = {
            "gallery": gallery[spec].failures(pairs.images),
            "probe": probe[spec].failures(pairs.images) if second != first else [],
        }
        if sets is not None:
            which = "calibration" if second.style is None else "calibration_masked"
            entry["identification"] = {
                "gallery_condition": Condition().label,
                "probe_condition": second.label,
                **identification_metrics(
                    pairs, sets, id_gallery[spec], id_probe[spec],
                    calibration=getattr(embedder, which), calibration_name=which,
                ),
            }
        entries.append(entry)
    _distinguish_names(entries)
    report = {
        "fmr_version": __version__,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "fmr " + " ".join(sys.argv[1:])
        if sys.argv[0].endswith(("fmr", "__main__.py"))
        else "",
        "protocol": {
            "name": args.protocol,
            "description": pairs.description,
            "pairs_file": str(pairs_file),
            "root": str(root),
            "folds": sorted(int(f) for f in set(pairs.fold.tolist())),
            "n_pairs": int(pairs.same.size),
            "n_images": len(pairs.images),
            "multi_face": args.multi_face,
        },
        "condition": {
            "name": condition_name,
            "label": label,
            "first": first.to_dict(),
            "second": second.to_dict(),
        },
        "missing_backbones": missing,
        "backbones": entries,
    }
    report["summary"] = summary_rows(report)
    written = write_report(report, out / condition_name)
    if args.record:
        _record(report, specs, condition_name)
    print(summary_table(report))
    if sets is not None:
        print()
        print(identification_table(report))
    print(f"fmr eval: wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


def _closed_set(args) -> int:
    """`--closed-set PACK --checkpoint FILE`: see DESCRIPTION."""
    import json
    import sys
    from pathlib import Path

    import torch

    from fmr.data.pack import held_out_classes, is_pack, read_meta, read_validation
    from fmr.errors import FmrError
    from fmr.modelfile import load_model_file, read_class_centres
    from fmr.train.device import choose_policy
    from fmr.train.validation import ClosedSetConditions
    from fmr.verify.lookup import resolve_checkpoint

    if not args.checkpoint or len(args.checkpoint) > 1:
        raise FmrError("--closed-set needs one --checkpoint FILE: a train.py export "
                       "(runs/<run>/best.safetensors) trained on that pack")
    pack = Path(args.closed_set).expanduser()
    if not is_pack(pack):
        raise FmrError(f"{pack}: not an fmr pack (no meta.json from fmr prepare)")
    meta = read_meta(pack)
    validation = read_validation(pack)
    held_out = None if validation is None else held_out_classes(meta, validation.labels)
    if held_out is None:
        raise FmrError(
            f"{pack}: no held-out split (preset {meta.get('preset')!r}): closed-set accuracy "
            "needs held-out photos of the training identities (fmr prepare --preset original)")
    checkpoint = resolve_checkpoint(args.checkpoint[0])
    stored = read_class_centres(checkpoint)
    if stored is None:
        raise FmrError(
            f"{checkpoint}: carries no class centres; only train.py exports of a run on a pack "
            "with a held-out split (fmr prepare --preset original) have them, never shipped "
            "checkpoints")
    centres, names = stored
    if names != held_out.names:
        only_model = sorted(set(names) - set(held_out.names))
        only_pack = sorted(set(held_out.names) - set(names))
        detail = (f"{len(only_model)} only in the checkpoint (e.g. {only_model[:3]}), "
                  f"{len(only_pack)} only in the pack (e.g. {only_pack[:3]})"
                  if only_model or only_pack else "the same names in another order")
        raise FmrError(
            f"{checkpoint} was trained on {len(names)} identities that differ from the "
            f"{len(held_out.names)} classes of {pack} ({detail}); give the pack it was "
            "trained on")
    loaded = load_model_file(checkpoint)
    recipe = loaded.card.training.get("recipe", {})
    seed = args.mask_seed if args.mask_seed is not None else int(
        recipe.get("val_mask_seed", 0) if isinstance(recipe, dict) else 0)
    policy = choose_policy(torch.device("cpu"), "fp32", compile=False)
    crops = torch.from_numpy(validation.images).permute(0, 3, 1, 2).contiguous()
    conditions = ClosedSetConditions(
        crops, seed, policy.device,
        report=lambda message: print(f"fmr eval: {message}", file=sys.stderr))
    result = conditions.accuracy(loaded.model, centres, held_out, policy)
    result.update(checkpoint=str(checkpoint), pack=str(pack), mask_seed=seed,
                  architecture=loaded.card.architecture)
    print(f"closed-set accuracy of {checkpoint} ({loaded.card.architecture}) on {pack}: "
          f"{result['images']} held-out photos of {result['identities']} identities, "
          f"{result['classes']} class centres, mask seed {seed}")
    print(f"{'condition':<12}{'top-1':>9}{'top-5':>9}")
    for condition in ("unmasked", "surgical", "kn95_warp"):
        if condition in result:
            row = result[condition]
            print(f"{condition:<12}{row['top1']:>9.2%}{row['top5']:>9.2%}")
        elif condition in result.get("skipped", {}):
            print(f"{condition:<12}  skipped: {result['skipped'][condition]}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "closed_set.json").write_text(json.dumps(result, indent=1) + "\n")
        print(f"fmr eval: wrote {out / 'closed_set.json'}", file=sys.stderr)
    return 0
