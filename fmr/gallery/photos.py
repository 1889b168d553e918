"""From photos to a gallery and back: the face pipeline (`fmr.verify.pipeline.prepare_face`:
load, detect, choose the face, optional synthetic mask, mask probability) and the embedders,
applied to enrolment and to probes. `fmr gallery` and the app both come through here.

    embedder = load_backbone(default_backbone()[0])
    table = embed_paths(paths, embedder, workers=2)              # batch enrolment from files
    gallery, table = gallery_from_photos(uploads, people, embedder)  # in memory (bytes...)
    gallery = Gallery.from_arrays(embeddings, people, photos, backbone_info(embedder))
    embedder = gallery_embedder(gallery)                         # its own model, checked
    answers = search_photos(gallery, ["who.jpg"], embedder)      # [Identification]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fmr.errors import CheckpointError, DataError, FmrError
from fmr.gallery.search import DEFAULT_FPIR, DEFAULT_TOP, Identification, identify
from fmr.gallery.store import BackboneInfo, Gallery

# The strongest model first: dlib-mask describes unmasked faces as dlib does and masked ones
# with its fine-tune (README: its masked LFW accuracy beats dlib's); dlib needs no checkpoint.
DEFAULT_BACKBONES = ("dlib-mask", "dlib")


def embedder_spec(embedder) -> str:
    """How `fmr.pipelines.embedding` names a loaded model: "dlib" or its checkpoint path."""
    return "dlib" if embedder.family == "dlib" else str(embedder.path)


def backbone_info(embedder) -> BackboneInfo:
    """What a gallery records about the model that made its embeddings."""
    from fmr.pipelines.embedding import embedder_key

    return BackboneInfo(embedder.family, embedder.name, str(embedder.path),
                        embedder_key(embedder_spec(embedder)), int(embedder.embedding_size))


def default_backbone() -> tuple[str, str]:
    """The family a new gallery uses when none is named, and why, in words: dlib-mask when its
    checkpoint and the mask detector are there, else dlib."""
    from fmr.verify.lookup import missing_reason
    from fmr.verify.mask_detector import mask_detector_path

    family, fallback = DEFAULT_BACKBONES
    reason = missing_reason(family)
    if reason is None and not mask_detector_path().is_file():
        reason = f"no mask detector at {mask_detector_path()}"
    if reason is None:
        return family, (f"{family}, the strongest model available (dlib's descriptor for "
                        "unmasked faces, its mask fine-tune for masked ones)")
    return fallback, f"{fallback}, because {family} is not available ({reason})"


def _spec_key(spec: str) -> tuple[str, Path | None]:
    """(embedder_key, checkpoint file or None for dlib) of a --backbone/--checkpoint value."""
    from fmr.pipelines.embedding import embedder_key
    from fmr.verify.lookup import TRAINED_FAMILIES, find_checkpoint, resolve_checkpoint

    if spec == "dlib":
        return "dlib", None
    path = find_checkpoint(spec) if spec in TRAINED_FAMILIES else resolve_checkpoint(spec)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; pass the checkpoint file inside it")
    try:
        return embedder_key(str(path)), path
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc})") from None


def gallery_embedder(gallery: Gallery, *, backbone: str | None = None,
                     checkpoint: str | None = None):
    """The model to search or extend `gallery` with. By default its own: the checkpoint it was
    built from if that file still holds the same weights, else the family's current checkpoint
    if it does. `backbone` (a family) or `checkpoint` (a file) must name the same weights.
    Raises CheckpointError naming both models when they differ (embeddings of two models do not
    compare), or when the gallery's model is gone or its weights changed since the build."""
    from fmr.verify import load_backbone

    want = gallery.backbone
    where = f"{gallery.folder}: " if gallery.folder is not None else ""
    if backbone is not None or checkpoint is not None:
        flag, spec = ("--checkpoint", checkpoint) if checkpoint else ("--backbone", backbone)
        key, _ = _spec_key(str(spec))
        if key != want.key:
            raise CheckpointError(
                f"{where}this gallery was built with {want.describe()}, but {flag} {spec} is "
                f"another model ({key}): embeddings of different models do not compare; drop "
                f"{flag} to use the gallery's own model, or build a gallery with this one "
                "(`fmr gallery build`)")
        return load_backbone(spec)
    if want.key == "dlib":
        return load_backbone("dlib")
    tried = []
    recorded = Path(want.checkpoint)
    if recorded.is_file():
        key, _ = _spec_key(str(recorded))
        if key == want.key:
            return load_backbone(recorded)
        tried.append(f"{recorded} now holds other weights ({key})")
    else:
        tried.append(f"{recorded} is gone")
    from fmr.verify.lookup import TRAINED_FAMILIES

    if want.family in TRAINED_FAMILIES:
        try:
            key, current = _spec_key(want.family)
        except CheckpointError as exc:
            tried.append(f"no {want.family} checkpoint is available ({exc})")
        else:
            if key == want.key:
                return load_backbone(current)
            if current.resolve() != recorded.resolve():
                tried.append(f"the {want.family} checkpoint now is {current} ({key})")
    raise CheckpointError(
        f"{where}this gallery was built with {want.describe()}, and {'; '.join(tried)}: its "
        "embeddings would not compare with the new model's. Rebuild the gallery (`fmr gallery "
        "build PHOTOS --out GALLERY`), or pass --checkpoint with the file it was built with")


