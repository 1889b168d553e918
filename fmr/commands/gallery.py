"""`fmr gallery`: enrol people from photo folders, then find who a photo shows (1:N)."""

from __future__ import annotations

import argparse

from fmr.commands.common import BACKBONE_FAMILIES, add_multi_face_argument

HELP = "find a person: enrol people in a gallery and search photos in it (1:N)"
DESCRIPTION = """\
A gallery is a folder holding the face embeddings of enrolled people, who each one is, the
photo it came from, the model that made them and a FAISS search index (exact up to 100,000
entries, IVF above). Sub-commands:

  build   enrol a folder with one sub-folder of photos per person (FOLDER/<person>/*.jpg)
  add     enrol more photos of one person
  remove  take a person out
  search  the people most like each photo, and a decision: that person, or not in the gallery
  info    what a gallery holds

The decision is open-set: the best match counts only when its similarity reaches the threshold
that keeps the false positive identification rate (FPIR: how often someone who is not enrolled
is taken for someone who is) at --fpir, for a gallery of this many entries, read from the
model's calibration on validation people. A probe that wears a mask (found by the mask
detector, or a synthetic one drawn with --mask-probe) is decided with the masked calibration.

A gallery is searched and extended with the model it was built with, always; another one is
refused, since embeddings of different models do not compare.

examples:
  fmr gallery build people/ --out my_gallery
  fmr gallery search my_gallery who.jpg
  fmr gallery search my_gallery a.jpg b.jpg --top 3 --fpir 0.001 --json
  fmr gallery add my_gallery new_photos/ --person Ada_Lovelace
  fmr gallery remove my_gallery --person Ada_Lovelace
Run `fmr gallery COMMAND --help` for the options of each.
"""

BUILD_DESCRIPTION = """\
Enrol every photo of FOLDER, which holds one sub-folder per person named after them
(FOLDER/<person>/*.jpg, sub-folders searched recursively, as `fmr prepare` reads identities):
each photo is detected, aligned and embedded (batched, --workers processes). Photos that fail
(unreadable, no face) are left out and listed in GALLERY/manifest.csv (input, person, status,
reason, entry_id) with every other photo; the command prints how many.

The model: --backbone dlib-mask by default (dlib's descriptor for unmasked faces and its mask
fine-tune for masked ones; dlib when dlib-mask's checkpoint or the mask detector is missing).
--index auto picks exact search up to 100,000 entries and IVF above; the gallery keeps the
choice right as it grows and shrinks.

GALLERY must be a new or empty folder, or a gallery (rebuilt: its entries are replaced).
Exit status 0 when at least one photo was enrolled; 2 when none could be, or on a user error.

examples:
  fmr gallery build people/ --out my_gallery
  fmr gallery build people/ --out my_gallery --backbone iresnet --workers 2
"""

ADD_DESCRIPTION = """\
Enrol photos (files, or folders searched recursively) as PERSON, with the gallery's own model.
A photo already enrolled as PERSON is skipped. Failures are printed and added to the gallery's
manifest.csv. Exit status 0 when at least one photo was added, 2 when none could be.

example:
  fmr gallery add my_gallery ada1.jpg ada_holiday/ --person Ada_Lovelace
"""

REMOVE_DESCRIPTION = """\
Take every entry of PERSON out of the gallery (an error, naming a few enrolled people, when
there is no such person).

example:
  fmr gallery remove my_gallery --person Ada_Lovelace
"""

SEARCH_DESCRIPTION = """\
For each photo: its face (the main one, or as --multi-face says), the --top people most like
it (each by their best photo: similarity, angle between the embeddings), and the decision: the
best person if their similarity reaches the threshold for --fpir in this gallery, else "not in
the gallery". The threshold, the FPIR it is set for, and the calibration used (masked when the
probe wears a mask, found or drawn with --mask-probe) are printed with it.

--json prints one JSON object per photo and line:
  {"probe", "decision" (a name or null), "matches": [{"person", "photo", "similarity",
   "angle_deg", "entry_id"}], "threshold", "fpir", "comparison_far", "measurable",
   "gallery_size", "calibration" ("unmasked" or "masked"), "calibration_reason",
   "mask_probability", "mask"}
A photo that cannot be searched (unreadable, no face) gets "decision": null, "matches": [] and
"error"; the other photos are still searched.

Exit status: 0 when at least one photo was searched (whatever the decisions); 2 when none
could be (each one's error is still printed), or on a user error.

examples:
  fmr gallery search my_gallery who.jpg
  fmr gallery search my_gallery crowd/*.jpg --top 3 --json
  fmr gallery search my_gallery who.jpg --mask-probe surgical
"""

