#!/usr/bin/env python
"""Train one config under several MODEL.GMM settings and compare closed-set and open-set results.

Used to choose the memory initialisation / momentum defaults (issue: short schedules).

    python benchmarks/gmm_settings_study.py --config-file configs/demo/fpn_r18_gmm.yaml \
        --eval gmmseg_demo_val gmmseg_demo_anomaly --output output/study_demo \
        --variant release "" \
        --variant empty_warmup "MODEL.GMM.MEMORY_INIT empty MODEL.GMM.MOMENTUM_WARMUP True"

Every variant is trained by tools/train_net.py with the same seed and evaluated by
`tools/train_net.py --eval-only` (seed_study.run_one: <output>/<variant>/, one thread each);
results go to <output>/study.json and a Markdown table is printed. (seed_study.py does the same
for several seeds, mean +- std.)
"""

import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import table  # noqa: E402
from seed_study import run_one  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", "--config", dest="config", required=True, metavar="FILE")
    ap.add_argument("--eval", nargs="+", required=True, help="datasets: first closed-set, then an anomaly one")
    ap.add_argument("--output", required=True)
    ap.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "OPTS"), required=True)
    ap.add_argument("--reuse", action="store_true", help="keep finished (or resume interrupted) variants")
    args = ap.parse_args()
    results = {}
    path = os.path.join(args.output, "study.json")
    if os.path.exists(path):
        results = json.load(open(path))
    for name, opts in args.variant:
        opts = opts.split()
        out = os.path.join(os.path.abspath(args.output), name)
        if not args.reuse and os.path.isdir(out):  # train afresh
            shutil.rmtree(out)
        res = dict(run_one(os.path.abspath(args.config), out, opts, args.eval))
        res["opts"] = " ".join(opts)
        results[name] = res
        os.makedirs(args.output, exist_ok=True)
        json.dump(results, open(path, "w"), indent=1, default=float)
    closed, anomaly = args.eval[0], args.eval[-1]
    rows = []
    for name, r in results.items():
        a = r.get(anomaly, {}).get("anomaly", {})
        rows.append(
            [
                name,
                r.get("opts", ""),
                f"{r[closed]['sem_seg']['mIoU']:.1f}",
                f"{r[closed].get('calibration', {}).get('ECE', float('nan')):.2f}",
                *[
                    f"{a.get(k, float('nan')):.1f}"
                    for k in (
                        "likelihood_AUROC",
                        "likelihood_AP",
                        "likelihood_FPR95",
                        "max_logit_AUROC",
                        "energy_AUROC",
                        "msp_AUROC",
                        "entropy_AUROC",
                    )
                ],
            ]
        )
    print(
        table(
            rows,
            [
                "variant",
                "overrides",
                "mIoU",
                "ECE",
                "GMM AUROC",
                "GMM AP",
                "GMM FPR95",
                "max-logit AUROC",
                "energy AUROC",
                "MSP AUROC",
                "entropy AUROC",
            ],
        )
    )


if __name__ == "__main__":
    main()
