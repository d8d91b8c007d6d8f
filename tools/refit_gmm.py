#!/usr/bin/env python
"""Refit the Gaussians of a trained per-pixel GMM model to convergence, without retraining.

    python tools/refit_gmm.py --config-file configs/camvid/segformer_lite0_openset_gmm.yaml \
        --output output/camvid/model_refit.pth [--dataset camvid_openset_train] [--rounds 10] \
        MODEL.WEIGHTS output/camvid/model_final.pth

Runs the network (test-time images) over the labelled dataset (default: the config's first
training set), takes a random sample of labelled embeddings per class and runs EM on them from
the trained means, without momentum (gmmseg/gmm/refit.py). Writes a checkpoint with the same
network and the refitted means / stds, which `tools/train_net.py --eval-only MODEL.WEIGHTS ...`
evaluates like any other; it is an inference checkpoint (no memory bank, no optimizer state).
Prints the mean own-class log-likelihood per round (it rises and levels off when EM has converged).
"""

import argparse
import json
import logging
import os

import torch
from detectron2.utils.logger import setup_logger

from gmmseg.analysis.gmm_refit import refit_model
from gmmseg.data.mapper import build_sem_seg_test_loader
from gmmseg.inference import build_inference_model, inference_setup

logger = logging.getLogger("gmmseg.refit")


def get_parser():
    ap = argparse.ArgumentParser(
        description="Refit a trained GMM model's Gaussians (no retraining)"
    )
    ap.add_argument("--config-file", required=True, metavar="FILE")
    ap.add_argument(
        "--output", required=True, metavar="FILE", help="the refitted checkpoint (.pth) to write"
    )
    ap.add_argument("--dataset", help="registered dataset with labels (default: DATASETS.TRAIN[0])")
    ap.add_argument("--rounds", type=int, default=10, help="EM rounds (default 10)")
    ap.add_argument("--variance-floor", type=float, help="default: MODEL.GMM.VARIANCE_FLOOR")
    ap.add_argument("--pixels-per-image", type=int, default=2000)
    ap.add_argument("--rows-per-class", type=int, default=50000)
    ap.add_argument("--register", action="append", default=[], metavar="MODULE")
    ap.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs (MODEL.WEIGHTS: the model)"
    )
    return ap


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="gmmseg")
    cfg = inference_setup(args.config_file, args.opts, args.register)
    if not cfg.MODEL.WEIGHTS:
        raise SystemExit(
            "refit_gmm: give the trained model as MODEL.WEIGHTS path/to/model_final.pth"
        )
    if not os.path.isfile(cfg.MODEL.WEIGHTS):
        raise SystemExit(f"refit_gmm: MODEL.WEIGHTS {cfg.MODEL.WEIGHTS!r} is not a file")
    if not args.output.endswith(".pth"):
        raise SystemExit(f"refit_gmm: --output must be a .pth file, got {args.output!r}")
    if os.path.abspath(args.output) == os.path.abspath(cfg.MODEL.WEIGHTS):
        raise SystemExit(
            f"refit_gmm: --output {args.output!r} would overwrite the trained model; choose another file"
        )
    dataset = args.dataset or cfg.DATASETS.TRAIN[0]
    model = build_inference_model(cfg)  # no memory bank: the refit needs none
    info = refit_model(
        model,
        build_sem_seg_test_loader(cfg, dataset),
        cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        rounds=args.rounds,
        variance_floor=args.variance_floor,
        pixels_per_image=args.pixels_per_image,
        rows_per_class=args.rows_per_class,
        seed=cfg.SEED,
    )
    ll = info["own_class_ll"]
    logger.info("refit on %s: rows per class %s", dataset, info["rows_per_class"])
    logger.info(
        "mean log p(x|y) of the rows: trained %.2f, then per round %s",
        ll[0],
        " ".join(f"{v:.2f}" for v in ll[1:]),
    )
    info.update(
        dataset=dataset,
        rounds=args.rounds,
        source=cfg.MODEL.WEIGHTS,
        variance_floor=args.variance_floor
        if args.variance_floor is not None
        else cfg.MODEL.GMM.VARIANCE_FLOOR,
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    # a plain file in detectron2's layout; not Checkpointer.save, which would re-point the folder's
    # last_checkpoint (and so a later --resume of the run) at it
    torch.save({"model": model.state_dict(), "refit": info}, args.output)
    with open(args.output[: -len(".pth")] + ".json", "w") as f:
        json.dump(info, f, indent=1)
    logger.info("wrote %s (and its .json)", args.output)
    return info


if __name__ == "__main__":
    main()
