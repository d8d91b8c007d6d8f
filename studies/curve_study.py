#!/usr/bin/env python
"""Learning curves: train settings x seeds with a checkpoint every --period iterations, evaluate
every checkpoint, and plot mIoU, ECE and every anomaly score's AUROC / AP / FPR95 against the
iteration (mean +- sample std over the seeds).

    export DETECTRON2_DATASETS=/path/to/datasets      # holds camvid/ (and the --eval sets)
    python studies/curve_study.py --output /root/gmmseg_runs/curves_lite0 --seeds 1 2 --jobs 2 \
        --max-iter 10000 --period 1000 --eval camvid_openset_val camvid_static_val \
        --results docs/results/curves_lite0 \
        --variant twin configs/camvid/segformer_lite0_openset_softmax.yaml "" \
        --variant release configs/camvid/segformer_lite0_openset_gmm.yaml \
            "MODEL.GMM.MEMORY_SIZE 32000 DATALOADER.SAMPLER_TRAIN ClassBalancedSampler"

Resumable: the same command after an interruption continues every unfinished run from its last
checkpoint (tools/train_net.py --resume) and skips the evaluations already written. A run that
another invocation is training (its pid in <run>/training.pid) is waited for, not started twice:
a study can be restarted with other variants or seeds while its trainings go on. A run is
<output>/<variant>/seed<s>/ (train_net's OUTPUT_DIR; `SEED s MODEL.GMM.SEED s` added to its
overrides); checkpoint model_<i>.pth (i + 1 a multiple of --period) is evaluated by
`tools/train_net.py --eval-only`, one dataset at a time, into
<run>/eval/iter<i + 1>/<dataset>/inference/results.json (a dataset added later is evaluated on the
checkpoints already there). Runs train
--jobs at a time, one thread each, seed-major (a study stopped early holds every variant of the
first seeds); evaluations run one at a time beside them, niced, as checkpoints appear.

Every checkpoint is kept (SOLVER.CHECKPOINT_MAX_TO_KEEP 0): a curve point at iteration i is the
run of --max-iter iterations seen at i, with its learning rate not yet annealed, not a run
trained to i. --report-only writes the JSON and plots of what is there and trains nothing.
Output: <results>.json (every point of every run and the mean +- std per variant), <results>.md
(the same as tables) and <results>_<dataset>.png. The work is gmmseg.studies (curves, curve_report).
"""

import argparse

from gmmseg.studies.curve_report import report
from gmmseg.studies.curves import Run, train_and_evaluate


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--output", required=True, help="runs folder (keep it where it survives: hours of training)"
    )
    ap.add_argument("--results", required=True, help="path prefix of the JSON and PNG plots")
    ap.add_argument("--eval", nargs="+", required=True, metavar="DATASET")
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--jobs", type=int, default=2, help="runs trained at once (one thread each)")
    ap.add_argument("--max-iter", type=int, default=10000)
    ap.add_argument(
        "--period", type=int, default=1000, help="checkpoint (and evaluation) every N iterations"
    )
    ap.add_argument(
        "--variant", nargs=3, action="append", required=True, metavar=("NAME", "CONFIG", "OPTS")
    )
    ap.add_argument(
        "--eval-at",
        nargs="+",
        type=int,
        metavar="ITERATION",
        help="evaluate only these checkpoints (default: every one); the others are kept to resume from",
    )
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument(
        "--fit-scores",
        action="store_true",
        help="evaluate the fitted anomaly scores too (tools/fit_scores.py on each checkpoint, known pixels "
        "of the run's training split)",
    )
    args = ap.parse_args()
    if args.max_iter % args.period:
        ap.error(f"--max-iter {args.max_iter} is not a multiple of --period {args.period}")
    if args.eval_at:
        wrong = [i for i in args.eval_at if i % args.period or not 0 < i <= args.max_iter]
        if wrong:
            ap.error(
                f"--eval-at {wrong}: not a checkpoint (a multiple of --period {args.period} up to --max-iter)"
            )
    eval_at = set(args.eval_at) if args.eval_at else None
    # seed-major: a study stopped early holds every variant of the first seeds
    runs = [
        Run(args.output, name, config, opts, seed)
        for seed in args.seeds
        for name, config, opts in args.variant
    ]
    if not args.report_only:
        train_and_evaluate(
            runs, args.max_iter, args.period, args.eval, args.jobs, eval_at, args.fit_scores
        )
    report(runs, args.eval, args.results)


if __name__ == "__main__":
    main()
