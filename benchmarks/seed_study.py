#!/usr/bin/env python
"""Train several settings x several seeds (a few runs in parallel), evaluate each run, and print
mean +- std over the seeds.

    python benchmarks/seed_study.py --output output/study_lite0 --seeds 1 2 3 --jobs 2 \
        --eval camvid_openset_val \
        --variant twin configs/camvid/segformer_lite0_openset_softmax.yaml "" \
        --variant gmm configs/camvid/segformer_lite0_openset_gmm.yaml "MODEL.GMM.MEMORY_SIZE 32000"

A run is tools/train_net.py (one thread, `SEED s MODEL.GMM.SEED s` added to the overrides, its log
in <output>/<variant>/seed<s>/log.txt) then `tools/train_net.py --eval-only` of its final
checkpoint on every --eval dataset (mIoU, ECE, AUROC / AP / FPR95 of every anomaly score; its
files in <run>/eval/). Finished runs are reused and
interrupted ones resumed from their last checkpoint (train_net --resume), so a stopped study continues. Results: <output>/study.json; the table goes to stdout and
<output>/study.md. Data: $DETECTRON2_DATASETS (detectron2's convention).
"""

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gmmseg.scores import score_labels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCORES = tuple(score_labels())  # every anomaly score of the table, in its order (a run reports those its model allows)
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def fit_scores(config, opts, weights, nice=0) -> str:
    """tools/fit_scores.py of `weights` on the config's training split (known pixels only), in a child
    process with one thread: <weights without .pth>_fit.json next to the checkpoint (reused when there)."""
    path = os.path.splitext(weights)[0] + "_fit.json"
    if os.path.exists(path):
        return path
    cmd = (["nice", "-n", str(nice)] if nice else []) + [
        sys.executable,
        os.path.join(ROOT, "tools", "fit_scores.py"),
        "--config-file",
        config,
        "--output",
        path,
        *opts,
        "MODEL.WEIGHTS",
        weights,
    ]
    with open(path[: -len(".json")] + "_stdout.txt", "w") as log:
        if subprocess.run(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ, **ONE_THREAD)
        ).returncode:
            raise RuntimeError(f"fitting the scores of {weights} failed: {log.name}")
    return path


def evaluate_checkpoint(config, opts, weights, datasets, out_dir, nice=0, fit=False):
    """`tools/train_net.py --eval-only` of `weights` on `datasets`, in a child process with one
    thread (niced by `nice`), its OUTPUT_DIR `out_dir`: {dataset: results}, also in
    out_dir/inference/results.json. `fit`: with the fitted scores (fit_scores first)."""
    os.makedirs(out_dir, exist_ok=True)
    if fit:
        opts = list(opts) + ["MODEL.ANOMALY_FIT", fit_scores(config, opts, weights, nice)]
    cmd = (["nice", "-n", str(nice)] if nice else []) + [
        sys.executable,
        os.path.join(ROOT, "tools", "train_net.py"),
        "--config-file",
        config,
        "--eval-only",
        *opts,
        "MODEL.WEIGHTS",
        weights,
        "OUTPUT_DIR",
        out_dir,
        "DATASETS.TEST",
        "(" + "".join(f"'{d}'," for d in datasets) + ")",
    ]
    with open(os.path.join(out_dir, "stdout.txt"), "w") as log:
        if subprocess.run(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ, **ONE_THREAD)
        ).returncode:
            raise RuntimeError(f"evaluating {weights} on {', '.join(datasets)} failed: {out_dir}/stdout.txt")
    with open(os.path.join(out_dir, "inference", "results.json")) as f:
        return json.load(f)