def person_folders(folder: str | os.PathLike) -> tuple[dict[str, list], list[Path]]:
    """The photos of each person in `folder` (one sub-folder per person, searched recursively,
    as `fmr prepare` reads identities): ({person: [fmr.batch.BatchInput]}, photos lying
    directly in `folder`, which belong to no one). DataError when it is not a folder or has no
    person sub-folders."""
    from fmr.batch import IMAGE_EXTENSIONS, collect_inputs

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"{folder}: not a folder (expected one sub-folder of photos per person: "
                        "FOLDER/<person>/*.jpg)")
    subfolders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not subfolders:
        raise DataError(f"{folder}: no sub-folders; put each person's photos in a sub-folder "
                        "named after them (FOLDER/<person>/*.jpg)")
    people = {d.name: collect_inputs([os.path.join(str(folder), d.name)]) for d in subfolders}
    loose = sorted(f for f in root.iterdir()
                   if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                   and not f.name.startswith("."))
    return people, loose


def embed_paths(paths: Sequence[str | os.PathLike], embedder, *, policy: str = "main",
                workers: int = 1, progress: bool = True, desc: str = "fmr gallery",
                names: Sequence[str] | None = None):
    """Embed photo files for enrolment through `fmr.pipelines.embedding.embed_images`
    (batched, in `workers` processes): an `EmbeddingTable` in the order of `paths` (ok,
    reasons, mask_probability per photo)."""
    from fmr.eval.protocols import Condition
    from fmr.pipelines.embedding import embed_images

    spec = embedder_spec(embedder)
    return embed_images([Path(p) for p in paths], [spec], Condition(), policy=policy,
                        workers=workers, progress=progress, desc=desc, names=names)[spec]


def embed_photos(sources: Sequence, embedder, *, policy: str = "main",
                 names: Sequence[str] | None = None):
    """Embed photos given as paths, bytes, open files or RGB uint8 arrays (the app's uploads),
    in this process: an `EmbeddingTable` like `embed_paths`'s. A photo without a usable face
    is a failed row with the reason, not an exception."""
    from fmr.eval.protocols import EmbeddingTable
    from fmr.verify.pipeline import prepare_face

    count = len(sources)
    table = EmbeddingTable(np.zeros((count, embedder.embedding_size), np.float32),
                           np.zeros(count, bool), [""] * count, [""] * count,
                           np.full(count, np.nan, np.float32))
    prepared = {}
    for i, source in enumerate(sources):
        try:
            prepared[i] = prepare_face(source, name=names[i] if names else None, policy=policy)
        except FmrError as exc:
            table.reasons[i] = str(exc)
    if prepared:
        rows = list(prepared)
        table.embeddings[rows] = embedder.embed_faces(
            [(prepared[i].image, prepared[i].face) for i in rows])
        table.ok[rows] = True
        for i in rows:
            if prepared[i].mask_probability is not None:
                table.mask_probability[i] = prepared[i].mask_probability
    return table


