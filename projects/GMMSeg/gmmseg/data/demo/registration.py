"""gmmseg_demo_{train,val,anomaly,near} in detectron2's catalogs (generated on first use)."""

import os
from functools import partial
from typing import List, Mapping, Optional

from ..catalog import register_dataset
from ..common import list_image_label_pairs, root_note
from .files import generate_demo_dataset
from .scene import ANOMALY_SPLITS, DEMO_CLASSES, DEMO_COLORS, DEMO_SPLITS, HEIGHT, IGNORE, WIDTH

__all__ = ["load_demo_split", "register_demo_datasets"]

_LAYOUT = (
    "  $DETECTRON2_DATASETS/gmmseg_demo/{train,val,anomaly,near}/images/NNNN.png\n"
    "  $DETECTRON2_DATASETS/gmmseg_demo/{train,val,anomaly,near}/labels/NNNN.png\n"
    "  $DETECTRON2_DATASETS/gmmseg_demo/{anomaly,near}/anomaly_masks/NNNN.png\n"
    "  (written by gmmseg.data.demo.generate_demo_dataset)"
)


def load_demo_split(
    split: str, root: Optional[str] = None, seed: int = 0, sizes: Optional[Mapping[str, int]] = None
) -> List[dict]:
    """Dataset dicts of a demo split, generating the dataset first if needed.

    Each dict: file_name, sem_seg_file_name, height, width, image_id; the anomaly splits (far
    "anomaly", near "near") add anomaly_mask_file_name.
    """
    if split not in DEMO_SPLITS:
        raise KeyError(f"unknown demo split {split!r}; the splits are {DEMO_SPLITS}")
    folder = generate_demo_dataset(root, seed, sizes)
    base = os.path.join(folder, split)
    pairs = list_image_label_pairs(
        os.path.join(base, "images"),
        os.path.join(base, "labels"),
        image_exts=(".png",),
        dataset_name=f"gmmseg_demo_{split}",
        layout=_LAYOUT,
        note=root_note(root),
    )
    dicts = []
    for image, label in pairs:
        stem = os.path.splitext(os.path.basename(image))[0]
        d = {
            "file_name": image,
            "sem_seg_file_name": label,
            "height": HEIGHT,
            "width": WIDTH,
            "image_id": f"{split}_{stem}",
        }
        if split in ANOMALY_SPLITS:
            d["anomaly_mask_file_name"] = os.path.join(base, "anomaly_masks", stem + ".png")
        dicts.append(d)
    return dicts


def register_demo_datasets(
    root: Optional[str] = None, seed: int = 0, sizes: Optional[Mapping[str, int]] = None
) -> List[str]:
    """Register gmmseg_demo_{train,val,anomaly,near} in DatasetCatalog / MetadataCatalog.

    Lazy: nothing is generated or read until DatasetCatalog.get(name) is called. Calling it
    again (e.g. with the seed of cfg.INPUT.DEMO.SEED) replaces the previous registration.
    Returns the registered names.
    """
    names = []
    for split in DEMO_SPLITS:
        meta = dict(
            stuff_classes=list(DEMO_CLASSES),
            stuff_colors=[list(c) for c in DEMO_COLORS],
            ignore_label=IGNORE,
            evaluator_type="sem_seg",
            has_anomaly_masks=split in ANOMALY_SPLITS,
        )
        names.append(
            register_dataset(
                f"gmmseg_demo_{split}", partial(load_demo_split, split, root, seed, sizes), meta
            )
        )
    return names
