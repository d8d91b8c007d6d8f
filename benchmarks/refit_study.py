#!/usr/bin/env python
"""Trained vs refitted Gaussians (tools/refit_gmm.py, no retraining) over finished runs.

    python benchmarks/refit_study.py --config-file configs/camvid/segformer_lite0_openset_gmm.yaml \
        --run output/study/release/seed1 --run output/study/release/seed2 [--rounds 10] \
        [--variance-floor 0.01] [--tag refit] --eval camvid_openset_val [KEY VALUE ...]

For each run (a seed_study.py run folder with model_final.pth and results.json): refit the GMM on
the config's training set, write <run>/<tag>/model_refit.pth, evaluate it like seed_study.py does
(<run>/<tag>/results.json), and print mean +- std over the runs of the trained model's metrics
(its results.json) and of the refitted model's. KEY VALUE: the options the runs were trained
with. Data: $DETECTRON2_DATASETS.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", "--config", dest="config", required=True, metavar="FILE")
    ap.add_argument("--run", action="append", required=True)
    ap.add_argument("--eval", required=True, help="dataset to evaluate on")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--variance-floor", type=float)
    ap.add_argument("--tag", default="refit", help="sub-folder of each run for the refitted model")
    ap.add_argument("opts", nargs=argparse.REMAINDER)
    args = ap.parse_args()

    from seed_study import evaluate_checkpoint, metrics_of, table

    study = {"trained": {}, args.tag: {}}
    for run in args.run:
        out_dir = os.path.join(run, args.tag)
        weights = os.path.join(out_dir, "model_refit.pth")
        result_path = os.path.join(out_dir, "results.json")
        if not os.path.exists(result_path):
            if not os.path.exists(weights):
                floor = [] if args.variance_floor is None else ["--variance-floor", str(args.variance_floor)]
                subprocess.run(
                    [
                        sys.executable,
                        os.path.join(ROOT, "tools", "refit_gmm.py"),
                        "--config-file",
                        args.config,
                        "--output",
                        weights,
                        "--rounds",
                        str(args.rounds),
                        *floor,
                        *args.opts,
                        "MODEL.WEIGHTS",
                        os.path.join(run, "model_final.pth"),
                    ],
                    check=True,
                    cwd=ROOT,
                )
            result = evaluate_checkpoint(
                os.path.abspath(args.config), args.opts, weights, [args.eval], os.path.join(out_dir, "eval")
            )
            json.dump(result, open(result_path, "w"), default=float)
        study[args.tag][run] = metrics_of(json.load(open(result_path)), args.eval)
        study["trained"][run] = metrics_of(json.load(open(os.path.join(run, "results.json"))), args.eval)
    print(table(study, args.eval))


if __name__ == "__main__":
    main()
