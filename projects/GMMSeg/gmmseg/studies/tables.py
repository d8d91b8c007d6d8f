"""The metrics a study keeps from a run's results (the `--eval-only` results.json) and its Markdown
tables: mean +- sample std over the seeds of every variant."""

import math
from typing import Dict, Iterable, List, Mapping, Sequence

import numpy as np

from ..scores import score_labels

__all__ = [
    "SCORES",
    "metrics_of",
    "mean_std",
    "table",
    "class_table",
    "markdown_table",
    "score_table",
    "settings_table",
]

#: every anomaly score of the table, in its order (a run reports those its model allows)
SCORES = tuple(score_labels())
RANKING = ("AUROC", "AP", "FPR95")


def metrics_of(result: Mapping, dataset: str) -> Dict[str, float]:
    """mIoU, per-class IoU ("IoU-<class>"), ECE and every score's AUROC / AP / FPR95 that
    `result[dataset]` holds (an anomaly benchmark without semantic labels has no mIoU or ECE)."""
    r = result[dataset]
    out = {}
    if "sem_seg" in r:
        out["mIoU"] = r["sem_seg"]["mIoU"]
        out.update({k: v for k, v in r["sem_seg"].items() if k.startswith("IoU-")})  # per class
    if "ECE" in r.get("calibration", {}):
        out["ECE"] = r["calibration"]["ECE"]
    for score in SCORES:
        for m in RANKING:
            key = f"{score}_{m}"
            if key in r.get("anomaly", {}):
                out[key] = r["anomaly"][key]
    return out


def mean_std(values: Iterable[float]) -> str:
    """'mean +- sample std' with one decimal (std 0.0 for a single value)."""
    v = np.asarray(list(values), dtype=float)
    return f"{v.mean():.1f} +- {v.std(ddof=1) if len(v) > 1 else 0.0:.1f}"


def _cells(study, cols):
    return {
        name: [
            mean_std([r[c] for r in runs.values()]) if all(c in r for r in runs.values()) else "-"
            for c in cols
        ]
        for name, runs in study.items()
    }


def table(study: Mapping[str, Mapping[object, Mapping[str, float]]]) -> str:
    """{variant: {seed: metrics_of(...)}} -> one row per variant: its seed count and mean +- std of
    mIoU, ECE and every score's AUROC / AP / FPR95 that some run has ("-" where a run lacks it)."""
    cols = ["mIoU", "ECE"] + [f"{s}_{m}" for s in SCORES for m in RANKING]
    cols = [c for c in cols if any(c in run for runs in study.values() for run in runs.values())]
    lines = ["| variant | seeds | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for name, cells in _cells(study, cols).items():
        lines.append(f"| {name} | {len(study[name])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def class_table(study: Mapping[str, Mapping[object, Mapping[str, float]]]) -> str:
    """Per-class IoU, mean +- std over the seeds, one row per variant (a locked-out class shows as
    0); "" when no run has per-class IoU."""
    cols = list(
        dict.fromkeys(
            c
            for runs in study.values()
            for run in runs.values()
            for c in run
            if c.startswith("IoU-")
        )
    )
    if not cols:
        return ""
    lines = [
        "| variant | " + " | ".join(c[4:] for c in cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for name, cells in _cells(study, cols).items():
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_table(rows: Iterable[Sequence[object]], headers: Sequence[str]) -> str:
    """A Markdown table of `rows` (cells turned to text as they are) under `headers`."""
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def score_table(reports: Mapping[str, Mapping[str, object]]) -> str:
    """{run: {candidate: {"AUROC", "AP", "FPR95"}, ...}} (analysis.gmm_scores.score_study of each
    run) -> one row per candidate of the first run, mean +- std over the runs of each metric."""
    first = next(iter(reports.values()))
    candidates = [k for k, v in first.items() if isinstance(v, dict) and "AUROC" in v]
    rows = [
        [c, *(mean_std(r[c][m] for r in reports.values()) for m in RANKING)] for c in candidates
    ]
    return markdown_table(rows, ["score", *RANKING])


#: the anomaly columns of settings_table: (results key, header)
SETTINGS_COLUMNS = (
    ("likelihood_AUROC", "GMM AUROC"),
    ("likelihood_AP", "GMM AP"),
    ("likelihood_FPR95", "GMM FPR95"),
    ("max_logit_AUROC", "max-logit AUROC"),
    ("energy_AUROC", "energy AUROC"),
    ("msp_AUROC", "MSP AUROC"),
    ("entropy_AUROC", "entropy AUROC"),
)


def settings_table(results: Mapping[str, Mapping], closed: str, anomaly: str) -> str:
    """{variant: run results + "opts"} (one seed each) -> one row per variant: its overrides, mIoU
    and ECE on `closed`, the GMM's and the softmax baselines' anomaly figures on `anomaly` ("nan"
    where the run has none)."""
    rows: List[List[str]] = []
    for name, r in results.items():
        a = r.get(anomaly, {}).get("anomaly", {})
        rows.append(
            [
                name,
                r.get("opts", ""),
                f"{r[closed]['sem_seg']['mIoU']:.1f}",
                f"{r[closed].get('calibration', {}).get('ECE', math.nan):.2f}",
                *[f"{a.get(k, math.nan):.1f}" for k, _ in SETTINGS_COLUMNS],
            ]
        )
    return markdown_table(
        rows, ["variant", "overrides", "mIoU", "ECE", *[h for _, h in SETTINGS_COLUMNS]]
    )
