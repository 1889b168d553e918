"""ArcFace angles: how far apart same-person and different-person embeddings are, in degrees,
on the evaluation pairs, and what a threshold on that angle costs."""

import math

import numpy as np
import pandas as pd
import streamlit as st

from fmr.app import charts, page
from fmr.app.eval_scores import load_scores, score_file_problems, scores_dir
from fmr.app.models import FAMILY_TITLES, backbone_inventory
from fmr.metrics import cosine_to_degrees, error_rates, roc_curve

CONDITION_COLOURS = ("#1565c0", "#ef6c00", "#6a1b9a", "#00838f")

page.setup("ArcFace angles", ":material/architecture:")
st.title("ArcFace angles")
st.caption(
    "A face embedding is a direction. Two photos of one person should point almost the same "
    "way (a small angle), two people far apart. ArcFace trains for exactly this, with a margin "
    "in degrees."
)

scores = load_scores()
for problem in score_file_problems():
    st.warning(page.for_browser(problem), icon=":material/warning:")
if not scores:
    st.info(
        f"No evaluation scores in {page.for_browser(str(scores_dir()))}, so there is nothing "
        "to plot yet. Make them "
        "with `fmr eval --backbone dlib --out runs/eval` (and again with --mask-second "
        "surgical), then `python -m fmr.app.eval_scores runs/eval`.",
        icon=":material/info:",
    )
