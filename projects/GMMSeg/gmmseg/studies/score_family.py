"""Every anomaly score of every model on several anomaly sets, over seeds, and the question the score
family was built for: does one score of the GMM model beat every score of its softmax twin on
every set, beyond the seed spread?

Input: {model: {seed: {dataset: anomaly metrics}}}, the anomaly metrics being the "anomaly" entry of
an `--eval-only` results.json ("<score>_AUROC", "_AP", "_FPR95", "_meanF1", ...).

"Beyond the spread": the difference of the two means is larger than the larger of the two
sample standard deviations over seeds (with one seed there is no spread, and nothing is "beyond").
For FPR95, lower is better; for the others, higher.
"""

import glob
import json
import re
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .tables import SCORES, markdown_table

__all__ = ["METRICS", "collect", "summary", "family_table", "best_scores", "duel", "verdict_table"]

METRICS = ("AUROC", "AP", "FPR95", "meanF1")
_LOWER_IS_BETTER = {"FPR95"}

Stat = Tuple[float, float, int]  # mean, sample std (0 for one value), number of seeds


def collect(pattern: str, datasets: Sequence[str]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """{seed label: {dataset: anomaly metrics}} from the results.json files that `pattern` (a glob)
    matches; "{dataset}" in it stands for each dataset in turn (without it, each file serves every
    dataset it holds). The seed label is the part of the path the glob's first "*" matched (e.g.
    "seed1"). A file that names its dataset in the path but lacks its results is an error."""
    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    for d in datasets:
        concrete = pattern.replace("{dataset}", d)
        regex = re.compile(
            "^" + "(.*?)".join(re.escape(part) for part in concrete.split("*")) + "$"
        )
        for path in sorted(glob.glob(concrete)):
            m = regex.match(path)
            seed = m.group(1) if m and m.groups() else path
            with open(path) as f:
                result = json.load(f)
            if "anomaly" not in result.get(d, {}):
                if "{dataset}" in pattern:
                    raise ValueError(
                        f"{path}: no anomaly results for {d!r} (it has {sorted(result)})"
                    )
                continue
            out.setdefault(seed, {})[d] = result[d]["anomaly"]
    return out


def summary(
    per_seed: Mapping[object, Mapping[str, Mapping[str, float]]], dataset: str
) -> Dict[str, Stat]:
    """{"<score>_<metric>": (mean, std, n)} over the seeds that have `dataset`."""
    rows = [s[dataset] for s in per_seed.values() if dataset in s]
    out = {}
    for key in dict.fromkeys(k for r in rows for k in r):
        v = np.array([r[key] for r in rows if key in r], dtype=float)
        out[key] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, int(len(v)))
    return out


def _scores_of(stats: Mapping[str, Stat]) -> List[str]:
    known = [s for s in SCORES if f"{s}_AUROC" in stats]
    return known + [
        k[: -len("_AUROC")]
        for k in stats
        if k.endswith("_AUROC") and k[: -len("_AUROC")] not in known
    ]


def _fmt(stat: Optional[Stat]) -> str:
    return "-" if stat is None else f"{stat[0]:.1f} +- {stat[1]:.1f}"


def family_table(
    study: Mapping[str, Mapping], datasets: Sequence[str], metrics: Sequence[str] = METRICS
) -> str:
    """One row per (model, score), one column per (dataset, metric): mean +- std over seeds."""
    rows = []
    for model, per_seed in study.items():
        stats = {d: summary(per_seed, d) for d in datasets}
        seeds = {d: max((s[2] for s in stats[d].values()), default=0) for d in datasets}
        for score in dict.fromkeys(s for d in datasets for s in _scores_of(stats[d])):
            rows.append(
                [model, score]
                + [_fmt(stats[d].get(f"{score}_{m}")) for d in datasets for m in metrics]
                + [",".join(str(seeds[d]) for d in datasets)]
            )
    headers = ["model", "score"] + [f"{d} {m}" for d in datasets for m in metrics] + ["seeds"]
    return markdown_table(rows, headers)


def _better(a: float, b: float, metric: str) -> float:
    """How much a is better than b (positive: a is better)."""
    return b - a if metric in _LOWER_IS_BETTER else a - b


def best_scores(stats: Mapping[str, Stat], metric: str = "AUROC") -> List[Tuple[str, Stat]]:
    """[(score, stat)] sorted best first by the mean of `metric`."""
    pairs = [(s, stats[f"{s}_{metric}"]) for s in _scores_of(stats) if f"{s}_{metric}" in stats]
    return sorted(pairs, key=lambda p: p[1][0], reverse=metric not in _LOWER_IS_BETTER)


def duel(a: Stat, b: Stat, metric: str = "AUROC") -> str:
    """ "wins" / "loses" when a is better / worse than b by more than the larger seed std (both with
    >= 2 seeds), else "level" (within the spread) or "no spread" (a single seed)."""
    if min(a[2], b[2]) < 2:
        return "no spread"
    gap = _better(a[0], b[0], metric)
    if abs(gap) <= max(a[1], b[1]):
        return "level"
    return "wins" if gap > 0 else "loses"


def verdict_table(
    gmm: Mapping,
    twin: Mapping,
    datasets: Sequence[str],
    candidates: Optional[Iterable[str]] = None,
    metric="AUROC",
) -> str:
    """For each GMM score (`candidates`, default every score the GMM model has on all datasets):
    per dataset its mean +- std and the duel with the twin's best score there (named), and whether
    it wins on every dataset."""
    g = {d: summary(gmm, d) for d in datasets}
    t = {d: summary(twin, d) for d in datasets}
    best_twin = {d: best_scores(t[d], metric)[0] for d in datasets}
    if candidates is None:
        candidates = [
            s for s in _scores_of(g[datasets[0]]) if all(f"{s}_{metric}" in g[d] for d in datasets)
        ]
    rows = []
    for score in candidates:
        cells, outcomes = [], []
        for d in datasets:
            stat = g[d].get(f"{score}_{metric}")
            if stat is None:
                cells.append("-")
                outcomes.append("-")
                continue
            outcome = duel(stat, best_twin[d][1], metric)
            outcomes.append(outcome)
            cells.append(f"{_fmt(stat)} {outcome}")
        rows.append([score, *cells, "yes" if all(o == "wins" for o in outcomes) else "no"])
    headers = (
        ["GMM score"]
        + [f"{d} {metric} vs twin's {best_twin[d][0]} {_fmt(best_twin[d][1])}" for d in datasets]
        + ["wins everywhere"]
    )
    return markdown_table(rows, headers)
