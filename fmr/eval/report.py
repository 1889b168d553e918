"""Evaluation reports: metrics.json, an interactive plotly report.html, and PNG charts.

PNGs are drawn with matplotlib (plotly's own PNG export needs kaleido and a browser, which fmr
does not ship). Every chart is drawn from the numbers in metrics.json, nothing else.
"""

from __future__ import annotations

import json
from html import escape as html_escape
from pathlib import Path

import numpy as np

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _label(entry: dict) -> str:
    return f"{entry['name']} ({entry['backbone']})"


def summary_rows(report: dict) -> list[dict]:
    """One row per backbone: accuracy, TAR at FAR, EER, calibrated accuracy."""
    rows = []
    for entry in report["backbones"]:
        listed, all_pairs = entry["listed_pairs"], entry["all_pairs"]
        kfold = listed["kfold_accuracy"]
        tar = {p["far_target"]: p for p in all_pairs.get("tar_at_far", [])}
        rows.append(
            {
                "backbone": _label(entry),
                "accuracy": kfold["mean"],
                "std": kfold["std"],
                "tar_1e-3": tar.get(1e-3, {}).get("tar"),
                "tar_1e-4": tar.get(1e-4, {}).get("tar"),
                "eer": all_pairs.get("eer"),
                "calibrated_accuracy": entry.get("calibrated", {}).get("listed_accuracy"),
                "failed_pairs": listed["n_failed"],
            }
        )
    return rows


