#!/usr/bin/env python
"""Visual demo: segmentation, anomaly heatmap and confidence map of a trained model, per image.

    python tools/demo.py --config-file configs/demo/fpn_r18_gmm.yaml \
        --input path/to/images/ more/*.jpg one.png --output out/ \
        --opts MODEL.WEIGHTS output/demo/gmm/model_final.pth

The same from an exported model alone (tools/deploy/export_model.py; ONNX Runtime or TorchScript,
no config, no checkpoint, no detectron2 model code):

    python tools/demo.py --exported output/export/model.onnx --input path/to/images/ --output out/

For every input image one PNG <output>/<image stem>.png with three panels side by side:
  1. the predicted segmentation drawn over the image (detectron2 Visualizer; class names from the
     metadata of cfg.DATASETS.TEST[0], else "class 0", "class 1", ...);
  2. the anomaly heatmap: the model's anomaly map (MODEL.ANOMALY_SCORE, else its default: a GMM's
     -max_c log p(x|c)), titled with its label in the score table (gmmseg/scores); a model without
     one (a softmax model) gets the table's max-logit score, and the panel says so;
  3. the confidence map: max_c softmax, in [0, 1].
Heatmap colour ranges are per image (1st..99th percentile for the anomaly score).
"""

import argparse
import glob
import logging
import os
import sys
from typing import List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import tqdm  # noqa: E402
from detectron2.data import MetadataCatalog  # noqa: E402
from detectron2.data.catalog import Metadata  # noqa: E402
from detectron2.data.detection_utils import read_image  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from detectron2.utils.visualizer import ColorMode, Visualizer  # noqa: E402

# importing gmmseg registers its components
from gmmseg.inference import ImageSegmenter, inference_setup  # noqa: E402
from gmmseg.scores import compute_scores, score_labels  # noqa: E402

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
DPI = 100
logger = logging.getLogger("gmmseg.demo")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="GMMSeg demo: segmentation, anomaly and confidence maps"
    )
    parser.add_argument(
        "--config-file", metavar="FILE", help="path to a config file (or --exported)"
    )
    parser.add_argument(
        "--register",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE (dotted name or .py file) first: your own dataset registrations, "
        "for the class names of DATASETS.TEST (repeatable)",
    )
    parser.add_argument(
        "--exported",
        metavar="FILE",
        help="an exported model (.onnx: ONNX Runtime, .ts: TorchScript) instead of --config-file",
    )
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        help="image files, glob patterns (quote them) or folders of images",
    )
    parser.add_argument("--output", required=True, help="folder for the output PNGs (created)")
    parser.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model_final.pth",
    )
    return parser


def setup_cfg(args):
    return inference_setup(args.config_file, args.opts, args.register)