def run_one(config, out_dir, opts, datasets, fit=False):
    """Train (unless model_final.pth exists) and evaluate one run in child processes; returns its
    results (also in out_dir/results.json; the evaluation's files in out_dir/eval/)."""
    result_path = os.path.join(out_dir, "results.json")
    if os.path.exists(result_path):
        return json.load(open(result_path))
    os.makedirs(out_dir, exist_ok=True)
    if not os.path.exists(os.path.join(out_dir, "model_final.pth")):
        resume = ["--resume"] if os.path.exists(os.path.join(out_dir, "last_checkpoint")) else []
        cmd = [
            sys.executable,
            os.path.join(ROOT, "tools", "train_net.py"),
            "--config-file",
            config,
            *resume,
            "OUTPUT_DIR",
            out_dir,
            "DATASETS.TEST",
            "()",
            *opts,
        ]
        with open(os.path.join(out_dir, "stdout.txt"), "w") as log:
            if subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ, **ONE_THREAD)
            ).returncode:
                raise RuntimeError(f"training failed: {out_dir}/stdout.txt")
    result = evaluate_checkpoint(
        config, opts, os.path.join(out_dir, "model_final.pth"), datasets, os.path.join(out_dir, "eval"), fit=fit
    )
    with open(result_path, "w") as f:
        json.dump(result, f, default=float)
    return result


def metrics_of(result, dataset):
    """mIoU, ECE and every score's AUROC / AP / FPR95 that `result[dataset]` holds (an anomaly
    benchmark without semantic labels has no mIoU or ECE)."""
    r = result[dataset]
    out = {}
    if "sem_seg" in r:
        out["mIoU"] = r["sem_seg"]["mIoU"]
        out.update({k: v for k, v in r["sem_seg"].items() if k.startswith("IoU-")})  # per class
    if "ECE" in r.get("calibration", {}):
        out["ECE"] = r["calibration"]["ECE"]
    for score in SCORES:
        for m in ("AUROC", "AP", "FPR95"):
            key = f"{score}_{m}"
            if key in r.get("anomaly", {}):
                out[key] = r["anomaly"][key]
    return out


def mean_std(values):
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.1f} +- {v.std(ddof=1) if len(v) > 1 else 0.0:.1f}"


def table(study, dataset):
    cols = ["mIoU", "ECE"] + [f"{s}_{m}" for s in SCORES for m in ("AUROC", "AP", "FPR95")]
    cols = [c for c in cols if any(c in run for runs in study.values() for run in runs.values())]
    lines = ["| variant | seeds | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for name, runs in study.items():
        cells = [mean_std([r[c] for r in runs.values()]) if all(c in r for r in runs.values()) else "-" for c in cols]
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def class_table(study):
    """Per-class IoU, mean +- std over the seeds, one row per variant (a locked-out class shows as 0)."""
    cols = list(
        dict.fromkeys(c for runs in study.values() for run in runs.values() for c in run if c.startswith("IoU-"))
    )
    if not cols:
        return ""
    lines = ["| variant | " + " | ".join(c[4:] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, runs in study.items():
        cells = [mean_std([r[c] for r in runs.values()]) if all(c in r for r in runs.values()) else "-" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", required=True)
    ap.add_argument("--eval", nargs="+", required=True, help="datasets; the table uses the first")
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (one thread each)")
    ap.add_argument("--variant", nargs=3, action="append", required=True, metavar=("NAME", "CONFIG", "OPTS"))
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
                jobs[(name, seed)] = pool.submit(
                    run_one, os.path.join(ROOT, config), out, o, args.eval, args.fit_scores
                )
    study = {name: {} for name, _, _ in args.variant}
    for (name, seed), job in jobs.items():
        try:
            study[name][seed] = metrics_of(job.result(), args.eval[0])
        except Exception as e:  # keep the others
            print(f"{name} seed {seed}: {e}", file=sys.stderr)
    study = {k: v for k, v in study.items() if v}
    json.dump(study, open(os.path.join(args.output, "study.json"), "w"), indent=1)
    md = table(study, args.eval[0]) + "\n\n" + class_table(study)
    open(os.path.join(args.output, "study.md"), "w").write(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
