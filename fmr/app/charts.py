"""Plotly figures for the pages. Each builder takes plain numbers and returns a figure; no
model runs here. Pages show them with `st.plotly_chart(fig, width="stretch")`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

GENUINE = "#2e7d32"  # same-person pairs
IMPOSTOR = "#c62828"  # different-person pairs
BAND = "#f9a825"  # inconclusive band
INK = "#263238"
PEOPLE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                  "#7f7f7f", "#bcbd22", "#17becf")
MARGIN_SMALL = {"l": 10, "r": 10, "t": 30, "b": 10}


def _centres(low: float, high: float, bins: int) -> np.ndarray:
    edges = np.linspace(low, high, bins + 1)
    return (edges[:-1] + edges[1:]) / 2


def _percent(counts) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    return 100.0 * counts / max(counts.sum(), 1.0)


def score_position(calibration: dict, score: float, height: int = 210) -> go.Figure:
    """Where `score` sits on a backbone's validation genuine and impostor distributions (the
    histograms in its card's calibration), with the threshold and the inconclusive band."""
    hist = calibration["histogram"]
    low, high = (float(v) for v in hist["range"])
    x = _centres(low, high, int(hist["bins"]))
    fig = go.Figure()
    for counts, name, colour in (
        (hist["impostor"], "different people", IMPOSTOR),
        (hist["genuine"], "same person", GENUINE),
    ):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=_percent(counts),
                name=name,
                mode="lines",
                line={"color": colour, "width": 1.5, "shape": "hvh"},
                fill="tozeroy",
                hovertemplate="score %{x:.3f}: %{y:.2f}% of " + name + " pairs<extra></extra>",
            )
        )
    threshold = float(calibration["threshold"])
    band_low = min(float(calibration["inconclusive"]["low"]), threshold)
    if band_low < threshold:
        fig.add_vrect(x0=band_low, x1=threshold, fillcolor=BAND, opacity=0.18, line_width=0)
    fig.add_vline(x=threshold, line={"color": INK, "dash": "dash", "width": 1})
    fig.add_vline(
        x=score,
        line={"color": INK, "width": 3},
        annotation_text="this pair",
        annotation_position="top left" if score > (low + high) / 2 else "top right",
    )
    fig.update_layout(
        height=height,
        margin=MARGIN_SMALL,
        legend={"orientation": "h", "y": 1.18, "x": 0, "font": {"size": 11}},
        xaxis={"title": {"text": "cosine similarity", "font": {"size": 11}},
               "range": [min(low, score - 0.02), max(high, score + 0.01)]},
        yaxis={"title": {"text": "% of pairs", "font": {"size": 11}}},
        hovermode="x unified",
    )
    return fig


def similarity_heatmap(
    matrix: np.ndarray, labels: Sequence[str], title: str, values: bool = True
) -> go.Figure:
    """A square matrix of cosine similarities; values written in the cells when `values` and
    the matrix is small enough to read them."""
    n = len(labels)
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=list(labels),
            y=list(labels),
            colorscale="Viridis",
            zmin=float(np.floor(np.min(matrix) * 10) / 10),  # each model's own range
            zmax=1.0,
            texttemplate="%{z:.2f}" if values and n <= 14 else None,
            textfont={"size": 10},
            colorbar={"title": {"text": "cosine"}, "thickness": 10},
            hovertemplate="%{y}<br>%{x}<br>similarity %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        height=120 + 32 * n,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        yaxis={"autorange": "reversed", "dtick": 1, "tickfont": {"size": 10}},
        xaxis={"tickangle": -60, "dtick": 1, "tickfont": {"size": 10}},
    )
    return fig


