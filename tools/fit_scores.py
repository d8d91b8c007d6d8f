#!/usr/bin/env python
"""Fit the known-pixel statistics of the fitted anomaly scores of a trained model (no retraining).

    python tools/fit_scores.py --config-file configs/camvid/segformer_lite0_openset_gmm.yaml \
        [--dataset camvid_openset_train] [--images 100] [--pixels 2000] --output fit.json \
        MODEL.WEIGHTS output/.../model_final.pth

Runs the model (eval mode, test-time images) over --images images drawn at random from a labelled
training split (default: the config's first training set), keeps --pixels random labelled pixels per
image, and accumulates, per predicted class and over all pixels, the mean and std of every anomaly
score the model gives (gmmseg/scores: its own and the softmax family of its logits). The fitted
scores of the table ("likelihood_std", "max_logit_std", "likelihood_energy", ...) standardise with
them. For a per-pixel GMM model it also fits the background density of the "likelihood_ratio" score:
one diagonal Gaussian mixture (--background-components, scikit-learn's GaussianMixture) of the
embeddings of --embeddings random labelled cells of the feature grid per image, then, with that
density attached, the statistics of the "background" score on a second draw of images (seed + 1),
which its fusions ("background_energy", "background_entropy") standardise with. Only known
pixels enter: the evaluation sets (DATASETS.TEST) and every dataset with anomaly masks are
refused, and nothing is tuned on anomalies. Evaluate, visualise or export with:

    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS ... MODEL.ANOMALY_FIT fit.json
        [MODEL.ANOMALY_SCORE likelihood_energy]
"""

import json
import logging
import os
from typing import Dict

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
from gmmseg.analysis.head_hooks import PredictorInputs, labels_to_grid
from gmmseg.data.mapper import make_sem_seg_loading_fn
from gmmseg.evaluation.anomaly import anomaly_scores
from gmmseg.gmm.background import BackgroundDensity
from gmmseg.inference import build_inference_model, inference_setup
from gmmseg.scores import FITTED
from gmmseg.scores.fit import FIT_KEY, KnownPixelStatistics

logger = logging.getLogger("gmmseg.fit_scores")


def get_parser():
    ap = fit_argument_parser(
        "Fit the known-pixel statistics of the fitted anomaly scores",
        dataset_help="registered labelled training split (default: DATASETS.TRAIN[0]); not one of "
        "DATASETS.TEST, and without anomaly masks",
        output_help="the JSON file MODEL.ANOMALY_FIT reads",
        output_required=True,
    )
    ap.add_argument(
        "--embeddings",
        type=int,
        default=500,
        help="labelled feature-grid cells per image for the background density (default 500)",
    )
    ap.add_argument(
        "--background-components",
        type=int,
        default=16,
        help="Gaussians of the background density (default 16; 0: no background density)",
    )
    return ap


