#!/usr/bin/env python
"""How much every figure of `make demo`'s table moves between runs: seeds x thread counts.

    python studies/demo_spread.py --seeds 1 2 3 --threads 1 2 --output output/demo_spread

Runs tools/run_demo.py once per (seed, thread count) (SEED <seed>; OMP_NUM_THREADS and
MKL_NUM_THREADS = the thread count, for the trainings and the evaluations), each in its own folder
(<output>/seed<s>_threads<t>/, resumable: a run whose summary.json exists is read, not repeated),
then reads the tables each run printed (summary.txt: segmentation and speed per model; AUROC and
FPR95 of every anomaly score per split, far and near, and model) and writes, for every row and
column, the value of each run, the mean, the standard deviation and the range, and the widest
AUROC range of all (issue 33's target: 3 points): <output>/spread.json and <output>/spread.md
(Markdown). Timing rows are reported like the others; only their ratios mean something on a
shared machine. Trailing KEY VALUE pairs are passed to every run. The work is gmmseg.studies.demo_spread.
"""

import argparse
import json
import os

from gmmseg.studies.demo_spread import markdown, read_table, run_demo, spread, widest_range


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--output", default="output/demo_spread")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every run")
    args = ap.parse_args()
    output = os.path.abspath(args.output)
    runs, tables = [], []
    for threads in args.threads:
        for seed in args.seeds:
            try:
                out = run_demo(output, seed, threads, args.opts)
            except RuntimeError as e:
                raise SystemExit(f"[spread] {e}") from e
            runs.append(f"seed {seed} / {threads} thread(s)")
            tables.append(read_table(os.path.join(out, "summary.txt")))
    result = spread(tables)
    with open(os.path.join(output, "spread.json"), "w") as f:
        json.dump(
            {"runs": runs, "rows": result, "widest_auroc_range": widest_range(result)}, f, indent=1
        )
    text = markdown(result, runs)
    with open(os.path.join(output, "spread.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
