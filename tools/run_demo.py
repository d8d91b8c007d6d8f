#!/usr/bin/env python
"""`make demo`: train GMMSeg and its softmax twin on the built-in demo data, evaluate both, and
print one side-by-side table (mIoU, per-class IoU, calibration, anomaly detection, speed).

Training speed is one ratio, the GMM's training step time over its twin's, of the medians of
steps timed here in one process, the two models' steps alternating in rounds (both built from
their final checkpoints): a machine that is busy for part of the time slows both alike. The
training runs' own per-iteration times (each in its own process, at different times) are not
used: on a shared machine their means say more about the load than about the models.

Each model is trained by the ordinary CLI (tools/train_net.py, its log in OUTPUT_DIR/log.txt),
then evaluated here from its final checkpoint on the val split and on the anomaly split. While a
model trains, one line every few seconds shows its iteration, loss and ETA (from the run's
metrics.json, which detectron2 appends every 20 iterations); the total time is printed at the end.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {"softmax": "configs/demo/fpn_r18_softmax.yaml", "gmm": "configs/demo/fpn_r18_gmm.yaml"}


PROGRESS_EVERY_S = 5.0  # at most one progress line per model this often
# training-step timing: warm-up steps per model, then rounds of steps per model, alternating
SPEED_WARMUP, SPEED_ROUNDS, SPEED_STEPS_PER_ROUND = 3, 4, 5


def new_metric_records(path, offset):
    """detectron2's metrics.json (one JSON object per line, appended while training) from byte
    `offset` on: (records of the complete lines, offset after them). A missing file gives none."""
    if not os.path.exists(path):
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next call
    records = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    return records, offset + end


def progress_line(variant, record, max_iter, elapsed_s):
    """One line: iteration (1-based, as detectron2's log), loss, ETA, time so far."""
    it = record.get("iteration", -1) + 1
    loss = record.get("total_loss")
    eta = record.get("eta_seconds")
    return (
        f"[demo] {variant}: iter {it}/{max_iter}"
        + (f"  loss {loss:.3f}" if loss is not None else "")
        + (f"  eta {datetime.timedelta(seconds=int(eta))}" if eta is not None else "")
        + f"  ({elapsed_s:.0f} s)"
    )


def max_iterations(config, extra_opts):
    from gmmseg import load_config

    return load_config(os.path.join(ROOT, config), extra_opts).SOLVER.MAX_ITER


def train(variant, config, out_dir, extra_opts):
    cmd = [
        sys.executable,
        os.path.join(ROOT, "tools", "train_net.py"),
        "--config-file",
        os.path.join(ROOT, config),
        "OUTPUT_DIR",
        out_dir,
        "DATASETS.TEST",
        "()",
        *extra_opts,
    ]  # evaluated below, once
    print(f"[demo] training {variant}: {' '.join(cmd[1:])}", flush=True)
    max_iter = max_iterations(config, extra_opts)
    t0 = time.time()
    os.makedirs(out_dir, exist_ok=True)
    metrics = os.path.join(out_dir, "metrics.json")
    offset = os.path.getsize(metrics) if os.path.exists(metrics) else 0  # detectron2 appends to it
    last_print, latest = 0.0, None
    with open(os.path.join(out_dir, "stdout.txt"), "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        while proc.poll() is None:
            time.sleep(0.5)
            records, offset = new_metric_records(metrics, offset)
            latest = next((r for r in reversed(records) if "total_loss" in r), latest) if records else latest
            if latest is not None and time.time() - last_print >= PROGRESS_EVERY_S:
                print(progress_line(variant, latest, max_iter, time.time() - t0), flush=True)
                last_print, latest = time.time(), None
    records, _ = new_metric_records(metrics, offset)
    latest = next((r for r in reversed(records) if "total_loss" in r), latest)
    if latest is not None:
        print(progress_line(variant, latest, max_iter, time.time() - t0), flush=True)
    if proc.returncode != 0:
        tail = open(os.path.join(out_dir, "stdout.txt")).read()[-3000:]
        raise SystemExit(f"[demo] training {variant} failed (exit {proc.returncode}); end of its log:\n{tail}")
    print(f"[demo] {variant} trained in {time.time() - t0:.0f} s (log: {out_dir}/log.txt)", flush=True)


def alternating_step_times(steppers, rounds, steps_per_round, warmup, clock=time.perf_counter):
    """{name: [seconds of each timed step]}: `warmup` untimed calls of each stepper, then
    `rounds` rounds in which every stepper in turn makes `steps_per_round` timed calls."""
    for step in steppers.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steppers}
    for _ in range(rounds):
        for name, step in steppers.items():
            for _ in range(steps_per_round):
                t0 = clock()
                step()
                times[name].append(clock() - t0)
    return times


def median_ratio(times, numerator="gmm", denominator="softmax"):
    """median(times[numerator]) / median(times[denominator])."""
    return statistics.median(times[numerator]) / statistics.median(times[denominator])


def training_stepper(config, out_dir, scratch_dir, extra_opts):
    """One training iteration per call (data, forward, backward, SGD, the hooks: EM flush and
    M-step, LR schedule) of the model trained in out_dir, from its final weights; nothing is
    written to out_dir (the trainer's outputs go to scratch_dir)."""
    from gmmseg import load_config
    from gmmseg.engine.stepping import training_stepper as stepper

    cfg = load_config(
        os.path.join(ROOT, config),
        [
            *extra_opts,
            "OUTPUT_DIR",
            scratch_dir,
            "DATASETS.TEST",
            "()",
            "MODEL.WEIGHTS",
            os.path.join(out_dir, "model_final.pth"),
            # no checkpoint, and an LR schedule that the timed steps cannot run past (any run length)
            "SOLVER.CHECKPOINT_PERIOD",
            "1000000",
            "SOLVER.MAX_ITER",
            "1000000",
        ],
    )
    cfg.freeze()
    return stepper(cfg)


def train_step_speed(out_root, extra_opts):
    """{variant: median seconds per training step, measured in this process} and the ratio
    gmm / softmax (see the module docstring)."""
    with tempfile.TemporaryDirectory() as scratch:
        steppers = {
            v: training_stepper(c, os.path.join(out_root, v), os.path.join(scratch, v), extra_opts)
            for v, c in VARIANTS.items()
        }
        times = alternating_step_times(steppers, SPEED_ROUNDS, SPEED_STEPS_PER_ROUND, SPEED_WARMUP)
    return {
        "median_s": {v: statistics.median(t) for v, t in times.items()},
        "steps": SPEED_ROUNDS * SPEED_STEPS_PER_ROUND,
        "gmm_over_softmax": median_ratio(times),
    }


def evaluate(config, out_dir, datasets, extra_opts):
    """{dataset: results} of the final checkpoint in out_dir (as train_net --eval-only: plots and
    JSON under out_dir/inference/<dataset>/), and "ms_per_image" of its inference."""
    from gmmseg.data.mapper import build_sem_seg_test_loader
    from gmmseg.engine.evaluate import evaluate_model
    from gmmseg.inference import build_inference_model, inference_setup

    cfg = inference_setup(os.path.join(ROOT, config), ["OUTPUT_DIR", out_dir, *extra_opts])
    model = build_inference_model(cfg, os.path.join(out_dir, "model_final.pth"))  # no bank, eval mode
    results = evaluate_model(cfg, model, datasets)
    # inference speed: batch 1, no evaluator, after a warm-up
    loader = build_sem_seg_test_loader(cfg, datasets[0])
    inputs = [x for _, x in zip(range(30), loader)]
    with torch.no_grad():
        for x in inputs[:5]:
            model(x)
        t0 = time.perf_counter()
        for x in inputs:
            model(x)
    results["ms_per_image"] = (time.perf_counter() - t0) / len(inputs) * 1e3
    return results


def gmm_fit(out_dir, extra_opts):
    """Held-out log-likelihoods of known and anomaly pixels at every checkpoint of the GMM run."""
    from gmmseg.analysis.gmm_fit import fit_curve
    from gmmseg.inference import inference_setup

    cfg = inference_setup(os.path.join(ROOT, VARIANTS["gmm"]), extra_opts)
    return fit_curve(cfg, out_dir, "gmmseg_demo_val", "gmmseg_demo_anomaly")


def fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def summary_table(res, class_names):
    from gmmseg.scores import score_labels

    val, anom = "gmmseg_demo_val", "gmmseg_demo_anomaly"
    rows = []

    def row(name, get, digits=1):
        vals = []
        for v in VARIANTS:
            try:
                vals.append(get(res[v]))
            except (KeyError, TypeError):
                vals.append(None)
        rows.append((name, *[fmt(x, digits) for x in vals]))

    row("mIoU (val)", lambda r: r[val]["sem_seg"]["mIoU"])
    for c in class_names:
        row(f"  IoU {c}", lambda r, c=c: r[val]["sem_seg"][f"IoU-{c}"])
    row("ECE % (val, 15 bins)", lambda r: r[val]["calibration"]["ECE"], 2)
    present = {k.rsplit("_", 1)[0] for v in VARIANTS for k in res.get(v, {}).get(anom, {}).get("anomaly", {})}
    for score in [s for s in score_labels() if s in present]:  # the score table's order
        for metric in ["AUROC", "AP", "FPR95"]:
            row(f"{metric} {score} (anomaly)", lambda r, s=score, m=metric: r[anom]["anomaly"][f"{s}_{m}"])
    row("train step / softmax's", lambda r: r["train_step_ratio"], 2)
    row("inference ms/image", lambda r: r["ms_per_image"], 1)
    widths = [max(len(str(r[i])) for r in rows + [("metric", *VARIANTS)]) for i in range(3)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(("metric", *VARIANTS), widths))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default="output/demo", help="where both runs and the summary go")
    ap.add_argument("--reuse", action="store_true", help="skip training when model_final.pth exists")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for both models")
    args = ap.parse_args()
    out_root = os.path.abspath(args.output)

    from detectron2.data import DatasetCatalog, MetadataCatalog

    import gmmseg  # noqa: F401  (registers the demo datasets)
    from gmmseg.analysis.gmm_fit import fit_curve_table
    from gmmseg.data.common import datasets_root

    t0 = time.time()
    print(f"[demo] preparing the demo data under {datasets_root()} (generated on first use)", flush=True)
    for split in ("gmmseg_demo_train", "gmmseg_demo_val", "gmmseg_demo_anomaly"):
        DatasetCatalog.get(split)  # generates the data on first use
    print(f"[demo] demo data ready under {datasets_root()} ({time.time() - t0:.0f} s)")
    res = {}
    for variant, config in VARIANTS.items():
        out_dir = os.path.join(out_root, variant)
        if not (args.reuse and os.path.exists(os.path.join(out_dir, "model_final.pth"))):
            train(variant, config, out_dir, args.opts)
        t_eval = time.time()
        print(
            f"[demo] evaluating {variant} on gmmseg_demo_val and gmmseg_demo_anomaly, then timing inference", flush=True
        )
        res[variant] = evaluate(config, out_dir, ["gmmseg_demo_val", "gmmseg_demo_anomaly"], args.opts)
        print(f"[demo] {variant} evaluated in {time.time() - t_eval:.0f} s", flush=True)
    print("[demo] timing training steps of both models in this process (alternating rounds)", flush=True)
    res["train_speed"] = train_step_speed(out_root, args.opts)
    res["softmax"]["train_step_ratio"] = 1.0
    res["gmm"]["train_step_ratio"] = res["train_speed"]["gmm_over_softmax"]
    names = MetadataCatalog.get("gmmseg_demo_val").stuff_classes
    text = summary_table(res, names)
    print("[demo] measuring the GMM's held-out likelihood at each checkpoint", flush=True)
    res["gmm_fit_curve"] = gmm_fit(os.path.join(out_root, "gmm"), args.opts)
    text += (
        "\n\nDoes the GMM fit the features? Held-out log-likelihoods (nats, means over pixels) at the "
        "checkpoints of the gmm run:\n" + fit_curve_table(res["gmm_fit_curve"])
    )
    print("\n" + text + "\n")
    with open(os.path.join(out_root, "summary.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out_root, "summary.json"), "w") as f:
        json.dump(res, f, indent=1, default=float)
    print(f"[demo] summary: {out_root}/summary.txt; plots and metrics: {out_root}/<variant>/inference/<dataset>/")
    print(f"[demo] total {time.time() - t0:.0f} s ({datetime.timedelta(seconds=int(time.time() - t0))})")


if __name__ == "__main__":
    main()