def collect(
    model,
    cfg,
    dataset: str,
    label_files: Dict[str, str],
    num_images: int,
    pixels: int,
    seed: int,
    embeddings: int = 0,
):
    """KnownPixelStatistics over `pixels` random labelled pixels of `num_images` random images, and
    (per-pixel GMM models, `embeddings` > 0) the embeddings (E, D) of `embeddings` random labelled
    feature-grid cells per image, else None."""
    loader, _ = sampled_images(cfg, dataset, label_files, num_images, seed)
    load_label = make_sem_seg_loading_fn(dataset)
    ignore = MetadataCatalog.get(dataset).get("ignore_label", 255)
    gen = torch.Generator().manual_seed(seed)
    stats = KnownPixelStatistics(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    images = 0
    head = getattr(model, "sem_seg_head", None)
    hooks = (
        PredictorInputs(head)
        if embeddings > 0 and hasattr(getattr(head, "predictor", None), "background")
        else None
    )
    kept = []
    with torch.no_grad():
        for batch in loader:
            for x, out in zip(batch, model(batch)):
                label_file = label_files[x["file_name"]]
                labels = torch.from_numpy(load_label(label_file, dtype=np.int64)).flatten()
                scores = anomaly_scores(out)
                if labels.numel() != out["sem_seg"][0].numel():
                    raise ValueError(
                        f"fit_scores: the prediction for {x['file_name']!r} is "
                        f"{tuple(out['sem_seg'].shape[1:])}, its label {label_file!r} is not"
                    )
                pick = labelled_pixels(labels, ignore, pixels, gen)
                if pick.numel() == 0:
                    continue
                predicted = out["sem_seg"].flatten(1)[:, pick].argmax(0).cpu()
                stats.add({n: s.flatten()[pick] for n, s in scores.items()}, predicted)
                images += 1
                if hooks is not None:  # batch of one (the test loader): the grid of this image
                    grid = labels_to_grid(
                        x["sem_seg"], hooks.shape, head.common_stride, ignore
                    ).flatten()
                    cells = (grid != ignore).nonzero().squeeze(1)
                    cells = cells[torch.randperm(cells.numel(), generator=gen)[:embeddings]]
                    kept.append(head.predictor.embed(hooks.x[cells.to(hooks.x.device)]).cpu())
    if hooks is not None:
        hooks.remove()
    return stats, images, (torch.cat(kept) if kept else None)


def fit_background(e: torch.Tensor, components: int, seed: int) -> Dict:
    """A diagonal Gaussian mixture of the embeddings (E, D) (scikit-learn), as BackgroundDensity's dict."""
    from sklearn.mixture import GaussianMixture

    if e.shape[0] < components:
        raise SystemExit(
            f"fit_scores: {e.shape[0]} embeddings for {components} background components; "
            "use more --images or --embeddings, or fewer --background-components"
        )
    gm = GaussianMixture(
        components, covariance_type="diag", reg_covar=1e-4, max_iter=300, random_state=seed
    )
    gm.fit(e.double().numpy())
    return {
        "weights": gm.weights_.tolist(),
        "means": gm.means_.tolist(),
        "stds": np.sqrt(gm.covariances_).tolist(),
        "embeddings": int(e.shape[0]),
        "converged": bool(gm.converged_),
    }


def main(argv=None) -> Dict:
    args = get_parser().parse_args(argv)
    setup_logger(name="gmmseg")
    check_sample_counts("fit_scores", args.images, args.pixels)
    cfg = inference_setup(args.config_file, list(args.opts) + [FIT_KEY, ""], args.register)
    if not cfg.MODEL.WEIGHTS:
        raise SystemExit(
            "fit_scores: give the trained model as MODEL.WEIGHTS path/to/model_final.pth"
        )
    dataset, label_files = fit_split(cfg, args.dataset, "fit_scores", refuse_anomaly_masks=True)
    model = build_inference_model(cfg)
    stats, images, embeddings = collect(
        model,
        cfg,
        dataset,
        label_files,
        args.images,
        args.pixels,
        args.seed,
        args.embeddings if args.background_components > 0 else 0,
    )
    result = stats.result()
    fit = {
        "config_file": args.config_file,
        "weights": cfg.MODEL.WEIGHTS,
        "dataset": dataset,
        "images": images,
        "pixels_per_image": args.pixels,
        "seed": args.seed,
        "scores": result,
    }
    needs_fit = []  # the table's scores that read the fit file beyond the statistics
    if embeddings is not None:
        fit["background"] = fit_background(embeddings, args.background_components, args.seed)
        # the statistics of the background score itself (its fusions, "background_energy", read
        # them): a second sample of images (seed + 1), with the fitted density attached
        model.sem_seg_head.predictor.background = BackgroundDensity.from_dict(fit["background"])
        again, _, _ = collect(
            model, cfg, dataset, label_files, args.images, args.pixels, args.seed + 1
        )
        result["background"] = again.result()["background"]
        needs_fit = ["likelihood_ratio", "background"]
    fit["fitted_scores"] = [
        f.name for f in FITTED.values() if all(b in result for b in f.bases)
    ] + needs_fit
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(fit, f, indent=1)
    print(
        f"known-pixel statistics of {len(result)} scores on {images} images of {dataset} -> {args.output}\n"
        f"fitted scores it enables: {', '.join(fit['fitted_scores']) or 'none'}\n"
        f"evaluate with: {FIT_KEY} {args.output}"
    )
    return fit


if __name__ == "__main__":
    main()
