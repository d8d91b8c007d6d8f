"""The report of a curve study (curves.py): every evaluation on disk collected, mean +- sample std
over the seeds at each iteration, written as <results>.json, <results>.md (tables) and one plot
<results>_<dataset>.png per dataset."""

import glob
import json
import os
import re
from typing import Dict, Sequence

import numpy as np

from .curves import Run
from .tables import SCORES, metrics_of

__all__ = ["collect", "summarise", "tables", "plot", "report"]

FAMILIES = ("mIoU", "ECE", "AUROC", "AP", "FPR95")


def collect(runs: Sequence[Run], datasets: Sequence[str]) -> Dict:
    """{dataset: {variant: {seed: {iteration: metrics}}}} of the evaluations on disk."""
    out = {d: {} for d in datasets}
    for run in runs:
        for d in datasets:
            for path in glob.glob(run.result_path("*", d)):
                iteration = int(re.search(r"iter(\d+)", path).group(1))
                seeds = out[d].setdefault(run.variant, {})
                with open(path) as f:
                    seeds.setdefault(run.seed, {})[iteration] = metrics_of(json.load(f), d)
    return out


def summarise(per_seed: Dict) -> Dict:
    """{seed: {iteration: metrics}} -> {iteration: {metric: [mean, sample std, n]}} over the seeds
    that reached each iteration (std 0.0 for a single seed)."""
    iterations = sorted({i for points in per_seed.values() for i in points})
    summary = {}
    for i in iterations:
        rows = [points[i] for points in per_seed.values() if i in points]
        summary[i] = {}
        for key in sorted(set().union(*rows)):
            v = np.array([r[key] for r in rows if key in r], dtype=float)
            summary[i][key] = [
                float(v.mean()),
                float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                int(len(v)),
            ]
    return summary


def _keys(family):
    return [family] if family in ("mIoU", "ECE") else [f"{s}_{family}" for s in SCORES]


def tables(dataset: str, curves: Dict) -> str:
    """{variant: summarise(...)} -> Markdown: per metric family, one row per iteration, one column
    per (variant, score) seen, cells "mean +- std (n seeds)"."""
    out = []
    for family in FAMILIES:
        cols = [
            (v, k)
            for v, summary in curves.items()
            for k in _keys(family)
            if any(k in point for point in summary.values())
        ]
        if not cols:
            continue
        iterations = sorted({i for summary in curves.values() for i in summary})
        rows = [
            "| iteration | "
            + " | ".join(f"{v} {k.rsplit('_', 1)[0] if '_' in k else k}" for v, k in cols)
            + " |",
            "|---" * (len(cols) + 1) + "|",
        ]
        for i in iterations:
            cells = []
            for v, k in cols:
                m = curves[v].get(i, {}).get(k)
                cells.append("-" if m is None else f"{m[0]:.1f} +- {m[1]:.1f} ({m[2]})")
            rows.append(f"| {i} | " + " | ".join(cells) + " |")
        out.append(f"### {dataset}: {family}\n\n" + "\n".join(rows))
    return "\n\n".join(out)


def plot(dataset: str, curves: Dict, path: str) -> None:
    """One panel per metric family seen, mean +- std against the iteration (line style: variant,
    colour: score), saved to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {f: f"{f} (%)" for f in FAMILIES}
    seen = {k for summary in curves.values() for point in summary.values() for k in point}
    panels = [f for f in FAMILIES if f in seen or any(k.endswith("_" + f) for k in seen)]
    colors = dict(zip(SCORES, plt.get_cmap("tab10").colors))
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False)
    axes = axes[0]
    for ax, family in zip(axes, panels):
        for v, (variant, summary) in enumerate(curves.items()):
            for key in _keys(family):
                pts = [(i, *summary[i][key][:2]) for i in sorted(summary) if key in summary[i]]
                if not pts:
                    continue
                it, mean, std = map(np.array, zip(*pts))
                score = key.rsplit("_", 1)[0] if key not in ("mIoU", "ECE") else None
                color = colors.get(score, f"C{v}")
                label = f"{variant}" + (f" {score}" if score else "")
                ax.plot(
                    it, mean, styles[v % len(styles)], color=color, marker="o", ms=3, label=label
                )
                ax.fill_between(it, mean - std, mean + std, color=color, alpha=0.12)
        ax.set_title(labels[family])
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    handles, names = max((ax.get_legend_handles_labels() for ax in axes), key=lambda hl: len(hl[1]))
    fig.legend(handles, names, loc="center right", fontsize=7, frameon=False)
    fig.subplots_adjust(right=0.86)
    fig.suptitle(
        f"{dataset}: mean +- std over seeds (solid: first variant, dashed: second, ...; colour: score)"
    )
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(runs: Sequence[Run], datasets: Sequence[str], results: str) -> Dict:
    """Write <results>.json (every point of every run and the mean +- std per variant),
    <results>.md and <results>_<dataset>.png of what is on disk; returns the JSON's content."""
    data = collect(runs, datasets)
    out = {"datasets": {}, "runs": [str(r) for r in runs]}
    md = []
    os.makedirs(os.path.dirname(os.path.abspath(results)), exist_ok=True)
    for d in datasets:
        curves = {variant: summarise(per_seed) for variant, per_seed in data[d].items()}
        out["datasets"][d] = {"per_seed": data[d], "mean_std_n": curves}
        if curves:
            plot(d, curves, f"{results}_{d}.png")
            md.append(tables(d, curves))
    with open(f"{results}.json", "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
    with open(f"{results}.md", "w") as f:
        f.write("\n\n".join(md) + "\n")
    print(f"[curves] wrote {results}.json, {results}.md and the plots", flush=True)
    return out