INFO_DESCRIPTION = """\
The gallery's model, index, number of entries and people, and each person's number of photos.

example:
  fmr gallery info my_gallery --json
"""


def _model_arguments(parser: argparse.ArgumentParser, *, building: bool) -> None:
    if building:
        help_backbone = ("model family: the shipped (or newest trained) checkpoint, or dlib's "
                         "reference (default: dlib-mask when available, else dlib)")
        help_checkpoint = "use this checkpoint instead of --backbone"
    else:
        help_backbone = ("model family; must be the gallery's own model (the default: the one "
                         "it was built with)")
        help_checkpoint = "a checkpoint file; must hold the weights the gallery was built with"
    parser.add_argument("--backbone", choices=BACKBONE_FAMILIES, help=help_backbone)
    parser.add_argument("--checkpoint", metavar="FILE", help=help_checkpoint)


def _subparser(sub, name: str, help_text: str, description: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_text, description=description,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="gallery_command", metavar="COMMAND")

    build = _subparser(sub, "build", "enrol a folder of people (one sub-folder per person)",
                       BUILD_DESCRIPTION)
    build.add_argument("folder", metavar="FOLDER", help="one sub-folder of photos per person")
    build.add_argument("--out", required=True, metavar="GALLERY", help="the gallery folder")
    _model_arguments(build, building=True)
    add_multi_face_argument(build)
    build.add_argument("--workers", type=int, default=1,
                       help="parallel worker processes (default 1)")
    build.add_argument("--index", choices=("auto", "exact", "ivf"), default="auto",
                       help="search index: exact, IVF (approximate, for large galleries), or "
                       "auto: exact up to 100,000 entries (default auto)")
    build.add_argument("--quiet", action="store_true", help="no progress bar")

    add = _subparser(sub, "add", "enrol more photos of one person", ADD_DESCRIPTION)
    add.add_argument("gallery", metavar="GALLERY", help="the gallery folder")
    add.add_argument("paths", nargs="+", metavar="PATH", help="photos or folders of photos")
    add.add_argument("--person", required=True, metavar="NAME", help="who the photos show")
    _model_arguments(add, building=False)
    add_multi_face_argument(add)
    add.add_argument("--workers", type=int, default=1,
                     help="parallel worker processes (default 1)")
    add.add_argument("--quiet", action="store_true", help="no progress bar")

    remove = _subparser(sub, "remove", "take a person out of a gallery", REMOVE_DESCRIPTION)
    remove.add_argument("gallery", metavar="GALLERY", help="the gallery folder")
    remove.add_argument("--person", required=True, metavar="NAME", help="who to remove")

    search = _subparser(sub, "search", "who is in these photos? top matches and a decision",
                        SEARCH_DESCRIPTION)
    search.add_argument("gallery", metavar="GALLERY", help="the gallery folder")
    search.add_argument("photos", nargs="+", metavar="PHOTO", help="photos to search")
    search.add_argument("--top", type=int, default=5,
                        help="how many people to list per photo (default 5)")
    search.add_argument("--fpir", type=float, default=0.01,
                        help="false positive identification rate the decision is set for: the "
                        "share of people not enrolled who would be taken for someone enrolled "
                        "(default 0.01)")
    search.add_argument("--mask-probe", metavar="STYLE",
                        help="draw a synthetic mask of STYLE on each photo first")
    search.add_argument("--mask-renderer", default="fmr", choices=("fmr", "warp"),
                        help="mask renderer for --mask-probe (default fmr)")
    search.add_argument("--seed", type=int, default=0,
                        help="seed for synthetic masks (default 0)")
    _model_arguments(search, building=False)
    add_multi_face_argument(search)
    search.add_argument("--json", action="store_true",
                        help="one JSON object per photo and line on stdout")

    info = _subparser(sub, "info", "what a gallery holds", INFO_DESCRIPTION)
    info.add_argument("gallery", metavar="GALLERY", help="the gallery folder")
    info.add_argument("--json", action="store_true", help="one JSON object on stdout")