def projection(
    points: np.ndarray, people: Sequence[str], masked: Sequence[bool], names: Sequence[str],
    title: str,
) -> go.Figure:
    """A 2-D projection of embeddings: colour = person, filled circle = unmasked, cross =
    masked; a thin line joins each photo's unmasked and masked copies (how far a mask moves it).
    Rows are expected in pairs: the unmasked copy of photo i, then its masked copy."""
    fig = go.Figure()
    for i in range(0, len(points) - 1, 2):
        if names[i] == names[i + 1]:
            fig.add_trace(
                go.Scatter(
                    x=points[i : i + 2, 0], y=points[i : i + 2, 1], mode="lines",
                    line={"color": "#b0bec5", "width": 1}, showlegend=False, hoverinfo="skip",
                )
            )
    for k, person in enumerate(dict.fromkeys(people)):
        colour = PEOPLE_COLOURS[k % len(PEOPLE_COLOURS)]
        for is_masked in (False, True):
            rows = [i for i, (p, m) in enumerate(zip(people, masked, strict=True))
                    if p == person and m == is_masked]
            if not rows:
                continue
            fig.add_trace(
                go.Scatter(
                    x=points[rows, 0], y=points[rows, 1], mode="markers",
                    name=f"{person}{' (masked)' if is_masked else ''}",
                    legendgroup=person,
                    marker={"color": colour, "size": 12 if not is_masked else 11,
                            "symbol": "x" if is_masked else "circle",
                            "line": {"color": "white", "width": 1}},
                    text=[names[i] for i in rows],
                    hovertemplate="%{text}<extra>" + person + "</extra>",
                )
            )
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        height=460,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis={"title": "component 1", "zeroline": False, "showticklabels": False},
        yaxis={"title": "component 2", "zeroline": False, "showticklabels": False,
               "scaleanchor": "x"},
        legend={"font": {"size": 11}, "orientation": "h", "y": -0.12, "x": 0},
    )
    return fig


def score_drop(rows: Sequence[dict]) -> go.Figure:
    """Grouped bars: mean similarity per backbone (x) and comparison kind (colour).

    rows: {"backbone", "kind", "mean", "count"} dicts."""
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    colours = {k: c for k, c in zip(kinds, (GENUINE, "#81c784", "#5c6bc0", IMPOSTOR), strict=False)}
    fig = go.Figure()
    for kind in kinds:
        chosen = [r for r in rows if r["kind"] == kind]
        fig.add_trace(
            go.Bar(
                x=[r["backbone"] for r in chosen],
                y=[r["mean"] for r in chosen],
                name=kind,
                marker_color=colours.get(kind),
                text=[f"{r['mean']:.3f}" for r in chosen],
                textposition="outside",
                customdata=[r["count"] for r in chosen],
                hovertemplate="%{x}: mean %{y:.3f} over %{customdata} pairs<extra>" + kind
                + "</extra>",
            )
        )
    low = min((r["mean"] for r in rows), default=0.0)
    fig.update_layout(
        barmode="group",
        height=340,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        # The interesting part is near the top: the axis starts just below the lowest bar.
        yaxis={"title": "mean cosine similarity", "range": [np.floor(low * 10 - 0.5) / 10, 1.02]},
        legend={"orientation": "h", "y": 1.12, "x": 0},
    )
    return fig


def angle_histograms(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray]], threshold_deg: float
) -> go.Figure:
    """Side-by-side histograms of genuine and impostor angles (degrees), one panel per
    condition: (title, genuine angles, impostor angles). The threshold is a dashed line: pairs
    at a smaller angle are called "same"."""
    fig = make_subplots(rows=1, cols=len(panels), shared_yaxes=True,
                        subplot_titles=[p[0] for p in panels], horizontal_spacing=0.04)
    for col, (_, genuine, impostor) in enumerate(panels, start=1):
        for values, name, colour in ((genuine, "same person", GENUINE),
                                     (impostor, "different people", IMPOSTOR)):
            fig.add_trace(
                go.Histogram(
                    x=values, name=name, legendgroup=name, showlegend=col == 1,
                    xbins={"start": 0, "end": 120, "size": 2}, histnorm="percent",
                    marker={"color": colour}, opacity=0.6,
                    hovertemplate="%{x} degrees: %{y:.1f}% of " + name + " pairs<extra></extra>",
                ),
                row=1, col=col,
            )
        fig.add_vrect(x0=0, x1=threshold_deg, fillcolor=GENUINE, opacity=0.06, line_width=0,
                      row=1, col=col)
        fig.add_vline(x=threshold_deg, line={"color": INK, "dash": "dash", "width": 1.5},
                      row=1, col=col)
    high = max([60.0] + [float(np.max(v)) + 6 for p in panels for v in p[1:] if len(v)])
    fig.update_xaxes(title_text="angle between the embeddings (degrees)", range=[0, high])
    fig.update_yaxes(title_text="% of pairs", row=1, col=1)
    fig.update_layout(barmode="overlay", height=330, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      legend={"orientation": "h", "y": -0.25, "x": 0})
    return fig


