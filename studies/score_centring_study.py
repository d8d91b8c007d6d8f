#!/usr/bin/env python
"""Does a change of camera shift every pixel's anomaly score of an image alike? If it did, centring
each image's score map on its own median (or mean, or standardising it by its median absolute
deviation) would cancel the shift. This reads one trained model on anomaly sets and prints the
AUROC of every score it gives, raw and per-image centred.

    python studies/score_centring_study.py --config-file runs/x/config.yaml --weights runs/x/model_final.pth \\
        [--fit runs/x/model_final_fit.json] --datasets camvid_static_val camvid_static_shift_val

AUROC over up to --pixels random non-void pixels per image (sklearn's roc_auc_score), the same
pixels for every score; the anomaly masks of the datasets ("anomaly_mask_file_name": 1 anomaly,
0 known, 255 void). Data: $DETECTRON2_DATASETS. Writes nothing but stdout (and --output JSON).
"""

import argparse
import json

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image
from PIL import Image
from sklearn.metrics import roc_auc_score

from gmmseg.evaluation.anomaly import anomaly_scores
from gmmseg.inference import build_inference_model, inference_setup

CENTRINGS = ("raw", "median", "mean", "robust")


def centred(m: np.ndarray, how: str) -> np.ndarray:
    """One image's score map, as it is or centred on the image's own statistics."""
    if how == "raw":
        return m
    med = np.median(m)
    if how == "median":
        return m - med
    if how == "mean":
        return m - m.mean()
    return (m - med) / (np.median(np.abs(m - med)) + 1e-6)  # robust z-score (MAD)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config-file", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--fit", default="", help="a tools/fit_scores.py file: the fitted scores too")
    ap.add_argument("--datasets", nargs="+", required=True)
    ap.add_argument("--pixels", type=int, default=4000, help="random non-void pixels per image")
    ap.add_argument(
        "--output", default="", help="a JSON file for {dataset: {score/centring: AUROC}}"
    )
    args = ap.parse_args(argv)
    opts = ["MODEL.DEVICE", "cpu"] + (["MODEL.ANOMALY_FIT", args.fit] if args.fit else [])
    cfg = inference_setup(args.config_file, opts)
    model = build_inference_model(cfg, args.weights)
    rng = np.random.default_rng(0)
    out = {}
    for dataset in args.datasets:
        pooled, labels = {}, []
        for record in DatasetCatalog.get(dataset):
            if "anomaly_mask_file_name" not in record:
                raise SystemExit(
                    f"{dataset}: {record['file_name']} has no anomaly mask (not an anomaly set)"
                )
            image = read_image(record["file_name"], format=cfg.INPUT.FORMAT)
            inputs = {"image": torch.as_tensor(image.transpose(2, 0, 1).copy())}
            inputs.update(height=record["height"], width=record["width"])
            with torch.no_grad():
                scores = anomaly_scores(model([inputs])[0])
            mask = np.asarray(Image.open(record["anomaly_mask_file_name"])).ravel()
            valid = np.flatnonzero(mask != 255)
            pick = rng.choice(valid, size=min(args.pixels, valid.size), replace=False)
            labels.append(mask[pick] == 1)
            for name, m in scores.items():
                m = m.numpy().ravel()
                for how in CENTRINGS:
                    pooled.setdefault(f"{name}/{how}", []).append(centred(m, how)[pick])
        y = np.concatenate(labels)
        out[dataset] = {k: 100 * roc_auc_score(y, np.concatenate(v)) for k, v in pooled.items()}
        print(f"{dataset}: AUROC, {y.size} pixels, {100 * y.mean():.1f} % anomalous")
        print("| score | " + " | ".join(CENTRINGS) + " |")
        print("|---" * (len(CENTRINGS) + 1) + "|")
        for name in dict.fromkeys(k.split("/")[0] for k in out[dataset]):
            print(
                f"| {name} | "
                + " | ".join(f"{out[dataset][f'{name}/{h}']:.1f}" for h in CENTRINGS)
                + " |"
            )
    if args.output:
        with open(args.output, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