else:
    cards = {b.family: b.card for b in backbone_inventory()}
    pick_col, slider_col = st.columns([1, 2], gap="large")
    family = pick_col.selectbox(  # the reference first: the one every other is compared with
        "Backbone", sorted(scores, key=lambda f: (f != "dlib", f)),
        format_func=lambda f: FAMILY_TITLES.get(f, f),
        key="angles_backbone",
    )
    data = scores[family]
    calibration = (cards.get(family) or {}).get("calibration") or {}
    default_deg = (
        float(cosine_to_degrees(calibration["threshold"])) if calibration else 35.0
    )
    threshold_deg = slider_col.slider(
        "Threshold angle (degrees): pairs closer than this are called the same person",
        5.0, 90.0, round(default_deg, 1), 0.1, format="%.1f°", key="angle_threshold",
        help="The calibrated threshold (FAR 1e-3 on validation pairs) is the default."
        if calibration else None,
    )
    threshold = math.cos(math.radians(threshold_deg))
    pick_col.caption(f"{data.name} on {data.protocol_short}: {data.pair_count}.")

    available = list(data.conditions.values())
    masked = [c for c in available if c.masked]
    shown_first = available[:1] + (
        [c for c in masked if "surgical" in c.label][:1] or masked[:1])
    chosen = st.multiselect(
        "Conditions", [c.label for c in available], default=[c.label for c in shown_first],
        key="angles_conditions",
        help="One photo masked: the second photo of every pair wears a synthetic mask.",
    )
    conditions = [c for c in available if c.label in chosen] or available[:1]
    rows, points, curves = [], [], []
    for colour, condition in zip(CONDITION_COLOURS, conditions, strict=False):
        far, frr = (float(v[0]) for v in error_rates(condition.genuine, condition.impostor,
                                                      threshold))
        accuracy = (np.sum(condition.genuine >= threshold) + np.sum(condition.impostor
                                                                     < threshold)) / (
            condition.genuine.size + condition.impostor.size)
        rows.append({"condition": condition.label, "FAR": far, "FRR": frr, "TAR": 1 - frr,
                     "accuracy": float(accuracy), "pairs": condition.genuine.size
                     + condition.impostor.size})
        roc_far, roc_tar, _ = roc_curve(condition.genuine, condition.impostor)
        curves.append({"label": f"{condition.label}, listed pairs", "far": roc_far,
                       "tar": roc_tar, "colour": colour})
        everything = condition.summary.get("all_pairs", {}).get("roc")
        if everything:
            curves.append({"label": f"{condition.label}, all pairs", "far": everything["far"],
                           "tar": everything["tar"], "colour": colour, "dash": "dot"})
        points.append({"label": f"threshold, {condition.label}", "far": far, "tar": 1 - frr,
                       "colour": colour})

    first = rows[0]
    metric_cols = st.columns(4)
    metric_cols[0].metric("Threshold", f"{threshold_deg:.1f}°", f"cosine {threshold:.3f}",
                          delta_color="off", delta_arrow="off")
    metric_cols[1].metric("FAR (false accepts)", f"{first['FAR']:.2%}",
                          help=f"{first['condition']}: share of different-person pairs "
                          "called the same")
    metric_cols[2].metric("FRR (false rejects)", f"{first['FRR']:.2%}",
                          help=f"{first['condition']}: share of same-person pairs called "
                          "different")
    metric_cols[3].metric("TAR (true accepts)", f"{first['TAR']:.2%}")

    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        column_config={
            "condition": st.column_config.TextColumn("condition (listed pairs)"),
            "FAR": st.column_config.NumberColumn(format="percent"),
            "FRR": st.column_config.NumberColumn(format="percent"),
            "TAR": st.column_config.NumberColumn(format="percent"),
            "accuracy": st.column_config.NumberColumn(format="percent"),
        },
        key="threshold_table",
    )

    st.plotly_chart(
        charts.angle_histograms(
            [(c.label, cosine_to_degrees(c.genuine), cosine_to_degrees(c.impostor))
             for c in conditions],
            threshold_deg,
        ),
        width="stretch", key="angle_histograms",
    )
    st.markdown("**ROC**: listed pairs (solid) and all pairs of the evaluation images "
                "(dotted), with the threshold's operating point on the listed pairs")
    n_impostor = min(c.summary.get("all_pairs", {}).get("n_impostor") or c.impostor.size
                     for c in conditions)
    st.plotly_chart(charts.roc(curves, points, far_floor=10 ** math.floor(
        math.log10(1 / n_impostor))), width="stretch", key="roc")

    st.markdown("**Over all pairs** of the evaluation images (each at its own threshold)")
    table = {}
    for condition in conditions:
        summary = condition.summary
        column = {"accuracy (10-fold, listed pairs)":
                  summary.get("kfold_accuracy", {}).get("mean")}
        all_pairs = summary.get("all_pairs", {})
        column["EER"] = all_pairs.get("eer")
        for point in all_pairs.get("tar_at_far", []):
            column[f"TAR at FAR {point['far_target']:g}"] = (
                point["tar"] if point.get("measurable", True) else None)
        table[condition.label] = column
    st.dataframe(
        pd.DataFrame(table), key="tar_table",
        column_config={label: st.column_config.NumberColumn(format="percent")
                       for label in table},
    )
    counts = conditions[0].summary.get("all_pairs", {})
    if counts.get("n_impostor"):
        st.caption(
            f"{counts['n_genuine']:,} same-person and {counts['n_impostor']:,} "
            f"different-person pairs of {counts.get('n_images', 0):,} images "
            f"({conditions[0].label}): enough to measure a FAR of 1e-4, which the 1,500 listed "
            "different-person pairs cannot."
        )
    st.caption(page.for_browser(f"Scores: {data.source}."))

st.subheader("The additive angular margin")
text_col, plot_col = st.columns([2, 3], gap="large")
with text_col:
    st.markdown(
        "A classifier over identities scores an embedding *x* against each identity's centre "
        "*W*: with both normalised the score is cos θ, θ being their angle. ArcFace trains "
        "with the **true identity's** logit replaced by **cos(θ + m)**: the network has to "
        "bring a face within θ + m of its own centre, not just nearer than the other "
        "centres. That margin *m* (insightface uses 0.5 rad, 28.6°) is what opens the gap "
        "between the same-person and different-person angles above. CosFace subtracts a "
        "margin from the cosine instead, which is a smaller push at small angles."
    )
    margin = st.slider("Margin m (degrees)", 0.0, 60.0, 28.6, 0.1, format="%.1f°",
                       key="margin_deg")
with plot_col:
    st.plotly_chart(charts.margin_curves(margin), width="stretch", key="margin_plot")
