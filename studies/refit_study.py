#!/usr/bin/env python
"""Trained vs refitted Gaussians (tools/refit_gmm.py, no retraining) over finished runs.

    python studies/refit_study.py --config-file configs/camvid/segformer_lite0_openset_gmm.yaml \
        --run output/study/release/seed1 --run output/study/release/seed2 [--rounds 10] \
        [--variance-floor 0.01] [--tag refit] --eval camvid_openset_val [KEY VALUE ...]

For each run (a seed_study.py run folder with model_final.pth and results.json): refit the GMM on
the config's training set, write <run>/<tag>/model_refit.pth, evaluate it like seed_study.py does
(<run>/<tag>/results.json), and print mean +- std over the runs of the trained model's metrics
(its results.json) and of the refitted model's. KEY VALUE: the options the runs were trained
with. Data: $DETECTRON2_DATASETS. The work is gmmseg.studies.refit.
"""

import argparse

from gmmseg.studies.refit import refit_and_evaluate
from gmmseg.studies.tables import table


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config-file", "--config", dest="config", required=True, metavar="FILE")
    ap.add_argument("--run", action="append", required=True)
    ap.add_argument("--eval", required=True, help="dataset to evaluate on")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--variance-floor", type=float)
    ap.add_argument("--tag", default="refit", help="sub-folder of each run for the refitted model")
    ap.add_argument("opts", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    study = {"trained": {}, args.tag: {}}
    for run in args.run:
        study["trained"][run], study[args.tag][run] = refit_and_evaluate(
            args.config, run, args.eval, args.opts, args.tag, args.rounds, args.variance_floor
        )
    print(table(study))


if __name__ == "__main__":
    main()
