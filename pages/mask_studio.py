"""Mask studio: draw a synthetic mask on a photo, see it beside the original, download it."""

import streamlit as st

from fmr.app import drawing, jobs, page, photos, samples
from fmr.errors import FmrError
from fmr.masks import COLOURS, MASK_STYLES, PATTERNS, RENDERERS

PHOTO_HEIGHT = 520  # pixels: tall portraits stay on one screen

page.setup("Mask studio", ":material/masks:")
st.title("Mask studio")
st.caption(
    "The synthetic masks fmr trains and evaluates on, drawn by its own code from 68 face "
    "landmarks: pick a style, colour, pattern and how high it sits on the nose."
)

people = samples.sample_people()
sample_photos = [p for photos_of in people.values() for p in photos_of]
source_col, options_col = st.columns([1, 1], gap="large")
with source_col:
    sample = None
    if sample_photos:
        sample = st.selectbox(
            "Sample photo",
            sample_photos,
            index=0,
            format_func=lambda p: f"{samples.person_label(p.parent.name)}: {p.name}",
            key="studio_sample",
            help="Used when nothing is uploaded.",
        )
    else:
        st.caption(page.for_browser(samples.samples_note()))
    photo = photos.photo_input("studio", "Your photo", sample=sample)

with options_col:
    style_col, renderer_col = st.columns(2)
    style = style_col.selectbox("Style", MASK_STYLES, key="studio_style")
    renderer = renderer_col.radio(
        "Renderer",
        RENDERERS,
        horizontal=True,
        key="studio_renderer",
        help="fmr: fitted to the jaw and nose landmarks, shaded by the face's light (used in "
        "training). warp: a flat mask image placed by a homography (MaskTheFace's method), "
        "never seen in training.",
    )
    colour_col, pattern_col = st.columns(2)
    colour = colour_col.selectbox("Colour", [photos.DEFAULT_COLOUR, *COLOURS],
                                  key="studio_colour")
    pattern = pattern_col.selectbox("Pattern", ["the style's usual", *PATTERNS],
                                    key="studio_pattern")
    coverage_col, seed_col = st.columns([3, 1])
    coverage = coverage_col.slider(
        "Coverage", 0.0, 1.0, 0.7, 0.05, key="studio_coverage",
        help="How high the mask sits on the nose: 0 just above the nose tip, 1 just below the "
        "eyes.",
    )
    seed = seed_col.number_input("Seed", 0, 9999, 0, key="studio_seed",
                                 help="Same seed, same mask.")

if photo is None:
    st.info("Upload a photo or choose a sample to start.", icon=":material/photo_camera:")
    st.stop()

choice = photos.MaskChoice(
    style,
    None if colour == photos.DEFAULT_COLOUR else colour,
    float(coverage),
    pattern if pattern in PATTERNS else None,
    renderer,
    int(seed),
)
try:
    with jobs.face_work():  # one of the server's face-work slots (a line when it is busy)
        detected = photos.detect_photo(photo.data, photo.name)
        if not detected.faces:
            st.error(photos.no_face_message(photo.name, detected.image.shape),
                     icon=":material/error:")
            st.stop()
        index = photos.face_picker(detected, "studio", "the photo")
        face = detected.faces[index]
        with st.spinner("Drawing the mask..."):
            masked, info = photos.masked_photo(photo.data, photo.name, index, choice.key())
except FmrError as exc:
    page.show_error(exc)
    st.stop()

original_col, masked_col = st.columns(2, gap="medium")
shown = drawing.draw_faces(detected.image, detected.faces, index)
width = drawing.width_for_height(shown, PHOTO_HEIGHT)
original_col.image(shown, caption="original", width=width)
details = f"{info['style']}, {info['colour']}, {info['pattern']}, coverage {info['coverage']:.2f}"
masked_col.image(drawing.thumbnail(masked), caption=f"masked: {details}", width=width)
stem = photo.name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
st.download_button(
    "Download the masked photo (PNG, full size)",
    drawing.encode_png(masked),
    file_name=f"{stem}_{info['style']}.png",
    mime="image/png",
    icon=":material/download:",
    key="studio_download",
)

st.subheader("All styles")
if st.toggle("Show every style on this face", key="studio_grid",
             help="Each style in its usual colours and patterns, with the coverage, renderer "
             "and seed chosen above."):
    grid = st.columns(len(MASK_STYLES))
    with jobs.face_work():
        for style_name, column in zip(MASK_STYLES, grid, strict=True):
            try:
                styled, _ = photos.masked_photo(
                    photo.data, photo.name, index,
                    (style_name, None, choice.coverage, None, choice.renderer, choice.seed),
                )
            except FmrError as exc:
                column.warning(page.for_browser(f"{style_name}: {exc}"))
                continue
            column.image(drawing.face_closeup(styled, face, margin=0.3), caption=style_name,
                         width="stretch")
