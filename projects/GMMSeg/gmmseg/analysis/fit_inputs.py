"""What the offline fits of a trained model share (tools/fit_temperature.py, tools/fit_scores.py):
their command line, the labelled split they fit on (never an evaluated one), and the random images
and labelled pixels they read from it.

A fit reads known pixels of a training split only: a split in DATASETS.TEST is refused (a constant
fitted where it is measured would make the measurement optimistic), and so is a split without
semantic labels. Each message starts with the tool's name.
"""

import argparse
import random
from typing import Dict, List, Tuple

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader

from ..data.mapper import SemSegDatasetMapper

__all__ = [
    "fit_argument_parser",
    "check_sample_counts",
    "fit_split",
    "sampled_images",
    "labelled_pixels",
]


def fit_argument_parser(
    description: str, dataset_help: str, output_help: str, output_required: bool
):
    """The options every offline fit takes: --config-file, --dataset, --images, --pixels, --seed,
    --output, --register and the config overrides (MODEL.WEIGHTS: the trained model). A tool adds
    its own options to the parser it gets."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--config-file", required=True, metavar="FILE")
    ap.add_argument("--dataset", help=dataset_help)
    ap.add_argument(
        "--images",
        type=int,
        default=100,
        help="images drawn at random from the dataset (default 100)",
    )
    ap.add_argument(
        "--pixels",
        type=int,
        default=2000,
        help="labelled pixels drawn at random per image (default 2000)",
    )
    ap.add_argument(
        "--seed", type=int, default=0, help="seed of the image and pixel draws (default 0)"
    )
    ap.add_argument("--output", required=output_required, metavar="FILE", help=output_help)
    ap.add_argument(
        "--register",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE (dotted name or .py file) first: your DatasetCatalog registrations",
    )
    ap.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs (MODEL.WEIGHTS: the model)"
    )
    return ap


def check_sample_counts(tool: str, images: int, pixels: int) -> None:
    """SystemExit unless --images and --pixels are >= 1."""
    if images < 1 or pixels < 1:
        raise SystemExit(f"{tool}: --images and --pixels must be >= 1, got {images} and {pixels}")


def fit_split(
    cfg, dataset, tool: str, refuse_anomaly_masks: bool = False
) -> Tuple[str, Dict[str, str]]:
    """(the dataset to fit on, {image file: its semantic label file}): `dataset`, or the config's
    first training set when it is None. SystemExit naming the dataset when it is evaluated on
    (DATASETS.TEST), has no semantic ground truth, or (`refuse_anomaly_masks`) has anomaly masks."""
    if not dataset and not cfg.DATASETS.TRAIN:
        raise SystemExit(
            f"{tool}: DATASETS.TRAIN is empty; name a labelled training split with --dataset"
        )
    dataset = dataset or cfg.DATASETS.TRAIN[0]
    if dataset in cfg.DATASETS.TEST:
        raise SystemExit(
            f"{tool}: dataset {dataset!r} is in DATASETS.TEST {list(cfg.DATASETS.TEST)}; fit on a training "
            "(or held-out) split, not on the split you evaluate on"
        )
    dicts = DatasetCatalog.get(dataset)
    if refuse_anomaly_masks:
        meta = MetadataCatalog.get(dataset)
        if (
            meta.get("anomaly_eval", False)
            or meta.get("has_anomaly_masks", False)
            or any("anomaly_mask_file_name" in d for d in dicts)
        ):
            raise SystemExit(
                f"{tool}: dataset {dataset!r} has anomaly masks; this fit reads known pixels of a "
                "training split only (no anomaly may enter the fit)"
            )
    files = {d["file_name"]: d["sem_seg_file_name"] for d in dicts if "sem_seg_file_name" in d}
    if not files:
        raise SystemExit(
            f"{tool}: dataset {dataset!r} has no semantic ground truth ('sem_seg_file_name' in none of "
            "its dicts); give a labelled one with --dataset"
        )
    return dataset, files


def sampled_images(
    cfg, dataset: str, label_files: Dict[str, str], num_images: int, seed: int
) -> Tuple[object, List]:
    """(test loader, its dataset dicts): `num_images` labelled images of `dataset` drawn at random
    with `seed` (spread over the split), at test-time size, one per batch."""
    dicts = [d for d in DatasetCatalog.get(dataset) if d["file_name"] in label_files]
    dicts = random.Random(seed).sample(dicts, min(num_images, len(dicts)))
    loader = build_detection_test_loader(
        dataset=dicts,
        mapper=SemSegDatasetMapper(cfg, is_train=False),
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
    return loader, dicts


def labelled_pixels(
    labels: torch.Tensor, ignore: int, count: int, generator: torch.Generator
) -> torch.Tensor:
    """Indices of at most `count` pixels of the flat `labels` (P,) that are not `ignore`, drawn at
    random without repetition; empty when none is labelled."""
    labelled = (labels != ignore).nonzero().squeeze(1)
    return labelled[torch.randperm(labelled.numel(), generator=generator)[:count]]