def summary_table(report: dict) -> str:
    """A markdown table of the headline numbers (percentages)."""

    def pct(value) -> str:
        return "n/a" if value is None else f"{value * 100:.2f}"

    lines = [
        f"{report['protocol']['description']}; condition: {report['condition']['label']}",
        "",
        "| backbone | accuracy % (k-fold, mean +- std) | TAR@FAR=1e-3 % | TAR@FAR=1e-4 % | EER % "
        "| accuracy % at calibrated threshold | failed pairs |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in summary_rows(report):
        lines.append(
            f"| {row['backbone']} | {pct(row['accuracy'])} +- {pct(row['std'])} "
            f"| {pct(row['tar_1e-3'])} | {pct(row['tar_1e-4'])} | {pct(row['eer'])} "
            f"| {pct(row['calibrated_accuracy'])} | {row['failed_pairs']} |"
        )
    return "\n".join(lines)


def identification_table(report: dict) -> str:
    """A markdown table of the 1:N identification numbers (percentages), one row per backbone
    that has them, under a line giving the protocol's sizes; "" when none has them."""

    def pct(value) -> str:
        return "n/a" if value is None else f"{value * 100:.2f}"

    entries = [e for e in report["backbones"] if e.get("identification")]
    if not entries:
        return ""
    first = entries[0]["identification"]
    sizes = first["sizes"]
    closed, open_set = sizes["closed_set"], sizes["open_set"]
    lines = [
        f"Identification (1:N), gallery {first['gallery_condition']}, probes "
        f"{first['probe_condition']}: closed set {closed['n_gallery']:,} people enrolled (one "
        f"image each; {sizes['n_people_with_1_image']:,} of them distractors with no probe), "
        f"{closed['n_probes']:,} probes; open set {open_set['n_gallery']:,} people enrolled, "
        f"{open_set['n_mated']:,} mated and {open_set['n_nonmated']:,} non-mated probes (of "
        f"{open_set['n_nonmated_people']:,} people). DIR at FPIR: threshold set on the "
        "non-mated probes; calibrated: the card's threshold for FPIR 1% in a gallery of that "
        "size, and what it gives here.",
        "",
        "| backbone | rank-1 % | rank-5 % | DIR@FPIR=1% % | DIR@FPIR=10% % "
        "| calibrated threshold | its FPIR % | its DIR % | failed gallery / probe images |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in entries:
        block = entry["identification"]
        closed, open_set = block["closed_set"], block["open_set"]
        at = {p["fpir_target"]: p["dir"] for p in open_set.get("dir_at_fpir", [])}
        calibrated = open_set.get("calibrated") or {}
        threshold = calibrated.get("threshold")
        failed_gallery = closed["n_gallery_failed"]
        failed_probes = len(block.get("failed_probes", []))
        lines.append(
            f"| {_label(entry)} | {pct(closed.get('rank_1'))} | {pct(closed.get('rank_5'))} "
            f"| {pct(at.get(0.01))} | {pct(at.get(0.1))} "
            f"| {'n/a' if threshold is None else f'{threshold:.4f}'} "
            f"| {pct(calibrated.get('fpir'))} | {pct(calibrated.get('dir'))} "
            f"| {failed_gallery} / {failed_probes} |"
        )
    return "\n".join(lines)


def _centres(edges) -> np.ndarray:
    edges = np.asarray(edges, dtype=np.float64)
    return (edges[:-1] + edges[1:]) / 2


def _density(counts) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    return counts / max(counts.sum(), 1.0)


def _plotly_figures(report: dict) -> list:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    entries = report["backbones"]
    condition = report["condition"]["label"]
    figures = []

    roc = go.Figure()
    for colour, entry in zip(COLOURS, entries, strict=False):
        points = entry["all_pairs"].get("roc")
        if points:
            roc.add_trace(
                go.Scatter(
                    x=points["far"],
                    y=points["tar"],
                    mode="lines+markers",
                    name=_label(entry),
                    line={"color": colour},
                    marker={"size": 4},
                    customdata=points["threshold"],
                    hovertemplate="FAR %{x:.1e}<br>TAR %{y:.4f}<br>threshold %{customdata:.4f}",
                )
            )
    roc.update_layout(
        title=f"ROC over all pairs of the evaluation images ({condition})",
        xaxis={"type": "log", "title": "false accept rate (log scale)"},
        yaxis={"title": "true accept rate", "range": [0, 1.01]},
        template="plotly_white",
    )
    figures.append(roc)

    scores = make_subplots(rows=len(entries), cols=1, subplot_titles=[_label(e) for e in entries])
    for row, entry in enumerate(entries, start=1):
        source = (
            entry["all_pairs"] if "genuine_scores" in entry["all_pairs"] else entry["listed_pairs"]
        )
        for kind, colour in (("genuine", COLOURS[2]), ("impostor", COLOURS[1])):
            hist = source[f"{kind}_scores"]
            scores.add_trace(
                go.Bar(
                    x=_centres(hist["edges"]),
                    y=_density(hist["counts"]),
                    name=kind,
                    marker_color=colour,
                    opacity=0.6,
                    showlegend=row == 1,
                    legendgroup=kind,
                ),
                row=row,
                col=1,
            )
        calibrated = entry.get("calibrated")
        if calibrated:
            scores.add_vline(x=calibrated["threshold"], line_dash="dash", row=row, col=1)
    scores.update_layout(
        title=f"Cosine similarity, all pairs ({condition}); dashed: calibrated threshold",
        barmode="overlay",
        template="plotly_white",
        height=300 * len(entries),
    )
    scores.update_xaxes(title_text="cosine similarity")
    scores.update_yaxes(title_text="share of pairs")
    figures.append(scores)

    angles = make_subplots(rows=len(entries), cols=1, subplot_titles=[_label(e) for e in entries])
    for row, entry in enumerate(entries, start=1):
        all_pairs = entry["all_pairs"]
        histograms = [
            ("genuine pairs", all_pairs.get("genuine_angle_histogram"), COLOURS[2]),
            ("impostor pairs", all_pairs.get("impostor_angle_histogram"), COLOURS[1]),
            ("to identity centre", entry["angles"]["to_identity_centre_histogram"], COLOURS[0]),
        ]
        for name, hist, colour in histograms:
            if hist:
                angles.add_trace(
                    go.Bar(
                        x=_centres(hist["edges_deg"]),
                        y=_density(hist["counts"]),
                        name=name,
                        marker_color=colour,
                        opacity=0.55,
                        showlegend=row == 1,
                        legendgroup=name,
                    ),
                    row=row,
                    col=1,
                )
    angles.update_layout(
        title=f"Angles between embeddings, degrees ({condition})",
        barmode="overlay",
        template="plotly_white",
        height=300 * len(entries),
    )
    angles.update_xaxes(title_text="angle (degrees)")
    figures.append(angles)

    folds = go.Figure()
    for colour, entry in zip(COLOURS, entries, strict=False):
        per_fold = entry["listed_pairs"]["kfold_accuracy"]["folds"]
        folds.add_trace(
            go.Bar(
                x=[f"fold {f['fold']}" for f in per_fold],
                y=[f["accuracy"] for f in per_fold],
                name=_label(entry),
                marker_color=colour,
            )
        )
    folds.update_layout(
        title="Accuracy per fold (threshold chosen on the other folds)",
        barmode="group",
        yaxis={"title": "accuracy"},
        template="plotly_white",
    )
    figures.append(folds)
    return figures


def write_html(report: dict, path: Path) -> Path:
    """One self-contained HTML file (plotly.js embedded once, works offline)."""
    import plotly.io as pio

    parts = [
        pio.to_html(fig, full_html=False, include_plotlyjs=(i == 0))
        for i, fig in enumerate(_plotly_figures(report))
    ]
    table = summary_table(report).replace("|", " | ")
    identification = identification_table(report)
    if identification:
        table += "\n\n" + identification.replace("|", " | ")
    html = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>fmr eval</title></head><body>"
        f"<h1>fmr eval: {report['condition']['label']}</h1><pre>{html_escape(table)}</pre>"
        + "".join(parts)
        + "</body></html>"
    )
    path.write_text(html, encoding="utf-8")
    return path


def write_pngs(report: dict, out_dir: Path) -> list[Path]:
    """roc.png, scores.png and angles.png drawn with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = report["backbones"]
    condition = report["condition"]["label"]
    written = []

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    for colour, entry in zip(COLOURS, entries, strict=False):
        points = entry["all_pairs"].get("roc")
        if points:
            ax.semilogx(points["far"], points["tar"], ".-", color=colour, label=_label(entry), ms=3)
    ax.set(
        xlabel="false accept rate (log scale)",
        ylabel="true accept rate",
        ylim=(0, 1.01),
        title=f"ROC, all pairs\n{condition}",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    written.append(out_dir / "roc.png")
    fig.savefig(written[-1])
    plt.close(fig)

    for kind in ("scores", "angles"):
        fig, axes = plt.subplots(
            len(entries), 1, figsize=(6.4, 2.6 * len(entries)), dpi=120, squeeze=False
        )
        for ax, entry in zip(axes[:, 0], entries, strict=True):
            all_pairs = entry["all_pairs"]
            if kind == "scores":
                source = all_pairs if "genuine_scores" in all_pairs else entry["listed_pairs"]
                series = [
                    ("genuine", source["genuine_scores"], "edges", COLOURS[2]),
                    ("impostor", source["impostor_scores"], "edges", COLOURS[1]),
                ]
            else:
                series = [
                    (
                        "genuine pairs",
                        all_pairs.get("genuine_angle_histogram"),
                        "edges_deg",
                        COLOURS[2],
                    ),
                    (
                        "impostor pairs",
                        all_pairs.get("impostor_angle_histogram"),
                        "edges_deg",
                        COLOURS[1],
                    ),
                    (
                        "to identity centre",
                        entry["angles"]["to_identity_centre_histogram"],
                        "edges_deg",
                        COLOURS[0],
                    ),
                ]
            for name, hist, key, colour in series:
                if hist:
                    centres = _centres(hist[key])
                    width = centres[1] - centres[0]
                    ax.bar(
                        centres,
                        _density(hist["counts"]),
                        width=width,
                        color=colour,
                        alpha=0.55,
                        label=name,
                    )
            calibrated = entry.get("calibrated")
            if kind == "scores" and calibrated:
                ax.axvline(
                    calibrated["threshold"],
                    color="black",
                    ls="--",
                    lw=1,
                    label="calibrated threshold",
                )
            ax.set_title(_label(entry), fontsize=9)
            ax.set_xlabel("cosine similarity" if kind == "scores" else "angle (degrees)")
            ax.set_ylabel("share")
            ax.legend(fontsize=7)
        fig.suptitle(
            f"{'Similarity' if kind == 'scores' else 'Angle'} distributions\n{condition}",
            fontsize=9,
        )
        fig.tight_layout()
        written.append(out_dir / f"{kind}.png")
        fig.savefig(written[-1])
        plt.close(fig)
    return written


def write_report(report: dict, out_dir: str | Path) -> list[Path]:
    """Write metrics.json, report.html and the PNG charts into `out_dir`; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics_file = out / "metrics.json"
    metrics_file.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return [metrics_file, write_html(report, out / "report.html"), *write_pngs(report, out)]