def gallery_from_photos(sources: Sequence, people: str | Sequence[str], embedder, *,
                        names: Sequence[str] | None = None, policy: str = "main",
                        index_kind: str = "auto"):
    """A gallery in memory from photos (paths, bytes, open files or RGB arrays; the app's
    uploads) of `people` (one name for all, or one per photo): (Gallery, EmbeddingTable), the
    table saying which photos failed and why. Photos without a usable face are left out; a
    Gallery with no entries when none had one. names: each photo's name in the gallery (default:
    its path, or "photo N")."""
    count = len(sources)
    people = [people] * count if isinstance(people, str) else list(people)
    if len(people) != count:
        raise ValueError(f"{count} photos but {len(people)} names of people")
    if names is None:
        from fmr.faces.io import source_name

        names = [f"photo {i + 1}" if isinstance(s, np.ndarray) else source_name(s)
                 for i, s in enumerate(sources)]
    table = embed_photos(sources, embedder, policy=policy, names=names)
    rows = np.flatnonzero(table.ok)
    gallery = Gallery.from_arrays(
        table.embeddings[rows].reshape(len(rows), embedder.embedding_size),
        [people[i] for i in rows], [names[i] for i in rows], backbone_info(embedder),
        mask_probability=table.mask_probability[rows], index_kind=index_kind)
    return gallery, table


def probe_mask(prepared) -> tuple[bool, str]:
    """Whether a prepared probe counts as masked (`fmr.verify.mask_detector.mask_decision`'s
    rule: a synthetic mask, or the detector's probability >= 0.5), and why, in words."""
    from fmr.verify.mask_detector import mask_decision

    decision = mask_decision([prepared], labels=("the probe",))
    if decision.masked:
        return True, decision.reason
    if prepared.mask_probability is None:
        return False, decision.reason
    return False, (f"the probe wears no mask (detected, {prepared.mask_probability * 100:.0f}% "
                   "mask probability)")


def search_photos(
    gallery: Gallery,
    sources: Sequence,
    embedder,
    *,
    top: int = DEFAULT_TOP,
    fpir: float = DEFAULT_FPIR,
    policy: str = "main",
    mask: str | None = None,
    mask_renderer: str = "fmr",
    seed: int = 0,
    names: Sequence[str] | None = None,
    mask_options: dict | None = None,
) -> list[Identification]:
    """Search each photo (path, bytes, open file or RGB array) in `gallery` with `embedder`
    (`gallery_embedder(gallery)`): one `Identification` per photo, in order. A photo that
    cannot be read or shows no face gets one with `error` set and no matches; the others are
    still searched. mask: draw a synthetic mask of this style on each probe first (seeded by
    `seed` and the probe's position). The masked calibration decides for a masked probe."""
    from fmr.verify.pipeline import prepare_face

    if gallery.backbone.embedding_size != embedder.embedding_size:
        raise CheckpointError(f"the gallery holds {gallery.backbone.embedding_size}-d "
                              f"embeddings but {embedder.name} makes "
                              f"{embedder.embedding_size}-d ones")
    answers: list[Identification | None] = []
    ready = []
    for i, source in enumerate(sources):
        name = names[i] if names else None
        try:
            prepared = prepare_face(source, name=name, policy=policy, mask=mask,
                                    mask_renderer=mask_renderer,
                                    seed=np.random.default_rng([seed, i]),
                                    mask_options=mask_options)
        except FmrError as exc:
            from fmr.faces.io import source_name

            label = name or (f"probe {i + 1}" if isinstance(source, np.ndarray)
                             else source_name(source))
            answers.append(Identification(label, fpir=fpir, gallery_size=len(gallery),
                                          error=str(exc)))
            continue
        answers.append(None)
        ready.append((i, prepared))
    if ready:
        vectors = embedder.embed_faces([(p.image, p.face) for _, p in ready])
        decisions = [probe_mask(p) for _, p in ready]
        found = identify(
            gallery, vectors, embedder, masked=[m for m, _ in decisions],
            mask_reasons=[r for _, r in decisions], top=top, fpir=fpir,
            probes=[p.name for _, p in ready],
            mask_probability=[p.mask_probability for _, p in ready],
            masks=[(p.mask or {}).get("style") for _, p in ready],
        )
        for (i, _), answer in zip(ready, found, strict=True):
            answers[i] = answer
    return answers