def expand_inputs(inputs: Sequence[str]) -> List[str]:
    """Files, glob patterns and folders -> sorted unique image paths (FileNotFoundError if none)."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            paths += [
                os.path.join(item, f)
                for f in sorted(os.listdir(item))
                if f.lower().endswith(IMAGE_EXTS)
            ]
        elif any(ch in item for ch in "*?["):
            paths += [
                p
                for p in sorted(glob.glob(os.path.expanduser(item)))
                if p.lower().endswith(IMAGE_EXTS)
            ]
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise FileNotFoundError(f"--input {item!r}: no such file or folder")
    paths = list(dict.fromkeys(paths))
    if not paths:
        raise FileNotFoundError(
            f"--input {list(inputs)} matched no image ({', '.join(IMAGE_EXTS)})"
        )
    return paths


def class_metadata(cfg, num_classes: int) -> Metadata:
    """Class names / colours of cfg.DATASETS.TEST[0] if registered, else generic names."""
    names, colors = None, None
    if len(cfg.DATASETS.TEST):
        meta = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        names = getattr(meta, "stuff_classes", None)
        colors = getattr(meta, "stuff_colors", None)
    if names is None or len(names) != num_classes:
        names, colors = [f"class {i}" for i in range(num_classes)], None
    meta = Metadata(name="gmmseg_demo_tool", stuff_classes=list(names))
    if colors is not None:
        meta.stuff_colors = [list(c) for c in colors]
    return meta


# Fixed layout in pixels (no automatic layout: fast, and the PNG size is known in advance).
_LEFT, _GAP, _TOP, _BOTTOM, _CBAR_W, _CBAR_PAD = 10, 90, 70, 12, 12, 6


def _panel_size(height: int, width: int) -> Tuple[int, int]:
    panel_w = int(min(max(width, 320), 800))
    return int(round(panel_w * height / width)), panel_w


def figure_size_px(height: int, width: int) -> Tuple[int, int]:
    """(height, width) in pixels of the PNG written for an image of that size."""
    ph, pw = _panel_size(height, width)
    return ph + _TOP + _BOTTOM, _LEFT + 3 * (pw + _GAP)


def anomaly_map_name(pred: dict) -> Optional[str]:
    """The score table's name of pred["anomaly_score"]: the entry of pred["anomaly_scores"] that is
    (or equals) it; None when the output names no scores (an exported model)."""
    named = pred.get("anomaly_scores") or {}
    amap = pred["anomaly_score"]
    found = next((n for n, s in named.items() if s is amap), None)
    return found or next(
        (n for n, s in named.items() if s.shape == amap.shape and torch.equal(s, amap)), None
    )


def maps_from_predictions(pred: dict) -> dict:
    """Model output -> numpy maps: labels (H, W) int, anomaly (H, W), confidence (H, W), is_gmm (the
    model has an anomaly map of its own), anomaly_label (the score table's label of the map shown)."""
    logits = pred["sem_seg"].detach().to("cpu", torch.float32)
    prob = torch.softmax(logits, 0)
    confidence, labels = prob.max(0)
    if "anomaly_score" in pred:
        anomaly, is_gmm = pred["anomaly_score"].detach().to("cpu", torch.float32), True
        name = anomaly_map_name(pred)
        label = score_labels()[name] if name else "the exported model's anomaly map"
    else:  # no map of its own: the max-logit score of the table
        anomaly, is_gmm = compute_scores({"logits": logits}, ["max_logit"])["max_logit"], False
        label = score_labels()["max_logit"]
    return {
        "labels": labels.numpy(),
        "anomaly": anomaly.numpy(),
        "confidence": confidence.numpy(),
        "is_gmm": is_gmm,
        "anomaly_label": label,
    }


def render(
    image_rgb: np.ndarray, maps: dict, metadata: Metadata, path: str, title: str = ""
) -> str:
    """Write the three-panel PNG for one image; returns the path."""
    h, w = image_rgb.shape[:2]
    fig_h, fig_w = figure_size_px(h, w)
    ph, pw = _panel_size(h, w)
    fig = plt.figure(figsize=(fig_w / DPI, fig_h / DPI), dpi=DPI)

    def rect(x, width):  # pixels -> figure fraction, panels share one row
        return [x / fig_w, _BOTTOM / fig_h, width / fig_w, ph / fig_h]

    axes, cbars = [], []
    for i in range(3):
        x0 = _LEFT + i * (pw + _GAP)
        axes.append(fig.add_axes(rect(x0, pw)))
        cbars.append(fig.add_axes(rect(x0 + pw + _CBAR_PAD, _CBAR_W)))
    cbars[0].set_axis_off()
    overlay = (
        Visualizer(image_rgb, metadata, instance_mode=ColorMode.IMAGE)
        .draw_sem_seg(maps["labels"], alpha=0.5)
        .get_image()
    )
    axes[0].imshow(overlay, aspect="auto")
    axes[0].set_title("Segmentation\nargmax_c p(c|x)")
    anomaly = maps["anomaly"]
    lo, hi = np.percentile(anomaly, [1, 99]) if anomaly.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1e-6
    im = axes[1].imshow(anomaly, cmap="inferno", vmin=lo, vmax=hi, aspect="auto")
    if maps["is_gmm"]:
        axes[1].set_title(f"Anomaly score (higher = more anomalous)\n{maps['anomaly_label']}")
    else:
        axes[1].set_title(
            f"Anomaly proxy (higher = more anomalous)\n{maps['anomaly_label']}: softmax model"
        )
    fig.colorbar(im, cax=cbars[1])
    im = axes[2].imshow(maps["confidence"], cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    axes[2].set_title("Confidence\nmax_c softmax p(c|x)")
    fig.colorbar(im, cax=cbars[2])
    for ax in axes:
        ax.set_axis_off()
        ax.title.set_fontsize(10)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 4 / fig_h, va="top")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def exported_predictor(path: str):
    """(predictor: BGR image -> {"sem_seg", "anomaly_score"?} tensors, class metadata) of an exported file."""
    from gmmseg.deploy import ExportedSegmenter

    segmenter = ExportedSegmenter(path)
    meta = Metadata(name="gmmseg_demo_tool", stuff_classes=list(segmenter.metadata["class_names"]))
    if segmenter.metadata.get("class_colors"):
        meta.stuff_colors = [list(c) for c in segmenter.metadata["class_colors"]]
    return (
        lambda image_bgr: {k: torch.from_numpy(v) for k, v in segmenter(image_bgr).items()}
    ), meta


def config_predictor(args):
    """(the inference model of the config with the checked checkpoint of --opts MODEL.WEIGHTS, on
    one BGR image: gmmseg.inference.ImageSegmenter, cfg)."""
    cfg = setup_cfg(args)
    return ImageSegmenter(cfg), cfg


def main(args) -> List[str]:
    """Run the demo; returns the written PNG paths."""
    setup_logger(name="gmmseg.demo")
    if bool(args.config_file) == bool(args.exported):
        raise SystemExit(
            "tools/demo.py: give either --config-file (with --opts MODEL.WEIGHTS ...) or --exported FILE"
        )
    paths = expand_inputs(args.input)
    if args.exported:
        predictor, metadata = exported_predictor(args.exported)
    else:
        (predictor, cfg), metadata = config_predictor(args), None
    os.makedirs(args.output, exist_ok=True)
    written = []
    for path in tqdm.tqdm(paths, desc="demo", unit="image", disable=None):
        image_bgr = read_image(path, format="BGR")
        pred = predictor(image_bgr)
        maps = maps_from_predictions(pred)
        if metadata is None:
            metadata = class_metadata(cfg, int(pred["sem_seg"].shape[0]))
        out = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".png")
        written.append(
            render(image_bgr[:, :, ::-1], maps, metadata, out, title=os.path.basename(path))
        )
    logger.info(f"wrote {len(written)} image(s) to {os.path.abspath(args.output)}")
    return written


if __name__ == "__main__":
    main(get_parser().parse_args(sys.argv[1:]))