# ----------------------------------------------------------------------------- helpers
def _say(message: str) -> None:
    import sys

    print(f"fmr gallery: {message}", file=sys.stderr)


def _write_manifest(path, rows, *, append: bool = False) -> None:
    """GALLERY/manifest.csv: input, person, status, reason, entry_id (one row per photo)."""
    import csv
    import io

    from fmr.files import write_text_atomically

    columns = ("input", "person", "status", "reason", "entry_id")
    old = path.read_text(encoding="utf-8") if append and path.is_file() else ""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if not old:
        writer.writerow(columns)
    for row in rows:
        writer.writerow([row.get(c, "") for c in columns])
    write_text_atomically(path, old + buffer.getvalue())


def _index_line(gallery) -> str:
    return f"index: {gallery.choice.reason}"


def _embed(items, embedder, args, desc: str):
    import contextlib
    import sys

    from fmr.gallery.photos import embed_paths

    with contextlib.redirect_stdout(sys.stderr):  # libraries may print; stdout stays ours
        return embed_paths([item.path for item in items], embedder, policy=args.multi_face,
                           workers=max(1, args.workers), progress=not args.quiet,
                           desc=desc, names=[item.given for item in items])


def _failures(items, table, limit: int = 3) -> str:
    reasons = [r for r, ok in zip(table.reasons, table.ok, strict=True) if not ok]
    shown = "; ".join(reasons[:limit])
    return shown + (f"; and {len(reasons) - limit} more" if len(reasons) > limit else "")


def _photo_path(item) -> str:
    import os

    return os.path.abspath(item.given)


