"""Verify a pair: are the faces in two photos the same person, and how sure is each model?"""

import contextlib

import streamlit as st

from fmr.app import charts, drawing, jobs, page, photos, samples
from fmr.app.models import FAMILY_TITLES, loaded_models, missing_note
from fmr.errors import FmrError
from fmr.faces import align_face
from fmr.verify import compare, mask_decision

VERDICT_WORDS = {"same": "same person", "different": "different people",
                 "inconclusive": "inconclusive"}
CALIBRATION_WORDS = {"unmasked": "pairs of unmasked photos",
                     "masked": "a masked photo against an unmasked one"}
VERDICT_COLOURS = {"same": "green", "different": "red", "inconclusive": "orange"}
PHOTO_HEIGHT = 320  # pixels: portrait and landscape photos get the same height

page.setup("Verify a pair", ":material/compare:")
st.title("Verify a pair")
st.caption(
    "Two photos in, one verdict per model out: the cosine similarity of the two face "
    "embeddings, the angle between them, and what that score means against a threshold "
    "calibrated on validation pairs (never on evaluation data)."
)

pairs = samples.sample_pairs()
if pairs:
    sample = st.selectbox(
        "Try a sample pair",
        pairs,
        index=None,
        format_func=lambda p: p.label,
        placeholder="choose a sample pair, or upload your own photos below",
        key="sample_pair",
    )
else:
    sample = None
    st.caption(page.for_browser(samples.samples_note()))

columns = st.columns(2, gap="large")
inputs, masks, shown_in = {}, {}, {}
for side, column in zip("ab", columns, strict=True):
    label = f"Photo {side.upper()}"
    with column:
        inputs[side] = photos.photo_input(
            side, label, sample=None if sample is None else (sample.a if side == "a" else sample.b)
        )
        shown_in[side] = st.container()  # the photo goes here, above its mask options
        masks[side] = photos.mask_controls(side, label)

# Detection, masking and embedding hold one of the server's face-work slots: when several
# visitors upload at once, the others wait in line and see their place in it (fmr.app.jobs).
face_work = jobs.face_work() if any(inputs.values()) else contextlib.nullcontext()
with face_work:
    prepared = {}
    for side in "ab":
        photo = inputs[side]
        if photo is None:
            continue
        label = f"photo {side.upper()}"
        with shown_in[side]:
            try:
                detected = photos.detect_photo(photo.data, photo.name)
                if not detected.faces:
                    st.error(photos.no_face_message(photo.name, detected.image.shape),
                             icon=":material/error:")
                    st.image(drawing.thumbnail(detected.image), width="stretch")
                    continue
                index = photos.face_picker(detected, side, label)
                face = photos.prepare_face(photo, index, masks[side], "ab".index(side))
            except FmrError as exc:
                page.show_error(exc)
                continue
            prepared[side] = face
            shown, crop = st.columns([3, 1], vertical_alignment="bottom")
            boxes = detected.faces if face.mask is None else [face.face]
            picture = drawing.draw_faces(face.image, boxes, index if face.mask is None else 0)
            found = f"{photo.name}: {face.faces_found} face{'s' * (face.faces_found != 1)} found"
            if detected.hidden:
                plural = "s" * (detected.hidden > 1)
                found += f" ({detected.hidden} unlikely detection{plural} ignored)"
            shown.image(picture, caption=found,
                        width=drawing.width_for_height(picture, PHOTO_HEIGHT))
            crop.image(align_face(face.image, face.face.landmarks), caption="aligned 112x112",
                       width="stretch")
            worn = photos.mask_caption(face)
            if worn:
                st.caption(worn)
            if face.mask is not None and not face.mask.get("redetected", True):
                st.caption("The masked face was not found again by the detector, so the box of "
                           "the unmasked face is used.")

    if len(prepared) < 2:
        missing = [f"photo {s.upper()}" for s in "ab" if s not in prepared and inputs[s] is None]
        if missing:
            st.info(f"Add {' and '.join(missing)} to compare (upload, camera, or a sample pair).",
                    icon=":material/photo_camera:")
        st.stop()

    models = loaded_models()
    note = missing_note(models.missing)
    if note:
        st.info(note, icon=":material/info:")

    st.subheader("Verdict")
    # Masked calibration when either photo wears a synthetic mask or the mask detector finds
    # a mask (as in `fmr verify`); the decision says why.
    decision = mask_decision([prepared["a"], prepared["b"]])
    cards = st.columns(len(models.embedders), gap="medium")
    for embedder, column in zip(models.embedders, cards, strict=True):
        emb_a = photos.embed_prepared(embedder, inputs["a"], prepared["a"], masks["a"], 0)
        emb_b = photos.embed_prepared(embedder, inputs["b"], prepared["b"], masks["b"], 1)
        result = compare(emb_a, emb_b, embedder, masked=decision.masked,
                         mask_reason=decision.reason)
        with column.container(border=True):
            title = FAMILY_TITLES.get(embedder.family, embedder.family)
            st.markdown(f"**{title}** · `{embedder.name}`")
            words = VERDICT_WORDS[result.verdict]
            st.markdown(f"### :{VERDICT_COLOURS[result.verdict]}[{words}]")
            left, right = st.columns(2)
            left.metric("Similarity", f"{result.similarity:.3f}", help="cosine similarity, -1 to 1")
            right.metric("Angle", f"{result.angle_deg:.1f}°", help="angle between the embeddings")
            if result.threshold is not None:
                decided_by = CALIBRATION_WORDS[result.calibration]
                st.caption(
                    f"Threshold {result.threshold:.3f} (FAR {result.threshold_far:.0e} on "
                    f"validation pairs; calibration: {result.calibration}, {decided_by}, "
                    f"because {result.calibration_reason}); {result.explanation()}."
                )
                calibration = (embedder.calibration_masked if result.calibration == "masked"
                               else embedder.calibration)
                st.plotly_chart(
                    charts.score_position(calibration, result.similarity),
                    width="stretch",
                    key=f"position_{embedder.family}",
                )
            else:
                st.caption(result.explanation())


st.subheader("Why this score?")
st.caption(
    "Occlusion map: a grey square slides over each face and the similarity is measured again. "
    "Red regions hold the match together (hiding them lowers the score); blue ones count "
    "against it. A masked face is matched mostly on the eyes and brows."
)
explain_col, _ = st.columns([1, 2])
family = explain_col.selectbox(
    "Model to explain",
    [e.family for e in models.embedders],
    format_func=lambda f: FAMILY_TITLES.get(f, f),
    key="explain_backbone",
)
if explain_col.toggle("Show the occlusion maps", key="explain_on",
                      help="About 70 extra embeddings: a few seconds on a CPU."):
    with jobs.face_work(), st.spinner("Hiding one patch at a time..."):
        maps = photos.occlusion_maps(models.by_family(family), inputs, prepared, masks)
    st.plotly_chart(
        charts.occlusion([
            (f"photo A, against B ({maps[0].baseline:.3f})", maps[0].crop, maps[0].heatmap),
            (f"photo B, against A ({maps[1].baseline:.3f})", maps[1].crop, maps[1].heatmap),
        ]),
        width="stretch",
        key="occlusion_chart",
    )
