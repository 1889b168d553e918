"""fmr's Streamlit app: `streamlit run streamlit_app.py` (or scripts/run_app.sh).

The home page is here; every other page is a file in pages/ that also runs on its own.
"""

import streamlit as st

from fmr.app import page

PAGES = (
    ("pages/verify_pair.py", "Verify a pair", ":material/compare:",
     "Two photos: same person or not, per model, with how sure it is and why."),
    ("pages/mask_studio.py", "Mask studio", ":material/masks:",
     "Draw a synthetic mask on any face: style, colour, pattern, coverage; download it."),
    ("pages/find_a_person.py", "Find a person", ":material/person_search:",
     "Who is this? A photo searched in a gallery of people: top 5, or not in the gallery."),
    ("pages/compare_backbones.py", "Compare backbones", ":material/grid_view:",
     "Similarity matrices, a 2-D map of the embeddings, and what a mask costs each model."),
    ("pages/arcface_angles.py", "ArcFace angles", ":material/architecture:",
     "Angles between embeddings on the evaluation pairs, a live threshold, the margin."),
)


def home() -> None:
    from fmr.app.eval_scores import load_scores
    from fmr.app.models import (
        accuracy_lines,
        backbone_inventory,
        loaded_models,
        training_data,
    )
    from fmr.metrics import cosine_to_degrees

    page.setup("Masked face recognition", ":material/face:")
    st.title("fmr: masked face recognition")
    st.markdown(
        "fmr tells whether two photos show the same person, even when one of them wears a "
        "face mask. This app runs its models on your photos, draws synthetic masks, and shows "
        "how the models measure faces: as angles between embeddings, with thresholds "
        "calibrated on held-out people."
    )
    models = loaded_models()  # loads every backbone once per server, with a spinner
    loaded = {e.family for e in models.embedders}
    evaluated = load_scores()

    st.subheader("Backbones")
    inventory = backbone_inventory()
    missing = [info.title for info in inventory if info.family not in loaded]
    if missing:
        st.warning(
            f"Missing: {', '.join(missing)}. The pages use the {len(loaded)} backbone"
            f"{'s' * (len(loaded) != 1)} that loaded; each card says how to get the others.",
            icon=":material/warning:",
        )
    for info, column in zip(inventory, st.columns(len(inventory)), strict=True):
        with column.container(border=True, height="stretch"):
            status = ":green-badge[loaded]" if info.family in loaded else ":red-badge[missing]"
            st.markdown(f"#### {info.title} {status}")
            if info.family not in loaded:
                reason = next((m["reason"] for m in models.missing
                               if m["backbone"] == info.family), info.reason)
                st.caption(page.for_browser(reason))
                continue
            card = info.card
            st.markdown(f"`{card.get('name', '')}` · {card.get('architecture', '')}, "
                        f"{card.get('embedding_size', '?')}-d embeddings")
            st.markdown(f"**Trained on** {page.for_browser(training_data(card))}")
            measured = accuracy_lines(card)
            scores = evaluated.get(info.family)
            if scores is not None and not measured:  # the card's own record comes first
                protocol = scores.protocol_short
                measured += [
                    f"{protocol}, {c.label}: {c.summary['kfold_accuracy']['mean']:.2%}"
                    for c in scores.conditions.values()
                    if c.summary.get("kfold_accuracy")
                ]
            st.markdown("**Measured accuracy** " + (
                "\n".join(f"\n- {line}" for line in measured) if measured else "not yet"))
            calibration = card.get("calibration") or {}
            if calibration:
                threshold = calibration["threshold"]
                st.markdown(
                    f"**Threshold** {threshold:.3f} cosine ({cosine_to_degrees(threshold):.1f}°) "
                    f"for FAR {calibration['target_far']:g} on validation pairs"
                )
            else:
                st.markdown("**Threshold** not calibrated: no verdicts, scores only")

    st.subheader("Pages")
    columns = st.columns(len(PAGES))
    for (path, title, icon, blurb), column in zip(PAGES, columns, strict=True):
        with column.container(border=True, height="stretch"):
            st.page_link(path, label=title, icon=icon)
            st.caption(blurb)
    st.caption(
        "Research demo. The photos you upload stay in this server's memory and are not stored. "
        "Checkpoints trained on LFW and CelebA are for research and demonstration only."
    )


navigation = st.navigation(
    [st.Page(home, title="Home", icon=":material/home:", default=True)]
    + [st.Page(path, title=title, icon=icon) for path, title, icon, _ in PAGES]
)
navigation.run()
