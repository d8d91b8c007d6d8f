#!/usr/bin/env python
"""Train one config under several MODEL.GMM settings and compare closed-set and open-set results.

Used to choose the memory initialisation / momentum defaults (issue: short schedules).

    python studies/gmm_settings_study.py --config-file configs/demo/fpn_r18_gmm.yaml \
        --eval gmmseg_demo_val gmmseg_demo_anomaly --output output/study_demo \
        --variant release "" \
        --variant empty_warmup "MODEL.GMM.MEMORY_INIT empty MODEL.GMM.MOMENTUM_WARMUP True"

Every variant is trained by tools/train_net.py with the same seed and evaluated by
`tools/train_net.py --eval-only` (gmmseg.studies.runs.run_one: <output>/<variant>/, one thread each);
results go to <output>/study.json and a Markdown table is printed (gmmseg.studies.tables). (seed_study.py
does the same for several seeds, mean +- std.)
"""

import argparse
import json
import os
import shutil

from gmmseg.studies.runs import run_one
from gmmseg.studies.tables import settings_table


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config-file", "--config", dest="config", required=True, metavar="FILE")
    ap.add_argument(
        "--eval", nargs="+", required=True, help="datasets: first closed-set, then an anomaly one"
    )
    ap.add_argument("--output", required=True)
    ap.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "OPTS"), required=True)
    ap.add_argument(
        "--reuse", action="store_true", help="keep finished (or resume interrupted) variants"
    )
    args = ap.parse_args()
    results = {}
    path = os.path.join(args.output, "study.json")
    if os.path.exists(path):
        with open(path) as f:
            results = json.load(f)
    for name, opts in args.variant:
        opts = opts.split()
        out = os.path.join(os.path.abspath(args.output), name)
        if not args.reuse and os.path.isdir(out):  # train afresh
            shutil.rmtree(out)
        res = dict(run_one(os.path.abspath(args.config), out, opts, args.eval))
        res["opts"] = " ".join(opts)
        results[name] = res
        os.makedirs(args.output, exist_ok=True)
        with open(path, "w") as f:
            json.dump(results, f, indent=1, default=float)
    print(settings_table(results, closed=args.eval[0], anomaly=args.eval[-1]))


if __name__ == "__main__":
    main()
