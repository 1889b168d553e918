"""Compare backbones on a small gallery: similarity matrices, a 2-D map of the embeddings, and
what a mask costs each model."""

import re

import numpy as np
import streamlit as st

from fmr.app import charts, drawing, gallery, jobs, page, photos, samples
from fmr.app.models import FAMILY_TITLES, loaded_models, missing_note
from fmr.errors import FmrError
from fmr.masks import MASK_STYLES

page.setup("Compare backbones", ":material/grid_view:")
st.title("Compare backbones")
st.caption(
    "A small gallery of people, each photo embedded as it is and with a synthetic mask. "
    "Similar embeddings mean the model thinks the faces match: same-person squares should be "
    "bright, and a good masked-face model keeps them bright when a mask is added."
)

people = samples.sample_people()
choose_col, count_col, mask_col = st.columns([3, 1, 1])
chosen = choose_col.multiselect(
    "Sample people", list(people), default=list(people)[:3], key="gallery_people",
    help="Photos from the shared data folder." if people else page.for_browser(
        samples.samples_note()),
)
per_person = count_col.slider("Photos per person", 1, 3, 2, key="gallery_per_person")
style = mask_col.selectbox("Mask style", MASK_STYLES, key="gallery_mask")
uploads = st.file_uploader(
    "Add your own photos (several at once)",
    type=photos.ACCEPTED_TYPES,
    accept_multiple_files=True,
    key="gallery_uploads",
    help="Each photo is labelled by its file name up to the first digit or underscore, so "
    "ann_1.jpg and ann_2.jpg are the same person.",
)

entries: list[tuple[str, photos.PhotoInput]] = []
for person in chosen:
    for path in people[person][:per_person]:
        entries.append((person, photos.sample_input(path)))
for upload in uploads or []:
    person = re.split(r"[_\d]", upload.name.rsplit(".", 1)[0])[0].strip(" -") or upload.name
    entries.append((person.title(), photos.PhotoInput(upload.name, upload.getvalue(), "upload")))

if len(entries) < 2:
    st.info("Choose at least two photos (sample people or uploads).", icon=":material/group:")
    st.stop()

# Loading and embedding the gallery holds one of the server's face-work slots (fmr.app.jobs).
with jobs.face_work():
    models = loaded_models()
    note = missing_note(models.missing)
    if note:
        st.info(note, icon=":material/info:")

    mask = photos.MaskChoice(style)
    faces: list[gallery.GalleryFace] = []
    vectors: dict[str, list[np.ndarray]] = {e.family: [] for e in models.embedders}
    problems = []
    progress = st.progress(0.0, text="Embedding the gallery...")
    counters: dict[str, int] = {}
    for step, (person, photo) in enumerate(entries, start=1):
        counters[person] = counters.get(person, 0) + 1
        name = f"{person} {counters[person]}"
        try:
            plain = photos.prepare_face(photo)
            covered = photos.prepare_face(photo, 0, mask)
        except FmrError as exc:
            problems.append(str(exc))
            continue
        for prepared, is_masked in ((plain, None), (covered, mask)):
            closeup = drawing.face_closeup(prepared.image, prepared.face, 160)
            faces.append(gallery.GalleryFace(person, name, is_masked is not None, closeup))
            for embedder in models.embedders:
                vectors[embedder.family].append(
                    photos.embed_prepared(embedder, photo, prepared, is_masked)
                )
        progress.progress(step / len(entries), text=f"Embedded {step} of {len(entries)} photos")
    progress.empty()
for problem in problems:
    st.warning(page.for_browser(f"Left out: {problem}"), icon=":material/warning:")
if len(faces) < 4:
    st.info("Not enough faces to compare.", icon=":material/group:")
    st.stop()

with st.expander(f"The gallery: {len(faces)} faces", expanded=True):
    thumbs = st.columns(min(len(faces), 6))
    for i, face in enumerate(faces):
        thumbs[i % len(thumbs)].image(
            face.closeup, caption=f"{face.name}{' (masked)' if face.masked else ''}",
            width="stretch",
        )

# Short labels (first name and photo number) keep several matrices side by side readable.
labels = [f"{f.person.split()[0]} {f.name.rsplit(' ', 1)[-1]}{' ·m' if f.masked else ''}"
          for f in faces]
st.subheader("Similarity matrices")
st.caption("Rows and columns: each photo unmasked, then its masked copy (·m).")
heat_cols = st.columns(len(models.embedders))
for embedder, column in zip(models.embedders, heat_cols, strict=True):
    matrix = gallery.similarity_matrix(np.stack(vectors[embedder.family]))
    column.plotly_chart(
        charts.similarity_heatmap(matrix, labels, FAMILY_TITLES.get(embedder.family),
                                  values=len(models.embedders) < 3),
        width="stretch", key=f"heatmap_{embedder.family}",
    )

st.subheader("The embeddings in two dimensions")
st.caption(
    "Principal components of each model's embeddings: colour is the person, a cross is the "
    "masked copy, and a grey line joins a photo to its masked copy (how far the mask moves it)."
)
map_cols = st.columns(len(models.embedders))
for embedder, column in zip(models.embedders, map_cols, strict=True):
    points = gallery.project_2d(np.stack(vectors[embedder.family]))
    column.plotly_chart(
        charts.projection(points, [f.person for f in faces], [f.masked for f in faces],
                          [f.name for f in faces], FAMILY_TITLES.get(embedder.family)),
        width="stretch", key=f"projection_{embedder.family}",
    )

st.subheader("What a mask costs")
rows = []
for embedder in models.embedders:
    stacked = np.stack(vectors[embedder.family])
    rows += gallery.score_drop_rows(
        stacked[0::2], stacked[1::2], [f.person for f in faces[0::2]],
        FAMILY_TITLES.get(embedder.family, embedder.family),
    )
st.plotly_chart(charts.score_drop(rows), width="stretch", key="score_drop")
drops = []
for embedder in models.embedders:
    title = FAMILY_TITLES.get(embedder.family, embedder.family)
    means = {r["kind"]: r["mean"] for r in rows if r["backbone"] == title}
    plain_mean = means.get("same person, both unmasked")
    masked_mean = means.get("same person, one masked")
    if plain_mean is not None and masked_mean is not None:
        drops.append(f"**{title}**: same-person similarity drops by "
                     f"{plain_mean - masked_mean:.3f} (from {plain_mean:.3f} to "
                     f"{masked_mean:.3f}) when one photo is masked")
if drops:
    st.markdown("\n".join(f"- {d}" for d in drops))
else:
    st.caption("Choose two or more photos of one person to see the same-person score drop.")
