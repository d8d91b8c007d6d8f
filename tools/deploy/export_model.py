#!/usr/bin/env python
"""Export a trained GMMSeg model (or its softmax twin) to TorchScript or ONNX.

    python tools/deploy/export_model.py --config-file configs/demo/fpn_r18_gmm.yaml \
        --format onnx --export-method tracing --output output/export \
        MODEL.WEIGHTS output/demo/gmm/model_final.pth

writes <output>/model.onnx (or model.ts): input one image (3, H, W) float32 in 0..255, channels
in cfg.INPUT.FORMAT, any H and W; outputs at the same H x W: "sem_seg" (K, H, W) class scores
and, for the GMM, "anomaly_score" (H, W) = -max_c log p(x|c). The model is built for inference
(gmmseg.inference.build_inference_model): the GMM's memory bank is never allocated, nor read from
the checkpoint; every other training-only tensor is left out of the file. Class names, input
format and the test-time resize are stored in the file, so that
`python tools/demo.py --exported <output>/model.onnx --input ...` needs nothing else. After
writing, the file is run on the sample image and compared with the eager model (max |difference|,
argmax agreement).

Per-pixel models (any decoder) run on any H x W. Mask2Former traces for one size only: the file
runs on images of the sample's size (after the test-time resize; by default that of a 360 x 480
image) and refuses others (docs/MASK2FORMER.md, "Export").
"""

import argparse
import logging
import os
import sys

import numpy as np
import torch
from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger

from gmmseg.deploy import (
    FORMATS,
    ExportedSegmenter,
    export_metadata,
    export_model,
    prepare_for_export,
)
from gmmseg.deploy.runtime import preprocess, resized_shape
from gmmseg.inference import build_inference_model, inference_setup

logger = logging.getLogger("gmmseg.export")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Export a GMMSeg / softmax model by tracing")
    parser.add_argument(
        "--config-file", required=True, metavar="FILE", help="path to the model's config file"
    )
    parser.add_argument(
        "--register",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE (dotted name or .py file) first: your own dataset registrations, "
        "for the class names stored in the file (repeatable)",
    )
    parser.add_argument("--format", choices=sorted(FORMATS), default="onnx")
    parser.add_argument(
        "--export-method",
        choices=["tracing"],
        default="tracing",
        help="tracing (detectron2's TracingAdapter); the only method for these models",
    )
    parser.add_argument(
        "--output", required=True, help="folder for model.onnx / model.ts (created)"
    )
    parser.add_argument(
        "--sample-image",
        default=None,
        help="image to trace with and to check the export on (resized as at test time); "
        "default: a random image of --sample-size",
    )
    parser.add_argument(
        "--sample-size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="size of the random sample image, as the model sees it (default: a 360 x 480 "
        "image after the config's test-time resize, e.g. 96 x 128 for the demo configs)",
    )
    parser.add_argument(
        "opts",
        default=[],
        nargs=argparse.REMAINDER,
        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model_final.pth",
    )
    return parser


def setup_cfg(args):
    return inference_setup(args.config_file, args.opts, args.register, device="cpu")


def sample_image(args, cfg) -> np.ndarray:
    """The sample as the model sees it: (3, H, W) float32."""
    if args.sample_image:
        bgr = read_image(args.sample_image, format="BGR")
        return preprocess(bgr, cfg.INPUT.FORMAT, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    h, w = args.sample_size or resized_shape(
        360, 480, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST
    )
    return np.random.default_rng(0).uniform(0, 255, (3, h, w)).astype(np.float32)


def eager_outputs(model, image: np.ndarray) -> dict:
    """The eager model's outputs for one (3, H, W) image that the exported file returns (its anomaly
    map, not every score), as numpy arrays."""
    with torch.no_grad():
        out = model([{"image": torch.from_numpy(image)}])[0]
    return {k: v.numpy() for k, v in out.items() if k != "anomaly_scores"}


def compare(eager: dict, exported: dict) -> dict:
    """max |difference| per output and the fraction of pixels with the same argmax class."""
    report = {f"max_abs_diff_{k}": float(np.abs(eager[k] - exported[k]).max()) for k in eager}
    report["argmax_agreement"] = float(
        (eager["sem_seg"].argmax(0) == exported["sem_seg"].argmax(0)).mean()
    )
    return report


def main(args) -> str:
    setup_logger(name="gmmseg")
    cfg = setup_cfg(args)
    if not cfg.MODEL.WEIGHTS:
        logger.warning("MODEL.WEIGHTS is empty: exporting a randomly initialised model")
    # built without the GMM memory bank (never allocated, the checkpoint's never read), checkpoint
    # loaded safely and checked against the config, eval mode
    model = build_inference_model(cfg)
    image = sample_image(args, cfg)
    eager = eager_outputs(model, image)  # the trained model as it is, before prepare_for_export
    sizes = prepare_for_export(model)
    metadata = export_metadata(
        cfg,
        cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        config_file=args.config_file,
        weights=cfg.MODEL.WEIGHTS,
    )
    path = os.path.join(args.output, "model" + FORMATS[args.format])
    export_model(model, torch.from_numpy(image), args.format, path, metadata)
    mib = 2**20
    logger.info(
        f"wrote {path}: {os.path.getsize(path) / mib:.1f} MiB (inference model state {sizes['before'] / mib:.1f} "
        f"MiB, {sizes['after'] / mib:.1f} MiB in its export form)"
    )
    exported = ExportedSegmenter(path)
    if exported.metadata["input_size"]:
        logger.warning(
            f"{path} runs on {image.shape[1]}x{image.shape[2]} inputs only (after the test-time resize): "
            "this model traces for one size"
        )
    check = compare(eager, exported.run(image))
    logger.info(
        f"exported vs eager on a {image.shape[1]}x{image.shape[2]} image: "
        + ", ".join(f"{k} {v:.3g}" for k, v in check.items())
    )
    return path


if __name__ == "__main__":
    main(get_parser().parse_args(sys.argv[1:]))
