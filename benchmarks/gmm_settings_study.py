#!/usr/bin/env python
"""Train one config under several MODEL.GMM settings and compare closed-set and open-set results.

Used to choose the memory initialisation / momentum defaults (issue: short schedules).

    python benchmarks/gmm_settings_study.py --config configs/demo/fpn_r18_gmm.yaml \
        --eval gmmseg_demo_val gmmseg_demo_anomaly --output output/study_demo \
        --variant release "" \
        --variant empty_warmup "MODEL.GMM.MEMORY_INIT empty MODEL.GMM.MOMENTUM_WARMUP True"

Every variant is trained by tools/train_net.py with the same seed; results go to
<output>/study.json and a Markdown table is printed.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
from run_demo import evaluate, seconds_per_iteration, train  # noqa: E402

from common import table  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--eval", nargs="+", required=True, help="datasets: first closed-set, then an anomaly one")
    ap.add_argument("--output", required=True)
    ap.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "OPTS"), required=True)
    ap.add_argument("--reuse", action="store_true")
    args = ap.parse_args()
    results = {}
    path = os.path.join(args.output, "study.json")
    if os.path.exists(path):
        results = json.load(open(path))
    for name, opts in args.variant:
        opts = opts.split()
        out = os.path.join(os.path.abspath(args.output), name)
        if not (args.reuse and os.path.exists(os.path.join(out, "model_final.pth"))):
            train(name, args.config, out, opts)
        res = evaluate(args.config, out, args.eval, opts)
        res["s_per_iter"] = seconds_per_iteration(out)
        res["opts"] = " ".join(opts)
        results[name] = res
        os.makedirs(args.output, exist_ok=True)
        json.dump(results, open(path, "w"), indent=1, default=float)
    closed, anomaly = args.eval[0], args.eval[-1]
    rows = []
    for name, r in results.items():
        a = r.get(anomaly, {}).get("anomaly", {})
        rows.append([name, r.get("opts", ""), f"{r[closed]['sem_seg']['mIoU']:.1f}",
                     f"{r[closed].get('calibration', {}).get('ECE', float('nan')):.2f}",
                     *[f"{a.get(k, float('nan')):.1f}" for k in ("gmm_AUROC", "gmm_AP", "gmm_FPR95",
                                                                  "max_logit_AUROC", "energy_AUROC",
                                                                  "msp_AUROC", "entropy_AUROC")]])
    print(table(rows, ["variant", "overrides", "mIoU", "ECE", "GMM AUROC", "GMM AP", "GMM FPR95",
                       "max-logit AUROC", "energy AUROC", "MSP AUROC", "entropy AUROC"]))


if __name__ == "__main__":
    main()
