#!/usr/bin/env python
"""What EM did in a trained GMM model, read from its checkpoints: memory fill, components updated,
M-step count and cost, the class LayerNorm's gain. Prints one Markdown table row per checkpoint.

    python benchmarks/gmm_state_report.py output/camvid/mask2former_lite0_openset_gmm/model_final.pth [...]

Every EM head in the checkpoint (a prefix with `means`, `updates_per_component`, `num_em_updates`)
is reported; with several checkpoints (e.g. every 500 iterations of one run) the rows show how the
state grows. Columns:
- memory: rows held / capacity over all (class, component) groups, and the smallest and largest
  class's fill (its components' rows / their capacity); "no bank" for an inference checkpoint;
- updated: components moved by at least one M-step / K * M, and the classes none of whose
  components ever moved (their Gaussians are still the random initialisation);
- updates per component: min / median / max of the M-steps each component took part in;
- M-steps: the head's count (num_em_updates);
- gain: the class LayerNorm's weight, mean [min, max] (the logit gap is capped at about
  gain x sqrt(K), docs/MASK2FORMER.md);
- real rows: the smallest and largest class's share of real (pushed, not the random initialisation)
  rows in its memory (MODEL.GMM.MEMORY_INIT "random" fills every row at the start, so "memory rows"
  is 100 % from the first iteration; this column is what the classes have actually learnt from);
- not learning: the classes gmm/coverage.py warns about, with the reason: "rows" (nearly) no real
  memory rows against the median class, "never" (nearly) never classified correctly on the
  training batches (recall < 1 %), each with its figure; "-" for a checkpoint written before these
  counters existed;
- M-step ms: median time of the M-step's arithmetic for all groups (fixed-point statistics ->
  float64, gmm/m_step.py) on this machine's CPU, one thread; the statistics themselves are kept
  up to date by every push, so this is what an M-step adds (plus the momentum blend, O(K M D)).
Reads only the checkpoint: no config, no dataset, no model built.
"""

import argparse
import os
import statistics
import sys

import torch
from common import timeit

from gmmseg.gmm.coverage import class_coverage, coverage_warnings
from gmmseg.gmm.fixed_point import from_fixed_point
from gmmseg.gmm.m_step import gaussian_m_step

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


def em_heads(state):
    """{prefix: {suffix: tensor}} for every EM head in a model state dict."""
    prefixes = [
        k[: -len("updates_per_component")]
        for k in state
        if k.endswith(".updates_per_component") or k == "updates_per_component"
    ]
    return {p: {k[len(p) :]: v for k, v in state.items() if k.startswith(p)} for p in prefixes}


def head_report(head, time_m_step=True, variance_floor=1e-4):
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
                gaussian_m_step(count.double(), from_fixed_point(s1), from_fixed_point(s2), variance_floor)

            out["m_step_ms"] = timeit(m_step, repeats=20, warmup=3)
    return out


def _fmt_row(name, prefix, r):
    ups = r["updates"]
    mem = f"{r['rows']:,} / {r['capacity']:,} ({100 * r['rows'] / r['capacity']:.0f} %)" if "rows" in r else "no bank"
    fill = f"{100 * r['class_fill'][0]:.0f} / {100 * r['class_fill'][1]:.0f} %" if "class_fill" in r else "-"
    gain = f"{r['gain'][0]:.2f} [{r['gain'][1]:.2f}, {r['gain'][2]:.2f}]" if "gain" in r else "-"
    never = ", ".join(map(str, r["never_updated_classes"])) or "none"
    real = f"{100 * r['real_share'][0]:.0f} / {100 * r['real_share'][1]:.0f} %" if "real_share" in r else "-"
    short = {"(nearly) no real rows": "rows", "(nearly) never predicted": "never"}
    lacking = (
        (
            "; ".join(f"{c} {short.get(why.split(':')[0], why)}{why[why.index(':') :]}" for c, why in r["not_learning"])
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", metavar="FILE")
    ap.add_argument("--no-timing", action="store_true", help="skip the M-step timing")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for path in args.checkpoints:
        if not os.path.isfile(path):
            sys.exit(f"gmm_state_report: no such checkpoint file: {path}")
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
        heads = em_heads(state) if isinstance(state, dict) else {}
        if not heads:
            sys.exit(
                f"gmm_state_report: {path} holds no EM head (no '*.updates_per_component' entry): "
                "a softmax model, or not a model checkpoint"
            )
        parts = os.path.normpath(path).split(os.sep)
        name = path if len(parts) <= 3 else os.path.join("...", *parts[-3:])  # run/seed/file: short, unambiguous
        if "iteration" in ckpt:
            name += f" (iter {int(ckpt['iteration']) + 1})"
        for prefix, head in heads.items():
            rows.append(_fmt_row(name, prefix, head_report(head, time_m_step=not args.no_timing)))
    print("| " + " | ".join(HEADERS) + " |")
    print("|" + "---|" * len(HEADERS))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
