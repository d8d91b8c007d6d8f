"""PNG figures for open-world evaluation (matplotlib, Agg backend; no display needed).

* `plot_roc_curves` / `plot_pr_curves`: several detectors (e.g. GMM score vs softmax baselines,
  or two models) on one figure, metric values in the legend.
* `plot_reliability_diagram` / `plot_reliability_diagrams`: accuracy per confidence bin as bars,
  the gap to perfect calibration hatched, the diagonal, ECE in the title, and below it the share
  of pixels per bin (log scale: most pixels sit in the top bin). The plural draws one panel per
  model side by side (e.g. GMMSeg vs its softmax twin).

Inputs are plain arrays/dicts, so the figures can be rebuilt from the saved JSON / npz files
(`load_anomaly_curves`, `load_calibration_bins`).
"""

import json
import os
from typing import Dict, Mapping, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = [
    "plot_roc_curves",
    "plot_pr_curves",
    "plot_reliability_diagram",
    "plot_reliability_diagrams",
    "load_anomaly_curves",
    "load_calibration_bins",
]

_COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _style(i: int, label: str) -> dict:
    primary = i == 0
    return {
        "color": _COLORS[i % len(_COLORS)],
        "linewidth": 2.4 if primary else 1.6,
        "linestyle": "-" if primary else ("--", "-.", ":")[(i - 1) % 3],
    }


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_roc_curves(curves: Mapping[str, Mapping[str, np.ndarray]], path: str, title: str) -> str:
    """curves: legend label -> {"fpr": (n,), "tpr": (n,), optional "AUROC": percent,
    optional "FPR95": percent}. The first entry is drawn as the primary (thick solid) line."""
    fig, ax = plt.subplots(figsize=(6.4, 5.6), constrained_layout=True)
    for i, (label, c) in enumerate(curves.items()):
        extra = []
        if "AUROC" in c:
            extra.append(f"AUROC {c['AUROC']:.2f}")
        if "FPR95" in c:
            extra.append(f"FPR95 {c['FPR95']:.2f}")
        text = f"{label} ({', '.join(extra)})" if extra else label
        ax.plot(c["fpr"], c["tpr"], label=text, **_style(i, label))
    ax.plot([0, 1], [0, 1], color="0.6", linewidth=1, linestyle=":", label="chance")
    ax.axhline(0.95, color="0.75", linewidth=0.8, linestyle="--")
    ax.text(0.99, 0.945, "TPR 95%", ha="right", va="top", fontsize=8, color="0.4")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="False positive rate (known pixels flagged)",
        ylabel="True positive rate (anomalous pixels found)",
        title=title,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_pr_curves(
    curves: Mapping[str, Mapping[str, np.ndarray]],
    path: str,
    title: str,
    positive_rate: Optional[float] = None,
) -> str:
    """curves: legend label -> {"recall": (n,), "precision": (n,), optional "AP": percent}.
    positive_rate: share of anomalous pixels, drawn as the chance level."""
    fig, ax = plt.subplots(figsize=(6.4, 5.6), constrained_layout=True)
    for i, (label, c) in enumerate(curves.items()):
        text = f"{label} (AP {c['AP']:.2f})" if "AP" in c else label
        ax.plot(c["recall"], c["precision"], label=text, **_style(i, label))
    if positive_rate is not None:
        ax.axhline(
            positive_rate,
            color="0.6",
            linewidth=1,
            linestyle=":",
            label=f"chance ({100 * positive_rate:.2f}% anomalous)",
        )
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="Recall (anomalous pixels found)",
        ylabel="Precision (flagged pixels that are anomalous)",
        title=title,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def _draw_reliability(ax_top, ax_bottom, bins: Mapping, label: Optional[str]) -> None:
    acc = np.asarray(bins["bin_accuracy"], dtype=float)
    conf = np.asarray(bins["bin_confidence"], dtype=float)
    count = np.asarray(bins["bin_count"], dtype=float)
    n = acc.size
    edges = np.linspace(0, 1, n + 1)
    centers, width = (edges[:-1] + edges[1:]) / 2, 1.0 / n
    filled = count > 0
    ax_top.bar(
        centers[filled],
        acc[filled],
        width=width,
        color="#1f77b4",
        edgecolor="k",
        linewidth=0.6,
        label="accuracy",
    )
    gap_low = np.minimum(acc, conf)[filled]
    ax_top.bar(
        centers[filled],
        np.abs(conf - acc)[filled],
        bottom=gap_low,
        width=width,
        color="#d62728",
        alpha=0.3,
        edgecolor="#d62728",
        hatch="//",
        linewidth=0.6,
        label="gap to confidence",
    )
    ax_top.plot(conf[filled], conf[filled], "o", color="k", markersize=3, label="mean confidence")
    ax_top.plot(
        [0, 1], [0, 1], color="0.4", linestyle="--", linewidth=1, label="perfect calibration"
    )
    ece = bins.get("ECE")
    head = f"{label}\n" if label else ""
    ax_top.set_title(f"{head}ECE = {ece:.2f}%" if ece is not None else head.strip())
    ax_top.set(xlim=(0, 1), ylim=(0, 1), ylabel="Pixel accuracy")
    ax_top.grid(alpha=0.3)
    ax_top.legend(loc="upper left", fontsize=7)
    share = count / max(count.sum(), 1)
    ax_bottom.bar(
        centers,
        np.where(share > 0, share, np.nan),
        width=width,
        color="0.5",
        edgecolor="k",
        linewidth=0.5,
    )
    ax_bottom.set_yscale("log")
    ax_bottom.set(
        xlim=(0, 1),
        ylim=(max(share[share > 0].min() / 2, 1e-7) if filled.any() else 1e-7, 1.5),
        xlabel="Confidence (max softmax probability)",
        ylabel="Share of pixels",
    )
    ax_bottom.grid(alpha=0.3)


