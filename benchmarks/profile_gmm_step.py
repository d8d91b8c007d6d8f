#!/usr/bin/env python
"""Where a GMMSeg training step spends the time its softmax twin does not: one run, ratios only.

    export DETECTRON2_DATASETS=/path/to/datasets        # holds camvid/
    python benchmarks/profile_gmm_step.py --threads 1 [--steps 40] [--opts KEY VALUE ...]

Builds the twin and the GMM model of the pretrained CamVid recipe (configs/camvid/segformer_lite0_
{softmax,gmm}.yaml, all 11 classes, the release's memory and sampler by default), runs their real
training iterations (gmmseg.engine.stepping: data, forward, backward, SGD, hooks) alternating, and
times, inside the GMM's step, the predictor's parts: forward (projection, LayerNorms, log-likelihood,
class LayerNorm), learn (E-step, auxiliary loss, rows set aside and the coverage counts), and the EM
hook's flush / M-step. Prints the median step of each model, their ratio, and each part's median
ms per step and share of the difference; the rest of the difference is the GMM head's backward and
what the larger graph costs the optimizer step.
"""

import argparse
import functools
import os
import statistics
import tempfile
import time

import torch
from common import table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIGS = {
    p: os.path.join(ROOT, "configs", "camvid", f"segformer_lite0_{p}.yaml")
    for p in ("softmax", "gmm")
}
RELEASE = ["MODEL.GMM.MEMORY_SIZE", "32000", "DATALOADER.SAMPLER_TRAIN", "ClassBalancedSampler"]
PARTS = ("forward", "learn", "flush", "em_update")


def _timed(fn, name, spent):
    @functools.wraps(fn)
    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[name] += time.perf_counter() - t0

    return wrapper


def build(predictor, opts, out_dir):
    from gmmseg import load_config
    from gmmseg.engine.stepping import training_stepper

    cfg = load_config(
        CONFIGS[predictor],
        list(opts)
        + [
            "OUTPUT_DIR",
            out_dir,
            "DATASETS.TEST",
            "()",
            "DATALOADER.NUM_WORKERS",
            "0",
            "SOLVER.CHECKPOINT_PERIOD",
            "1000000",
        ],
    )
    cfg.freeze()
    return training_stepper(cfg)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--steps", type=int, default=40, help="timed steps per model (after 5 warm-up steps each)"
    )
    ap.add_argument(
        "--opts", nargs="*", default=RELEASE, metavar="KEY VALUE", help="overrides of both configs"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        steppers = {
            p: build(p, args.opts if p == "gmm" else _twin_opts(args.opts), os.path.join(tmp, p))
            for p in ("softmax", "gmm")
        }
        gmm = steppers["gmm"].trainer.model.sem_seg_head.predictor
        spent = dict.fromkeys(PARTS, 0.0)
        gmm.forward = _timed(gmm.forward, "forward", spent)
        gmm.learn = _timed(gmm.learn, "learn", spent)  # inside forward: subtracted below
        gmm.flush = _timed(gmm.flush, "flush", spent)
        gmm.em_update = _timed(gmm.em_update, "em_update", spent)  # calls flush: subtracted below
        times = {p: [] for p in steppers}
        parts = {k: [] for k in PARTS}
        for i in range(5 + args.steps):
            for p, step in steppers.items():
                before = dict(spent)
                t0 = time.perf_counter()
                step()
                dt = time.perf_counter() - t0
                if i >= 5:
                    times[p].append(dt)
                    if p == "gmm":
                        d = {k: spent[k] - before[k] for k in PARTS}
                        parts["forward"].append(d["forward"] - d["learn"])
                        parts["learn"].append(d["learn"])
                        parts["flush"].append(d["flush"])  # em_update's own flush counts here
                        parts["em_update"].append(d["em_update"])
    soft, g = statistics.median(times["softmax"]), statistics.median(times["gmm"])
    rows = [
        ["softmax twin step", f"{soft * 1e3:.1f}", ""],
        ["GMM step", f"{g * 1e3:.1f}", f"{g / soft:.3f}x"],
    ]
    for k in PARTS:
        ms = statistics.mean(parts[k]) * 1e3
        name = f"  GMM {k}{' (incl. its flush)' if k == 'em_update' else ''} (mean per step)"
        share = f"{ms / ((g - soft) * 1e3):.0%} of the difference" if g > soft else ""
        rows.append([name, f"{ms:.1f}", share])
    print(table(rows, ["what", "ms", "ratio / share"]))


def _twin_opts(opts):
    """The overrides that apply to the twin too (not MODEL.GMM.*)."""
    out, it = [], iter(opts)
    for key, value in zip(it, it):
        if not key.startswith("MODEL.GMM."):
            out += [key, value]
    return out


if __name__ == "__main__":
    main()
