#!/usr/bin/env python
"""How much every figure of `make demo`'s table moves between runs: seeds x thread counts.

    python benchmarks/demo_spread.py --seeds 1 2 3 --threads 1 2 --output output/demo_spread

Runs tools/run_demo.py once per (seed, thread count) (SEED <seed>; OMP_NUM_THREADS and
MKL_NUM_THREADS = the thread count, for the trainings and the evaluations), each in its own folder
(<output>/seed<s>_threads<t>/, resumable: a run whose summary.json exists is read, not repeated),
then reads the table each run printed (summary.txt) and writes, for every row and model, the
value of each run, the mean, the standard deviation and the range: <output>/spread.json and
<output>/spread.md (Markdown). Timing rows are reported like the others; only their ratios mean
something on a shared machine. Trailing KEY VALUE pairs are passed to every run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_dir(output, seed, threads):
    return os.path.join(output, f"seed{seed}_threads{threads}")


def run_demo(output, seed, threads, opts):
    """tools/run_demo.py for one (seed, thread count); returns its folder. Skipped when done."""
    out = run_dir(output, seed, threads)
    if os.path.exists(os.path.join(out, "summary.json")):
        return out
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, os.path.join(ROOT, "tools", "run_demo.py"), "--output", out, "SEED", str(seed), *opts]
    print(f"[spread] seed {seed}, {threads} thread(s): {out}", flush=True)
    with open(os.path.join(out, "run_demo.log"), "w") as log:
        if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env).returncode:
            raise SystemExit(f"[spread] run_demo failed for seed {seed}, {threads} thread(s): {out}/run_demo.log")
    return out


def read_table(path):
    """{row name: {model: float or None}} from the first table of a run_demo summary.txt."""
    with open(path) as f:
        lines = f.read().split("\n\n")[0].splitlines()
    models = [c.strip() for c in lines[0].split("|")[1:]]
    table = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.split("|")]
        table[cells[0]] = {m: (None if v == "-" else float(v)) for m, v in zip(models, cells[1:])}
    return table


def spread(tables):
    """{row: {model: {"values", "mean", "std", "min", "max"}}} over runs (std: sample, n - 1)."""
    out = {}
    for row in tables[0]:
        out[row] = {}
        for model in tables[0][row]:
            vals = [t[row][model] for t in tables if t.get(row, {}).get(model) is not None]
            if not vals:
                continue
            out[row][model] = {
                "values": vals,
                "mean": statistics.fmean(vals),
                "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                "min": min(vals),
                "max": max(vals),
            }
    return out


def markdown(result, runs):
    models = list(next(iter(result.values())))
    head = "| metric | " + " | ".join(f"{m}: mean +- std [min, max]" for m in models) + " |"
    lines = [f"Runs: {', '.join(runs)}", "", head, "|---" * (len(models) + 1) + "|"]
    for row, by_model in result.items():
        cells = [
            f"{s['mean']:.2f} +- {s['std']:.2f} [{s['min']:.2f}, {s['max']:.2f}]" if (s := by_model.get(m)) else "-"
            for m in models
        ]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--output", default="output/demo_spread")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every run")
    args = ap.parse_args()
    output = os.path.abspath(args.output)
    runs, tables = [], []
    for threads in args.threads:
        for seed in args.seeds:
            out = run_demo(output, seed, threads, args.opts)
            runs.append(f"seed {seed} / {threads} thread(s)")
            tables.append(read_table(os.path.join(out, "summary.txt")))
    result = spread(tables)
    with open(os.path.join(output, "spread.json"), "w") as f:
        json.dump({"runs": runs, "rows": result}, f, indent=1)
    text = markdown(result, runs)
    with open(os.path.join(output, "spread.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
