"""The "Find a person" page's work: a gallery held in the session's memory (sample people and
the visitor's own photos), and a probe searched in it.

Faces go through the app's cached photo pipeline (`fmr.app.photos`, i.e. `fmr.verify.pipeline`),
and the search and the open-set decision are `fmr.gallery`'s (`Gallery.from_arrays`,
`fmr.gallery.search.identify`): the page answers what `fmr gallery search` answers.
Nothing is written to disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmr.app import drawing, photos
from fmr.errors import FmrError
from fmr.gallery.photos import backbone_info, probe_mask
from fmr.gallery.search import DEFAULT_TOP, Identification, identify
from fmr.gallery.store import Gallery

# How many photos one visitor may enroll in the session's gallery (they stay in memory).
MAX_UPLOADED_PHOTOS = 40
CLOSEUP_SIZE = 160


@dataclass(frozen=True)
class Enrolled:
    """One photo in the gallery: whose it is, and the photo."""

    person: str
    photo: photos.PhotoInput


@dataclass
class SessionGallery:
    """A gallery built for one model. gallery: the searchable entries; faces: each entry's
    photo name -> (photo, prepared face), for close-ups; problems: photos left out, and why."""

    gallery: Gallery
    faces: dict
    problems: list[str]


def sample_split(people: dict[str, list[Path]], chosen: list[str]) -> tuple[list[Enrolled],
                                                                           list[Path]]:
    """The chosen sample people enrolled with all their photos but the last; the last photo of
    each (never enrolled) and every photo of the people not chosen are offered as probes."""
    enrolled, probes = [], []
    for person, paths in people.items():
        if person in chosen and len(paths) >= 2:
            enrolled += [Enrolled(person, photos.sample_input(p)) for p in paths[:-1]]
            probes.append(paths[-1])
        elif person in chosen:
            enrolled.append(Enrolled(person, photos.sample_input(paths[0])))
        else:
            probes += paths
    return enrolled, probes


def build_gallery(embedder, entries: list[Enrolled]) -> SessionGallery:
    """A gallery of `entries` for `embedder`: each photo's main face, embedded once per photo
    and model (cached by `fmr.app.photos`). Photos without a usable face are left out and
    listed in `problems`."""
    vectors, people, names, probabilities, faces, problems = [], [], [], [], {}, []
    for entry in entries:
        try:
            prepared = photos.prepare_face(entry.photo)
        except FmrError as exc:
            problems.append(str(exc))
            continue
        name = entry.photo.name
        if name in faces:  # the same photo twice: one entry
            continue
        vectors.append(photos.embed_prepared(embedder, entry.photo, prepared, None))
        people.append(entry.person)
        names.append(name)
        probabilities.append(np.nan if prepared.mask_probability is None
                             else prepared.mask_probability)
        faces[name] = prepared
    matrix = (np.stack(vectors) if vectors
              else np.zeros((0, embedder.embedding_size), np.float32))
    gallery = Gallery.from_arrays(matrix, people, names, backbone_info(embedder),
                                  mask_probability=np.asarray(probabilities, np.float32))
    return SessionGallery(gallery, faces, problems)


def search_probe(session: SessionGallery, embedder, photo: photos.PhotoInput, prepared,
                 mask: photos.MaskChoice | None, fpir: float,
                 top: int = DEFAULT_TOP) -> Identification:
    """The probe's top people and the open-set decision (the masked calibration when the probe
    wears a mask, found by the detector or drawn), as `fmr gallery search` decides."""
    vector = photos.embed_prepared(embedder, photo, prepared, mask)
    masked, reason = probe_mask(prepared)
    return identify(
        session.gallery, vector[None], embedder, masked=[masked], mask_reasons=[reason],
        top=top, fpir=fpir, probes=[photo.name], mask_probability=[prepared.mask_probability],
        masks=[None if prepared.mask is None else prepared.mask.get("style")],
    )[0]


def match_closeup(session: SessionGallery, photo_name: str) -> np.ndarray | None:
    """A square close-up of an enrolled photo's face (None if it is not in the gallery)."""
    prepared = session.faces.get(photo_name)
    if prepared is None:
        return None
    return drawing.face_closeup(prepared.image, prepared.face, CLOSEUP_SIZE)


def answer_words(answer: Identification) -> str:
    """The open-set answer as a sentence for the page."""
    if answer.threshold is None:
        return f"No decision: {answer.note}."
    if answer.decision is not None:
        best = answer.matches[0]
        return (f"This is **{answer.decision}**: similarity {best.similarity:.3f} reaches the "
                f"threshold {answer.threshold:.3f}.")
    if not answer.matches:
        return "Not in the gallery: the gallery is empty."
    best = answer.matches[0]
    return (f"**Not in the gallery.** The closest is {best.person} at similarity "
            f"{best.similarity:.3f}, below the threshold {answer.threshold:.3f}.")


def threshold_words(answer: Identification) -> str:
    """How the threshold was set, for a caption."""
    if answer.threshold is None:
        return ""
    words = (f"Threshold {answer.threshold:.3f}: set so that a stranger is taken for someone "
             f"in this gallery of {answer.gallery_size} photos at most {answer.fpir:.0%} of the "
             f"time (FPIR), from the model's {answer.calibration} calibration on validation "
             f"people, because {answer.calibration_reason}.")
    if answer.measurable is False:
        words += (" The gallery is larger than the calibration can measure: the real rate may "
                  "be higher.")
    return words
