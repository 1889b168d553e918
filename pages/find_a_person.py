"""Find a person: a probe photo searched in a gallery of people, with an open-set answer."""

import streamlit as st

from fmr.app import drawing, find_person, jobs, page, photos, samples
from fmr.app.models import FAMILY_TITLES, loaded_models, missing_note
from fmr.errors import FmrError
from fmr.faces import align_face

FPIR_CHOICES = (0.001, 0.01, 0.1)

page.setup("Find a person", ":material/person_search:")
st.title("Find a person")
st.caption(
    "Who is this? A probe photo is searched in a gallery of known people: the five closest "
    "people, and an answer that can be \"not in the gallery\", at a threshold set for a stated "
    "rate of strangers taken for someone (FPIR). The same search as `fmr gallery search`."
)

models = loaded_models()
note = missing_note(models.missing)
if note:
    st.info(note, icon=":material/info:")
families = [e.family for e in models.embedders]
model_col, fpir_col = st.columns([2, 1])
family = model_col.selectbox(
    "Model", families, index=families.index("dlib-mask") if "dlib-mask" in families else 0,
    format_func=lambda f: FAMILY_TITLES.get(f, f), key="find_backbone",
)
fpir = fpir_col.select_slider(
    "Strangers taken for someone (FPIR)", FPIR_CHOICES, value=0.01,
    format_func=lambda v: f"{v:.1%}", key="find_fpir",
    help="A lower rate raises the threshold: fewer strangers are matched, and more real "
    "matches are missed.",
)
embedder = models.by_family(family)

st.subheader("1. The gallery")
people = samples.sample_people()
chosen = st.multiselect(
    "Sample people", list(people), default=list(people), key="find_people",
    help="All their photos but the last are enrolled; the last one is kept back as a probe."
    if people else page.for_browser(samples.samples_note()),
)
enrolled, sample_probes = find_person.sample_split(people, chosen)

# The visitor's own people live in this session's memory only.
own = st.session_state.setdefault("find_own", [])
with st.expander(f"Add your own people ({len({e.person for e in own})} added)"):
    name_col, upload_col = st.columns([1, 2])
    name = name_col.text_input("Name", key="find_name", placeholder="e.g. Ann")
    uploads = upload_col.file_uploader(
        "Their photos", type=photos.ACCEPTED_TYPES, accept_multiple_files=True,
        key="find_uploads", help="Kept in this server's memory for your session only.",
    )
    add_col, clear_col = st.columns(2)
    if add_col.button("Add to the gallery", key="find_add", disabled=not uploads):
        if not name.strip():
            st.warning("Give the person a name first.", icon=":material/badge:")
        elif len(own) + len(uploads) > find_person.MAX_UPLOADED_PHOTOS:
            st.warning(f"At most {find_person.MAX_UPLOADED_PHOTOS} photos of your own.",
                       icon=":material/warning:")
        else:
            own += [find_person.Enrolled(name.strip(), photos.PhotoInput(
                f"{name.strip()}/{u.name}", u.getvalue(), "upload")) for u in uploads]
    if clear_col.button("Remove my people", key="find_clear", disabled=not own):
        own.clear()
enrolled = enrolled + own

if not enrolled:
    st.info("Choose sample people or add your own to build a gallery.", icon=":material/group:")
    st.stop()

st.subheader("2. Who is this?")
sample = st.selectbox(
    "Try a sample probe", sample_probes, index=None, key="find_sample",
    format_func=lambda p: f"{samples.person_label(p.parent.name)}: {p.name}"
    + ("" if samples.person_label(p.parent.name) in chosen else " (not in the gallery)"),
    placeholder="choose a sample photo, or upload one below",
)
probe_col, shown_col = st.columns(2, gap="large")
with probe_col:
    probe = photos.photo_input("probe", "Probe photo", sample=sample)
    mask = photos.mask_controls("probe", "the probe")

# Embedding the gallery and the probe holds one of the server's face-work slots.
with jobs.face_work():
    session = find_person.build_gallery(embedder, enrolled)
    counts = session.gallery.counts()
    size = len(session.gallery)
    st.caption(f"Gallery: {size} photo{'s' * (size != 1)} of {len(counts)} "
               f"{'person' if len(counts) == 1 else 'people'} "
               f"({', '.join(f'{p} {n}' for p, n in counts.items())}); "
               f"{session.gallery.choice.reason}.")
    for problem in session.problems:
        st.warning(f"Left out of the gallery: {page.for_browser(problem)}",
                   icon=":material/warning:")
    if probe is None:
        st.info("Add a probe photo (upload, camera, or a sample).",
                icon=":material/photo_camera:")
        st.stop()
    with shown_col:
        try:
            detected = photos.detect_photo(probe.data, probe.name)
            if not detected.faces:
                st.error(photos.no_face_message(probe.name, detected.image.shape),
                         icon=":material/error:")
                st.stop()
            index = photos.face_picker(detected, "probe", "the probe")
            prepared = photos.prepare_face(probe, index, mask)
        except FmrError as exc:
            page.show_error(exc)
            st.stop()
        picture = drawing.draw_faces(prepared.image, [prepared.face], 0)
        left, right = st.columns([3, 1], vertical_alignment="bottom")
        left.image(picture, caption=probe.name, width="stretch")
        right.image(align_face(prepared.image, prepared.face.landmarks),
                    caption="aligned 112x112", width="stretch")
        worn = photos.mask_caption(prepared)
        if worn:
            st.caption(worn)
    answer = find_person.search_probe(session, embedder, probe, prepared, mask, fpir)

st.subheader("Answer")
words = find_person.answer_words(answer)
if answer.decision is not None:
    st.success(words, icon=":material/how_to_reg:")
else:
    st.warning(words, icon=":material/person_off:")
st.caption(find_person.threshold_words(answer))
columns = st.columns(max(1, len(answer.matches)))
for rank, (match, column) in enumerate(zip(answer.matches, columns, strict=False), start=1):
    with column:
        closeup = find_person.match_closeup(session, match.photo)
        if closeup is not None:
            st.image(closeup, width="stretch")
        st.markdown(f"**{rank}. {match.person}**")
        st.caption(f"similarity {match.similarity:.3f} · {match.angle_deg:.1f}°  \n"
                   f"{match.photo}")
