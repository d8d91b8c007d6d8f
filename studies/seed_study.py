#!/usr/bin/env python
"""Train several settings x several seeds (a few runs in parallel), evaluate each run, and print
mean +- std over the seeds.

    python studies/seed_study.py --output output/study_lite0 --seeds 1 2 3 --jobs 2 \
        --eval camvid_openset_val \
        --variant twin configs/camvid/segformer_lite0_openset_softmax.yaml "" \
        --variant gmm configs/camvid/segformer_lite0_openset_gmm.yaml "MODEL.GMM.MEMORY_SIZE 32000"

A run is tools/train_net.py (one thread, `SEED s MODEL.GMM.SEED s` added to the overrides, its log
in <output>/<variant>/seed<s>/log.txt) then `tools/train_net.py --eval-only` of its final
checkpoint on every --eval dataset (mIoU, ECE, AUROC / AP / FPR95 of every anomaly score; its
files in <run>/eval/). Finished runs are reused and interrupted ones resumed from their last
checkpoint (train_net --resume), so a stopped study continues. Results: <output>/study.json; the
table goes to stdout and <output>/study.md. Data: $DETECTRON2_DATASETS (detectron2's convention).
The work is gmmseg.studies (runs, tables).
"""

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from gmmseg.studies.processes import repository_root
from gmmseg.studies.runs import run_one
from gmmseg.studies.tables import class_table, metrics_of, table


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--output", required=True)
    ap.add_argument("--eval", nargs="+", required=True, help="datasets; the table uses the first")
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (one thread each)")
    ap.add_argument(
        "--variant", nargs=3, action="append", required=True, metavar=("NAME", "CONFIG", "OPTS")
    )
    ap.add_argument(
        "--fit-scores",
        action="store_true",
        help="evaluate the fitted anomaly scores too (tools/fit_scores.py on each run's training split)",
    )
    args = ap.parse_args()
    jobs = {}
    with ThreadPoolExecutor(args.jobs) as pool:
        for seed in args.seeds:  # seed-major: a study stopped early still has every variant
            for name, config, opts in args.variant:
                out = os.path.join(os.path.abspath(args.output), name, f"seed{seed}")
                o = opts.split() + ["SEED", str(seed), "MODEL.GMM.SEED", str(seed)]
                config_path = os.path.join(
                    repository_root(), config
                )  # as written: relative to the repository
                jobs[(name, seed)] = pool.submit(
                    run_one, config_path, out, o, args.eval, args.fit_scores
                )
    study = {name: {} for name, _, _ in args.variant}
    for (name, seed), job in jobs.items():
        try:
            study[name][seed] = metrics_of(job.result(), args.eval[0])
        except Exception as e:  # keep the others
            print(f"{name} seed {seed}: {e}", file=sys.stderr)
    study = {k: v for k, v in study.items() if v}
    with open(os.path.join(args.output, "study.json"), "w") as f:
        json.dump(study, f, indent=1)
    md = table(study) + "\n\n" + class_table(study)
    with open(os.path.join(args.output, "study.md"), "w") as f:
        f.write(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
