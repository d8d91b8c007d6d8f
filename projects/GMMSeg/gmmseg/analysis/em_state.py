"""What EM did in a trained GMM model, read from its checkpoint alone (no config, no dataset, no
model built): memory fill, components updated, M-step count and cost, the class LayerNorm's gain,
the classes not learning (gmm/coverage.py). studies/gmm_state_report.py prints these rows; its
docstring explains every column. Every EM head of a state dict is found by its
`updates_per_component` buffer."""

import os
import statistics
import timeit
from typing import Dict, List

import torch

from ..gmm.coverage import class_coverage, coverage_warnings
from ..gmm.fixed_point import from_fixed_point
from ..gmm.m_step import gaussian_m_step

__all__ = ["HEADERS", "em_heads", "head_report", "report_row", "checkpoint_rows", "markdown"]

HEADERS = [
    "checkpoint",
    "head",
    "K x M x D",
    "memory rows / capacity",
    "class fill min / max",
    "components updated",
    "classes never updated",
    "updates per component min / med / max",
    "M-steps",
    "class-norm gain mean [min, max]",
    "real rows min / max",
    "not learning",
    "M-step ms",
]


def em_heads(state: Dict) -> Dict[str, Dict]:
    """{prefix: {suffix: tensor}} for every EM head in a model state dict."""
    prefixes = [
        k[: -len("updates_per_component")]
        for k in state
        if k.endswith(".updates_per_component") or k == "updates_per_component"
    ]
    return {p: {k[len(p) :]: v for k, v in state.items() if k.startswith(p)} for p in prefixes}


def head_report(head: Dict, time_m_step: bool = True, variance_floor: float = 1e-4) -> Dict:
    """The facts of one EM head (module docstring) as a dict of numbers."""
    if "means" not in head:
        raise KeyError(
            "an EM head without 'means' (a ProtoSeg head or a learned-by-gradient GMM: no EM statistics to report)"
        )
    k, m, d = head["means"].shape
    updates = head["updates_per_component"].view(k, m)
    out = {
        "K": k,
        "M": m,
        "D": d,
        "m_steps": int(head["num_em_updates"]),
        "updated": int((updates > 0).sum()),
        "components": k * m,
        "never_updated_classes": [c for c in range(k) if int(updates[c].max()) == 0],
        "updates": sorted(int(u) for u in updates.flatten()),
    }
    if "class_norm.weight" in head:
        gain = head["class_norm.weight"].float()
        out["gain"] = (float(gain.mean()), float(gain.min()), float(gain.max()))
    if "memory.filled" in head and "memory.bank" in head:
        filled = head["memory.filled"].view(k, m).long()
        capacity = head["memory.bank"].shape[1]
        out["rows"], out["capacity"] = int(filled.sum()), k * m * capacity
        per_class = filled.sum(1).double() / (m * capacity)
        out["class_fill"] = (float(per_class.min()), float(per_class.max()))
        if "rows_pushed" in head and "training_pixels" in head:
            cov = class_coverage(head["rows_pushed"], head["training_pixels"], m, capacity)
            real = cov.real_rows.double() / max(cov.capacity, 1)
            out["real_share"] = (float(real.min()), float(real.max()))
            out["not_learning"] = coverage_warnings(cov)
        if time_m_step and "memory.stat_count" in head:
            count = head["memory.stat_count"]
            s1, s2 = head["memory.stat_sum"], head["memory.stat_sumsq"]

            def m_step():
                gaussian_m_step(
                    count.double(), from_fixed_point(s1), from_fixed_point(s2), variance_floor
                )

            out["m_step_ms"] = _median_ms(m_step, repeats=20, warmup=3)
    return out


def report_row(name, prefix, r):
    """One table row (HEADERS) of head_report `r` of head `prefix` in checkpoint `name`."""
    ups = r["updates"]
    mem = (
        f"{r['rows']:,} / {r['capacity']:,} ({100 * r['rows'] / r['capacity']:.0f} %)"
        if "rows" in r
        else "no bank"
    )
    fill = (
        f"{100 * r['class_fill'][0]:.0f} / {100 * r['class_fill'][1]:.0f} %"
        if "class_fill" in r
        else "-"
    )
    gain = f"{r['gain'][0]:.2f} [{r['gain'][1]:.2f}, {r['gain'][2]:.2f}]" if "gain" in r else "-"
    never = ", ".join(map(str, r["never_updated_classes"])) or "none"
    real = (
        f"{100 * r['real_share'][0]:.0f} / {100 * r['real_share'][1]:.0f} %"
        if "real_share" in r
        else "-"
    )
    short = {"(nearly) no real rows": "rows", "(nearly) never predicted": "never"}
    lacking = (
        (
            "; ".join(
                f"{c} {short.get(why.split(':')[0], why)}{why[why.index(':') :]}"
                for c, why in r["not_learning"]
            )
            or "none"
        )
        if "not_learning" in r
        else "-"
    )
    return [
        name,
        prefix.rstrip(".") or "(root)",
        f"{r['K']} x {r['M']} x {r['D']}",
        mem,
        fill,
        f"{r['updated']} / {r['components']}",
        never,
        f"{ups[0]} / {statistics.median(ups):g} / {ups[-1]}",
        str(r["m_steps"]),
        gain,
        real,
        lacking,
        f"{r['m_step_ms']:.2f}" if "m_step_ms" in r else "-",
    ]


def _median_ms(fn, repeats: int, warmup: int) -> float:
    """Median wall time of fn() in milliseconds over `repeats` calls, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    return 1e3 * statistics.median(timeit.repeat(fn, repeat=repeats, number=1))


def checkpoint_rows(path: str, time_m_step: bool = True) -> List[List[str]]:
    """One report_row per EM head of the checkpoint file `path`, named by its last three path parts
    and its iteration. FileNotFoundError for a missing file, ValueError for a checkpoint without
    an EM head (a softmax model, or not a model checkpoint)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    heads = em_heads(state) if isinstance(state, dict) else {}
    if not heads:
        raise ValueError(
            f"{path} holds no EM head (no '*.updates_per_component' entry): a softmax model, or not a model checkpoint"
        )
    parts = os.path.normpath(path).split(os.sep)
    name = (
        path if len(parts) <= 3 else os.path.join("...", *parts[-3:])
    )  # run/seed/file: short, unambiguous
    if "iteration" in ckpt:
        name += f" (iter {int(ckpt['iteration']) + 1})"
    return [
        report_row(name, prefix, head_report(head, time_m_step=time_m_step))
        for prefix, head in heads.items()
    ]


def markdown(rows: List[List[str]]) -> str:
    """The rows under HEADERS as a Markdown table."""
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