# ----------------------------------------------------------------------------- build
def _build(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from fmr.errors import DataError, FmrError
    from fmr.gallery.photos import backbone_info, default_backbone, person_folders
    from fmr.gallery.store import MANIFEST_FILE, Gallery, gallery_owned, is_gallery
    from fmr.verify import load_backbone

    out = Path(args.out)
    replacing = None
    if out.exists():
        if not out.is_dir():
            raise FmrError(f"--out {out}: is a file; name a new folder for the gallery")
        if is_gallery(out):
            try:
                replacing = len(Gallery.load(out))
            except DataError:
                replacing = "a damaged gallery"
        elif any(not gallery_owned(path.name) for path in out.iterdir()):
            raise FmrError(f"--out {out}: a folder that is not empty and holds no gallery; name "
                           "a new or empty folder (nothing in it was changed)")
    people, loose = person_folders(args.folder)
    if loose:
        _say(f"{len(loose)} photo(s) lie directly in {args.folder}, in no person's sub-folder: "
             f"left out (e.g. {loose[0].name})")
    empty = [name for name, items in people.items() if not items]
    if empty:
        _say(f"{len(empty)} sub-folder(s) without photos: {', '.join(empty[:5])}")
    items = [(name, item) for name, found in people.items() for item in found]
    if not items:
        raise DataError(f"{args.folder}: no photos in its sub-folders (FOLDER/<person>/*.jpg)")
    if args.checkpoint:
        spec = args.checkpoint
    elif args.backbone:
        spec = args.backbone
    else:
        spec, why = default_backbone()
        _say(f"model: {why} (choose another with --backbone)")
    embedder = load_backbone(spec)
    table = _embed([item for _, item in items], embedder, args, "fmr gallery build")
    ok = np.asarray(table.ok, bool)
    if not ok.any():
        raise DataError(f"{args.folder}: no face could be enrolled from its {len(items)} photos "
                        f"({_failures(items, table)}); nothing written")
    rows = np.flatnonzero(ok)
    gallery = Gallery.from_arrays(
        table.embeddings[rows], [items[i][0] for i in rows],
        [_photo_path(items[i][1]) for i in rows], backbone_info(embedder),
        mask_probability=np.asarray(table.mask_probability, np.float32)[rows],
        index_kind=args.index,
    )
    gallery.save(out)
    entry = dict(zip(rows.tolist(), gallery.ids.tolist(), strict=True))
    _write_manifest(out / MANIFEST_FILE, [
        {"input": _photo_path(item), "person": name, "status": "ok" if ok[i] else "failed",
         "reason": table.reasons[i], "entry_id": entry.get(i, "")}
        for i, (name, item) in enumerate(items)
    ])
    failed = int((~ok).sum())
    enrolled_people = len(set(gallery.people))
    if replacing is not None:
        _say(f"replaced the gallery in {out} (it had {replacing} entries)"
             if isinstance(replacing, int) else f"replaced {replacing} in {out}")
    _say(f"{len(gallery)} photos of {enrolled_people} people enrolled, {failed} failed, "
         f"{len(items)} photos; manifest: {out / MANIFEST_FILE}")
    missing = sorted({name for name, _ in items} - set(gallery.people))
    if missing:
        _say(f"{len(missing)} person(s) with no usable photo, not enrolled: "
             f"{', '.join(missing[:5])}")
    _say(f"model: {gallery.backbone.describe()}; {_index_line(gallery)}")
    _say(f"gallery: {out}")
    return 0


# ----------------------------------------------------------------------------- add, remove
def _add(args: argparse.Namespace) -> int:
    import numpy as np

    from fmr.batch import collect_inputs
    from fmr.errors import FmrError
    from fmr.gallery.photos import gallery_embedder
    from fmr.gallery.store import MANIFEST_FILE, Gallery, check_person_name

    gallery = Gallery.load(args.gallery)
    person = check_person_name(args.person)
    embedder = gallery_embedder(gallery, backbone=args.backbone, checkpoint=args.checkpoint)
    items = collect_inputs(args.paths)
    enrolled = {photo for name, photo in zip(gallery.people, gallery.photos, strict=True)
                if name == person}
    fresh = [item for item in items if _photo_path(item) not in enrolled]
    if len(fresh) < len(items):
        _say(f"{len(items) - len(fresh)} photo(s) already enrolled as {person}: skipped")
    if not fresh:
        _say(f"nothing to add; {person} has {len(enrolled)} entries")
        return 0
    table = _embed(fresh, embedder, args, "fmr gallery add")
    ok = np.asarray(table.ok, bool)
    if not ok.any():
        raise FmrError(f"no face could be enrolled from the {len(fresh)} photo(s) "
                       f"({_failures(fresh, table)}); the gallery is unchanged")
    rows = np.flatnonzero(ok)
    new = person not in set(gallery.people)
    kind = gallery.choice.kind
    ids = gallery.add(table.embeddings[rows], person, [_photo_path(fresh[i]) for i in rows],
                      np.asarray(table.mask_probability, np.float32)[rows])
    gallery.save(args.gallery)
    entry = dict(zip(rows.tolist(), ids.tolist(), strict=True))
    from pathlib import Path

    _write_manifest(Path(args.gallery) / MANIFEST_FILE, [
        {"input": _photo_path(item), "person": person, "status": "ok" if ok[i] else "failed",
         "reason": table.reasons[i], "entry_id": entry.get(i, "")}
        for i, item in enumerate(fresh)
    ], append=True)
    for i in np.flatnonzero(~ok):
        _say(f"failed: {table.reasons[i]}")
    _say(f"added {len(ids)} photo(s) of {person}{' (new person)' if new else ''}, "
         f"{int((~ok).sum())} failed; the gallery holds {len(gallery)} entries of "
         f"{len(set(gallery.people))} people")
    if gallery.choice.kind != kind:
        _say(f"index rebuilt: {gallery.choice.reason}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    from fmr.gallery.store import Gallery

    gallery = Gallery.load(args.gallery)
    person = args.person.strip()
    kind = gallery.choice.kind
    removed = gallery.remove_person(person)
    gallery.save(args.gallery)
    _say(f"removed {person} ({removed} entries); the gallery holds {len(gallery)} entries of "
         f"{len(set(gallery.people))} people")
    if gallery.choice.kind != kind:
        _say(f"index rebuilt: {gallery.choice.reason}")
    return 0


# ----------------------------------------------------------------------------- search
def format_identification(answer, top: int) -> str:
    """The human-readable report of one probe (`fmr.gallery.search.Identification`)."""
    lines = [f"probe: {answer.probe}"]
    if answer.error:
        lines.append(f"  error: {answer.error}")
        return "\n".join(lines)
    facts = []
    if answer.mask:
        facts.append(f"synthetic mask: {answer.mask}")
    if answer.mask_probability is not None:
        facts.append(f"wears a mask: {answer.mask_probability * 100:.0f}%")
    if facts:
        lines[0] += f" ({', '.join(facts)})"
    width = max([len("person"), *(len(m.person) for m in answer.matches)])
    lines.append(f"  {'rank':>4}  {'person':<{width}}  similarity  angle  photo")
    for rank, match in enumerate(answer.matches, start=1):
        lines.append(f"  {rank:>4}  {match.person:<{width}}  {match.similarity:>10.3f}  "
                     f"{match.angle_deg:>4.1f}°  {match.photo}")
    lines.append(f"  decision: {answer.verdict()}")
    if answer.threshold is not None:
        bound = "" if answer.measurable else (" (below what the calibration can measure: the "
                                              "real FPIR may be higher)")
        lines.append(f"  threshold {answer.threshold:.3f}: set for FPIR {answer.fpir:g} in a "
                     f"gallery of {answer.gallery_size:,} entries{bound}")
    lines.append(f"  calibration: {answer.calibration}, because {answer.calibration_reason}")
    return "\n".join(lines)


def _search(args: argparse.Namespace) -> int:
    import contextlib
    import json
    import sys

    from fmr.errors import FmrError
    from fmr.gallery.photos import gallery_embedder, search_photos
    from fmr.gallery.store import Gallery

    if not 0.0 < args.fpir < 1.0:
        raise FmrError(f"--fpir {args.fpir}: a rate between 0 and 1, e.g. 0.01")
    if args.top < 1:
        raise FmrError(f"--top {args.top}: at least 1")
    gallery = Gallery.load(args.gallery)
    if not len(gallery):
        raise FmrError(f"{args.gallery}: the gallery is empty; enrol people with "
                       "`fmr gallery add` or `fmr gallery build`")
    embedder = gallery_embedder(gallery, backbone=args.backbone, checkpoint=args.checkpoint)
    with contextlib.redirect_stdout(sys.stderr):
        answers = search_photos(gallery, args.photos, embedder, top=args.top, fpir=args.fpir,
                                policy=args.multi_face, mask=args.mask_probe,
                                mask_renderer=args.mask_renderer, seed=args.seed,
                                names=args.photos)
    for i, answer in enumerate(answers):
        if args.json:
            print(json.dumps(answer.to_dict(), allow_nan=False), flush=True)
        else:
            print(("\n" if i else "") + format_identification(answer, args.top), flush=True)
    searched = sum(not a.error for a in answers)
    if not args.json:
        _say(f"{searched} of {len(answers)} photo(s) searched in {len(gallery):,} entries of "
             f"{len(set(gallery.people)):,} people with {gallery.backbone.describe()}; "
             f"{_index_line(gallery)}")
    return 0 if searched else 2


# ----------------------------------------------------------------------------- info
def _info(args: argparse.Namespace) -> int:
    import json

    from fmr.gallery.store import Gallery

    gallery = Gallery.load(args.gallery)
    data = {"gallery": str(args.gallery), **gallery.describe(), "counts": gallery.counts()}
    if args.json:
        print(json.dumps(data))
        return 0
    print(f"gallery: {args.gallery}")
    print(f"model: {gallery.backbone.describe()}, checkpoint {gallery.backbone.checkpoint}")
    print(_index_line(gallery))
    print(f"{len(gallery):,} entries of {data['people']:,} people; created {gallery.created}, "
          f"updated {data['updated']}")
    for name, count in data["counts"].items():
        print(f"  {name}: {count}")
    return 0


def run(args: argparse.Namespace) -> int:
    from fmr.errors import FmrError

    actions = {"build": _build, "add": _add, "remove": _remove, "search": _search, "info": _info}
    action = actions.get(getattr(args, "gallery_command", None))
    if action is None:
        raise FmrError("name a sub-command: build, add, remove, search or info "
                       "(`fmr gallery --help`)")
    return action(args)