def roc(
    curves: Sequence[dict], points: Sequence[dict] = (), far_floor: float = 1e-4
) -> go.Figure:
    """ROC curves with a log FAR axis. curves: {"label", "far", "tar", "dash"?, "colour"?};
    points: {"label", "far", "tar", "colour"?} markers (the slider's operating points). FARs
    below `far_floor` (including 0) are drawn at the floor."""
    fig = go.Figure()
    for curve in curves:
        far = np.maximum(np.asarray(curve["far"], dtype=np.float64), far_floor)
        fig.add_trace(
            go.Scatter(
                x=far, y=np.asarray(curve["tar"]) * 100, mode="lines", name=curve["label"],
                line={"color": curve.get("colour", INK), "dash": curve.get("dash", "solid"),
                      "shape": "hv"},
                hovertemplate="FAR %{x:.2g}<br>TAR %{y:.2f}%<extra>" + curve["label"] + "</extra>",
            )
        )
    for point in points:
        fig.add_trace(
            go.Scatter(
                x=[max(point["far"], far_floor)], y=[point["tar"] * 100], mode="markers",
                name=point["label"], marker={"size": 13, "color": point.get("colour", INK),
                                             "symbol": "diamond", "line": {"color": "white",
                                                                           "width": 1.5}},
                hovertemplate="FAR %{x:.2g}<br>TAR %{y:.2f}%<extra>" + point["label"]
                + "</extra>",
            )
        )
    fig.update_layout(
        height=380,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis={"type": "log", "title": "false accept rate (FAR)",
               "range": [math.log10(far_floor), 0], "exponentformat": "power"},
        yaxis={"title": "true accept rate (TAR, %)", "range": [0, 101]},
        legend={"font": {"size": 11}},
    )
    return fig


def margin_curves(margin_deg: float, cosface_margin: float = 0.35) -> go.Figure:
    """The target logit against the angle theta to the class centre: plain softmax cos(theta),
    ArcFace cos(theta + m) (m in degrees here; insightface's m = 0.5 rad is 28.6 degrees) and
    CosFace cos(theta) - m."""
    theta = np.linspace(0, 180, 361)
    m = math.radians(margin_deg)
    rad = np.radians(theta)
    arc = np.where(theta + margin_deg <= 180, np.cos(rad + m), np.nan)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=theta, y=np.cos(rad), name="softmax: cos θ",
                             line={"color": "#90a4ae", "width": 2}))
    fig.add_trace(go.Scatter(x=theta, y=np.cos(rad) - cosface_margin,
                             name=f"CosFace: cos θ − {cosface_margin}",
                             line={"color": "#5c6bc0", "width": 2, "dash": "dot"}))
    fig.add_trace(go.Scatter(x=theta, y=arc, name=f"ArcFace: cos(θ + {margin_deg:.1f}°)",
                             line={"color": IMPOSTOR, "width": 3}))
    fig.update_traces(hovertemplate="θ %{x:.0f}°: logit %{y:.3f}")
    fig.update_layout(
        height=330,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis={"title": "θ: angle between the embedding and its class centre (degrees)",
               "range": [0, 180], "dtick": 30},
        yaxis={"title": "target logit (before the scale s)", "range": [-1.45, 1.05]},
        legend={"orientation": "h", "y": 1.14, "x": 0},
    )
    return fig


def occlusion(panels: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> go.Figure:
    """Occlusion maps over face crops: (title, crop (H, W, 3) uint8, heatmap (H, W)). Red:
    hiding this region lowers the similarity (it supports the match); blue: raises it."""
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels],
                        horizontal_spacing=0.06)
    import cv2

    # The map is an average of overlapping squares (blocky); smooth it for reading only.
    smoothed = [cv2.GaussianBlur(np.asarray(p[2], np.float32), (0, 0), p[1].shape[0] / 24)
                for p in panels]
    limit = max(1e-6, max(float(np.abs(s).max()) for s in smoothed))
    for col, ((_, crop, _), heatmap) in enumerate(zip(panels, smoothed, strict=True), start=1):
        fig.add_trace(go.Image(z=crop, hoverinfo="skip"), row=1, col=col)
        fig.add_trace(
            go.Heatmap(
                z=heatmap, coloraxis="coloraxis", opacity=0.55,
                hovertemplate="similarity drop when hidden: %{z:+.3f}<extra></extra>",
            ),
            row=1, col=col,
        )
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    for col in range(1, len(panels) + 1):
        fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False,
                         autorange="reversed", scaleanchor=f"x{col if col > 1 else ''}",
                         row=1, col=col)
    fig.update_layout(
        coloraxis={"colorscale": "RdBu", "reversescale": True, "cmin": -limit, "cmax": limit,
                   "colorbar": {"title": {"text": "similarity<br>drop"}, "thickness": 12}},
        height=330,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return fig
