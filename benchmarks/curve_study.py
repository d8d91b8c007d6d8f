#!/usr/bin/env python
"""Learning curves: train settings x seeds with a checkpoint every --period iterations, evaluate
every checkpoint, and plot mIoU, ECE and every anomaly score's AUROC / AP / FPR95 against the
iteration (mean +- sample std over the seeds).

    export DETECTRON2_DATASETS=/path/to/datasets      # holds camvid/ (and the --eval sets)
    python benchmarks/curve_study.py --output /root/gmmseg_runs/curves_lite0 --seeds 1 2 --jobs 2 \
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
(the same as tables) and <results>_<dataset>.png.
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seed_study import ONE_THREAD, SCORES, evaluate_checkpoint, metrics_of  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RETRY_AFTER_S = 600


class Run:
    def __init__(self, output, variant, config, opts, seed):
        self.variant, self.seed = variant, seed
        self.config = config if os.path.isabs(config) else os.path.join(ROOT, config)
        self.dir = os.path.join(os.path.abspath(output), variant, f"seed{seed}")
        self.opts = opts.split() + ["SEED", str(seed), "MODEL.GMM.SEED", str(seed)]

    def __repr__(self):
        return f"{self.variant}/seed{self.seed}"

    def checkpoints(self, period):
        """{iterations done: checkpoint path} of the periodic checkpoints on disk."""
        out = {}
        for path in glob.glob(os.path.join(self.dir, "model_*.pth")):
            m = re.fullmatch(r"model_(\d+)\.pth", os.path.basename(path))
            if m and (int(m.group(1)) + 1) % period == 0:
                out[int(m.group(1)) + 1] = path
        return out

    def result_path(self, iteration, dataset):
        return os.path.join(self.dir, "eval", f"iter{iteration}", dataset, "inference", "results.json")


def training_process(run):
    """pid of a live training of `run` started by another invocation (its <run>/training.pid), or None."""
    try:
        pid = int(open(os.path.join(run.dir, "training.pid")).read())
        with open(f"/proc/{pid}/cmdline", "rb") as f:  # Linux; the pid may have been reused
            cmdline = f.read()
    except (OSError, ValueError):
        return None
    return pid if b"train_net.py" in cmdline and run.dir.encode() in cmdline else None


def train(run, max_iter, period):
    """Train `run` to max_iter (resuming it), unless it is finished; if another invocation of the
    study trains it now (e.g. one stopped and restarted with other variants), wait for that."""
    while training_process(run) is not None:
        time.sleep(30)
    if os.path.exists(os.path.join(run.dir, "model_final.pth")):
        return
    os.makedirs(run.dir, exist_ok=True)
    resume = ["--resume"] if os.path.exists(os.path.join(run.dir, "last_checkpoint")) else []
    cmd = [
        sys.executable,
        os.path.join(ROOT, "tools", "train_net.py"),
        "--config-file",
        run.config,
        *resume,
        *run.opts,
        "OUTPUT_DIR",
        run.dir,
        "DATASETS.TEST",
        "()",
        "SOLVER.MAX_ITER",
        str(max_iter),
        "SOLVER.CHECKPOINT_PERIOD",
        str(period),
        "SOLVER.CHECKPOINT_MAX_TO_KEEP",
        "0",
    ]
    print(f"[curves] training {run}{' (resumed)' if resume else ''}", flush=True)
    pid_file = os.path.join(run.dir, "training.pid")
    with open(os.path.join(run.dir, "stdout.txt"), "a") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ, **ONE_THREAD))
        with open(pid_file, "w") as f:
            f.write(str(proc.pid))
        code = proc.wait()
    os.remove(pid_file)
    if code:
        raise RuntimeError(f"training {run} failed: {run.dir}/stdout.txt")
    print(f"[curves] {run} trained", flush=True)


FIT_SCORES = False  # --fit-scores: the fitted anomaly scores too (one fit per checkpoint, next to it)


def evaluate(run, iteration, checkpoint, dataset):
    out_dir = os.path.dirname(os.path.dirname(run.result_path(iteration, dataset)))
    evaluate_checkpoint(run.config, run.opts, checkpoint, [dataset], out_dir, nice=10, fit=FIT_SCORES)
    print(f"[curves] {run} evaluated at iteration {iteration} on {dataset}", flush=True)


EVAL_AT = None  # --eval-at: the iterations evaluated (None: every checkpoint)


def pending_evaluations(runs, period, datasets):
    """(iteration, run, checkpoint, dataset) not yet evaluated, earliest iteration first."""
    todo = [
        (i, k, j, run, path, d)
        for k, run in enumerate(runs)
        for i, path in run.checkpoints(period).items()
        for j, d in enumerate(datasets)
        if (EVAL_AT is None or i in EVAL_AT) and not os.path.exists(run.result_path(i, d))
    ]
    return [(i, run, path, d) for i, _, _, run, path, d in sorted(todo, key=lambda t: t[:3])]


def evaluation_loop(runs, period, datasets, training_done):
    """Evaluate checkpoints as they appear until training is over and none is left. One that
    fails is tried again RETRY_AFTER_S later while training goes on (e.g. a dataset not yet in
    place), and left for the next invocation of the command once training is over."""
    failed = {}  # (iteration, run, dataset) -> time of the failure
    while True:
        now = time.time()
        todo = [
            t
            for t in pending_evaluations(runs, period, datasets)
            if now - failed.get((t[0], str(t[1]), t[3]), -RETRY_AFTER_S) >= RETRY_AFTER_S
            and not (training_done.is_set() and (t[0], str(t[1]), t[3]) in failed)
        ]
        if not todo:
            if training_done.is_set():
                return
            time.sleep(20)
            continue
        iteration, run, path, dataset = todo[0]
        try:
            evaluate(run, iteration, path, dataset)
        except RuntimeError as e:
            print(f"[curves] {e}", file=sys.stderr, flush=True)
            failed[(iteration, str(run), dataset)] = time.time()


def collect(runs, datasets):
    """{dataset: {variant: {seed: {iteration: metrics}}}} of the evaluations on disk."""
    out = {d: {} for d in datasets}
    for run in runs:
        for d in datasets:
            for path in glob.glob(run.result_path("*", d)):
                iteration = int(re.search(r"iter(\d+)", path).group(1))
                seeds = out[d].setdefault(run.variant, {})
                seeds.setdefault(run.seed, {})[iteration] = metrics_of(json.load(open(path)), d)
    return out


def summarise(per_seed):
    """{iteration: {metric: [mean, std, n]}} over the seeds that reached each iteration."""
    iterations = sorted({i for points in per_seed.values() for i in points})
    summary = {}
    for i in iterations:
        rows = [points[i] for points in per_seed.values() if i in points]
        keys = sorted(set().union(*rows))
        summary[i] = {}
        for key in keys:
            v = np.array([r[key] for r in rows if key in r], dtype=float)
            summary[i][key] = [float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, int(len(v))]
    return summary


def plot(dataset, curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("mIoU", "mIoU (%)"),
        ("ECE", "ECE (%)"),
        ("AUROC", "AUROC (%)"),
        ("FPR95", "FPR95 (%)"),
        ("AP", "AP (%)"),
    ]
    seen = {k for summary in curves.values() for point in summary.values() for k in point}
    panels = [(m, label) for m, label in panels if m in seen or any(k.endswith("_" + m) for k in seen)]
    colors = dict(zip(SCORES, plt.get_cmap("tab10").colors))
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False)
    axes = axes[0]
    for ax, (metric, label) in zip(axes, panels):
        for v, (variant, summary) in enumerate(curves.items()):
            keys = [metric] if metric in ("mIoU", "ECE") else [f"{s}_{metric}" for s in SCORES]
            for key in keys:
                pts = [(i, *summary[i][key][:2]) for i in sorted(summary) if key in summary[i]]
                if not pts:
                    continue
                it, mean, std = map(np.array, zip(*pts))
                score = key.rsplit("_", 1)[0] if key not in ("mIoU", "ECE") else None
                color = colors.get(score, f"C{v}")
                ax.plot(
                    it,
                    mean,
                    styles[v % len(styles)],
                    color=color,
                    marker="o",
                    ms=3,
                    label=f"{variant}" + (f" {score}" if score else ""),
                )
                ax.fill_between(it, mean - std, mean + std, color=color, alpha=0.12)
        ax.set_title(label)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    handles, labels = max((ax.get_legend_handles_labels() for ax in axes), key=lambda hl: len(hl[1]))
    fig.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
    fig.subplots_adjust(right=0.86)
    fig.suptitle(f"{dataset}: mean +- std over seeds (solid: first variant, dashed: second, ...; colour: score)")
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def tables(dataset, curves):
    """Markdown: per metric family, one row per iteration, one column per (variant, score) seen,
    cells mean +- std (n seeds)."""
    out = []
    for family in ("mIoU", "ECE", "AUROC", "AP", "FPR95"):
        cols = [
            (v, k)
            for v, summary in curves.items()
            for k in ([family] if family in ("mIoU", "ECE") else [f"{s}_{family}" for s in SCORES])
            if any(k in point for point in summary.values())
        ]
        if not cols:
            continue
        iterations = sorted({i for summary in curves.values() for i in summary})
        rows = [
            "| iteration | " + " | ".join(f"{v} {k.rsplit('_', 1)[0] if '_' in k else k}" for v, k in cols) + " |",
            "|---" * (len(cols) + 1) + "|",
        ]
        for i in iterations:
            cells = []
            for v, k in cols:
                m = curves[v].get(i, {}).get(k)
                cells.append("-" if m is None else f"{m[0]:.1f} +- {m[1]:.1f} ({m[2]})")
            rows.append(f"| {i} | " + " | ".join(cells) + " |")
        out.append(f"### {dataset}: {family}\n\n" + "\n".join(rows))
    return "\n\n".join(out)


def report(runs, datasets, results):
    data = collect(runs, datasets)
    out = {"datasets": {}, "runs": [str(r) for r in runs]}
    md = []
    os.makedirs(os.path.dirname(os.path.abspath(results)), exist_ok=True)
    for d in datasets:
        curves = {variant: summarise(per_seed) for variant, per_seed in data[d].items()}
        out["datasets"][d] = {"per_seed": data[d], "mean_std_n": curves}
        if curves:
            plot(d, curves, f"{results}_{d}.png")
            md.append(tables(d, curves))
    with open(f"{results}.json", "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
    with open(f"{results}.md", "w") as f:
        f.write("\n\n".join(md) + "\n")
    print(f"[curves] wrote {results}.json, {results}.md and the plots", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", required=True, help="runs folder (keep it where it survives: hours of training)")
    ap.add_argument("--results", required=True, help="path prefix of the JSON and PNG plots")
    ap.add_argument("--eval", nargs="+", required=True, metavar="DATASET")
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--jobs", type=int, default=2, help="runs trained at once (one thread each)")
    ap.add_argument("--max-iter", type=int, default=10000)
    ap.add_argument("--period", type=int, default=1000, help="checkpoint (and evaluation) every N iterations")
    ap.add_argument("--variant", nargs=3, action="append", required=True, metavar=("NAME", "CONFIG", "OPTS"))
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
    global FIT_SCORES, EVAL_AT
    FIT_SCORES = args.fit_scores
    if args.max_iter % args.period:
        ap.error(f"--max-iter {args.max_iter} is not a multiple of --period {args.period}")
    if args.eval_at:
        wrong = [i for i in args.eval_at if i % args.period or not 0 < i <= args.max_iter]
        if wrong:
            ap.error(f"--eval-at {wrong}: not a checkpoint (a multiple of --period {args.period} up to --max-iter)")
        EVAL_AT = set(args.eval_at)
    runs = [Run(args.output, name, config, opts, seed) for seed in args.seeds for name, config, opts in args.variant]
    if not args.report_only:
        done = threading.Event()
        evaluator = threading.Thread(target=evaluation_loop, args=(runs, args.period, args.eval, done))
        evaluator.start()
        try:
            with ThreadPoolExecutor(args.jobs) as pool:
                for job in [pool.submit(train, run, args.max_iter, args.period) for run in runs]:
                    try:
                        job.result()
                    except RuntimeError as e:  # keep the others
                        print(f"[curves] {e}", file=sys.stderr, flush=True)
        finally:
            done.set()
            evaluator.join()
    report(runs, args.eval, args.results)


if __name__ == "__main__":
    main()
