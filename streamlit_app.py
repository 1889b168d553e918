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
    ("pages/compare_backbones.py", "Compare backbones", ":material/grid_view:",
     "Similarity matrices, a 2-D map of the embeddings, and what a mask costs each model."),
    ("pages/arcface_angles.py", "ArcFace angles", ":material/architecture:",
     "Angles between embeddings on the evaluation pairs, a live threshold, the margin."),
)


def home() -> None:
    import pandas as pd

    from fmr.app.eval_scores import load_scores
    from fmr.app.models import (
        FAMILY_TITLES,
        accuracy_lines,
        backbone_inventory,
        loaded_models,
        training_data,
    )

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
    rows = []
    for info in backbone_inventory():
        card = info.card
        measured = accuracy_lines(card)
        scores = evaluated.get(info.family)
        if scores is not None:
            measured += [
                f"{c.label}, {scores.protocol.split(' of ')[0]}: "
                f"{c.summary['kfold_accuracy']['mean'] * 100:.2f}%"
                for c in scores.conditions.values()
                if c.summary.get("kfold_accuracy")
            ]
        calibration = card.get("calibration") or {}
        rows.append({
            "backbone": info.title,
            "status": "loaded" if info.family in loaded else "missing",
            "checkpoint": card.get("name", "") if info.available else "",
            "architecture": card.get("architecture", ""),
            "training data": training_data(card) if info.available else "",
            "measured accuracy": "; ".join(measured) or ("not measured yet" if info.available
                                                          else ""),
            "threshold (cosine)": calibration.get("threshold"),
        })
    st.dataframe(
        pd.DataFrame(rows), hide_index=True, key="backbones_table",
        column_config={
            "threshold (cosine)": st.column_config.NumberColumn(
                format="%.3f", help="calibrated for FAR 1e-3 on validation pairs"),
            "measured accuracy": st.column_config.TextColumn(width="large"),
            "training data": st.column_config.TextColumn(width="medium"),
        },
    )
    for missing in models.missing:
        title = FAMILY_TITLES.get(missing["backbone"], missing["backbone"])
        st.warning(f"**{title}** is missing: {missing['reason']}", icon=":material/warning:")

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