def plot_reliability_diagrams(panels: Mapping[str, Mapping], path: str, title: str) -> str:
    """panels: model label -> {"bin_accuracy", "bin_confidence", "bin_count" (B,), "ECE" percent}."""
    k = max(len(panels), 1)
    fig, axes = plt.subplots(
        2,
        k,
        figsize=(4.8 * k, 6.4),
        squeeze=False,
        sharex=True,
        gridspec_kw={"height_ratios": [3, 1]},
        constrained_layout=True,
    )
    for j, (label, bins) in enumerate(panels.items()):
        _draw_reliability(axes[0, j], axes[1, j], bins, label)
    fig.suptitle(title)
    return _save(fig, path)


def plot_reliability_diagram(bins: Mapping, path: str, title: str) -> str:
    """One reliability diagram (see plot_reliability_diagrams for the keys of `bins`)."""
    return plot_reliability_diagrams({"": bins}, path, title)


def load_anomaly_curves(npz_path: str) -> Dict[str, Dict[str, np.ndarray]]:
    """The curves an AnomalyEvaluator saved: score name -> {"fpr", "tpr", "roc_thresholds",
    "precision", "recall", "pr_thresholds"}."""
    out: Dict[str, Dict[str, np.ndarray]] = {}
    with np.load(npz_path) as data:
        for key in data.files:
            score, _, field = key.partition("/")
            out.setdefault(score, {})[field] = data[key]
    return out


def load_calibration_bins(json_path: str) -> Dict[str, object]:
    """The bins a CalibrationEvaluator saved, ready for plot_reliability_diagram(s)."""
    with open(json_path) as f:
        data = json.load(f)
    bins = {
        k: np.array([np.nan if v is None else v for v in data["bins"][k]], dtype=float)
        for k in ("bin_accuracy", "bin_confidence", "bin_count")
    }
    bins["ECE"] = data["ECE"]
    return bins
