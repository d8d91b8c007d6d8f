#!/usr/bin/env python
"""Fit the post-hoc class temperature of a trained Mask2Former model (no retraining).

    python tools/fit_temperature.py --config-file configs/demo/mask2former_r18_gmm.yaml \
        [--dataset gmmseg_demo_train] [--images 100] [--pixels 2000] [--output temperature.json] \
        MODEL.WEIGHTS output/demo/mask2former_gmm/model_final.pth

Runs the model (eval mode, test-time images) over --images images drawn at random from a labelled
dataset (default: the config's first training set; the evaluation sets are refused, so that the
evaluated calibration is not fitted on), keeps --pixels random labelled pixels per image, and finds
the temperature T of the query class logits that minimises their negative log-likelihood under
inference's per-pixel scores (gmmseg/analysis/temperature.py). Prints NLL, ECE (with the
evaluators' bins, TEST.OPEN_WORLD.CALIBRATION_BINS) and pixel accuracy at T = 1 and at the fitted T,
and the override to evaluate with:

    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS ... MODEL.MASK_FORMER.TEST.CLASS_TEMPERATURE <T>

The labels are the evaluators' ground truth: the dataset's label files, read with its remapping, at
the size of the prediction. A CLASS_TEMPERATURE already in the config is ignored here (T = 1 is
"before"). --output writes the numbers as JSON.
"""

import json
import logging
import os
from typing import Dict, List

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.utils.logger import setup_logger

from gmmseg.analysis.fit_inputs import (
    check_sample_counts,
    fit_argument_parser,
    fit_split,
    labelled_pixels,
    sampled_images,
)
from gmmseg.analysis.temperature import fit_class_temperature
from gmmseg.data.mapper import make_sem_seg_loading_fn
from gmmseg.inference import build_inference_model, inference_setup
from gmmseg.modeling.mask_former import MaskFormer
from gmmseg.modeling.mask_former.meta_arch import TEMPERATURE_KEY

logger = logging.getLogger("gmmseg.fit_temperature")


def get_parser():
    return fit_argument_parser(
        "Fit Mask2Former's post-hoc class temperature (no retraining)",
        dataset_help="registered dataset with semantic labels (default: DATASETS.TRAIN[0]); not one of DATASETS.TEST",
        output_help="write the fit (temperature, NLL, ECE, ...) as JSON",
        output_required=False,
    )


def main(argv=None) -> Dict:
    args = get_parser().parse_args(argv)
    setup_logger(name="gmmseg")
    check_sample_counts("fit_temperature", args.images, args.pixels)
    cfg = inference_setup(args.config_file, args.opts, args.register)
    _check_config(cfg)
    dataset, label_files = fit_split(cfg, args.dataset, "fit_temperature")
    model = build_inference_model(cfg)
    if not isinstance(
        model, MaskFormer
    ):  # passed the name check: something registered under that name
        raise SystemExit(
            f"fit_temperature: MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r} built a "
            f"{type(model).__name__}, not this project's MaskFormer"
        )
    samples = collect_samples(model, cfg, dataset, label_files, args.images, args.pixels, args.seed)
    bins = cfg.TEST.OPEN_WORLD.CALIBRATION_BINS  # the ECE of the evaluators (CalibrationEvaluator)
    fit = fit_class_temperature(samples, num_bins=bins)
    fit.update(
        calibration_bins=bins,
        dataset=dataset,
        weights=cfg.MODEL.WEIGHTS,
        config_file=args.config_file,
        pixels_per_image=args.pixels,
        seed=args.seed,
    )
    print(format_report(fit))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(fit, f, indent=1)
        logger.info("wrote %s", args.output)
    return fit


def _check_config(cfg) -> None:
    """Refuse what the fit cannot serve, before anything is built or loaded."""
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch != "MaskFormer":
        raise SystemExit(
            f"fit_temperature: MODEL.META_ARCHITECTURE is {arch!r}; {TEMPERATURE_KEY} is the "
            "query class temperature of Mask2Former (META_ARCHITECTURE 'MaskFormer')"
        )
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        raise SystemExit(
            "fit_temperature: give the trained model as MODEL.WEIGHTS path/to/model_final.pth"
        )
    if not os.path.isfile(weights) and "://" not in weights:
        raise SystemExit(f"fit_temperature: MODEL.WEIGHTS {weights!r} is not a file")


def collect_samples(
    model: MaskFormer,
    cfg,
    dataset: str,
    label_files: Dict[str, str],
    num_images: int,
    pixels_per_image: int,
    seed: int,
) -> List:
    """Per image (query logits (Q, K+1), mask probabilities (Q, P), labels (P,)) at P random labelled
    pixels of the prediction, on the CPU. Images without a labelled pixel are skipped."""
    loader, dicts = sampled_images(cfg, dataset, label_files, num_images, seed)
    load_label = make_sem_seg_loading_fn(dataset)
    ignore = MetadataCatalog.get(dataset).get("ignore_label", 255)  # as the evaluators
    pick_gen = torch.Generator().manual_seed(seed)
    samples = []
    with torch.no_grad():
        for batch in loader:
            for x, pred in zip(batch, model.query_predictions(batch)):
                label_file = label_files[x["file_name"]]
                labels = torch.from_numpy(load_label(label_file, dtype=np.int64))
                probs = pred["mask_probs"]
                if tuple(labels.shape) != tuple(probs.shape[1:]):
                    raise ValueError(
                        f"fit_temperature: the prediction for {x['file_name']!r} is "
                        f"{tuple(probs.shape[1:])}, its label {label_file!r} is {tuple(labels.shape)}"
                    )
                pick = labelled_pixels(labels.flatten(), ignore, pixels_per_image, pick_gen)
                if pick.numel():
                    samples.append(
                        (
                            pred["query_logits"].cpu(),
                            probs.flatten(1)[:, pick.to(probs.device)].cpu(),
                            labels.flatten()[pick],
                        )
                    )
    logger.info("%d of %d images with labelled pixels from %s", len(samples), len(dicts), dataset)
    return samples


def format_report(fit: Dict) -> str:
    """The fit as a short table and the override line to paste."""
    rows = [
        f"class temperature of {fit['weights']} on {fit['dataset']} "
        f"({fit['images']} images, {fit['pixels']} labelled pixels; ECE over {fit['calibration_bins']} bins):",
        f"{'':8}{'T':>8}{'NLL':>9}{'ECE %':>8}{'pixel acc %':>13}",
    ]
    for name, t, key in (("before", 1.0, "before"), ("after", fit["temperature"], "after")):
        rows.append(
            f"{name:8}{t:8.3f}{fit['nll_' + key]:9.4f}{fit['ece_' + key]:8.2f}{fit['accuracy_' + key]:13.2f}"
        )
    rows.append(f"evaluate with: {TEMPERATURE_KEY} {fit['temperature']:.4g}")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
