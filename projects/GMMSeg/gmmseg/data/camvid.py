"""CamVid (11-class SegNet protocol) and its open-set variant, registered in detectron2's catalogs.

Layout (root: argument, else $DETECTRON2_DATASETS, else ./datasets), label maps with the same
stem as their image:

    <root>/camvid/{train,val,test}/images/*.jpg     (.png also accepted)
    <root>/camvid/{train,val,test}/labels/*.png     uint8: 0..10 as CAMVID_CLASSES, 255 = void

Closed set: camvid_train, camvid_val, camvid_test (11 classes).

Open set (the anomaly benchmark: pedestrian and bicyclist are never seen in training):
camvid_openset_train, camvid_openset_val, camvid_openset_test. They read the same files; their
9 known classes keep their CamVid ids 0..8 (sky .. car), which are already contiguous because the
two withheld classes are the last ids, so no renumbering is needed and a known pixel has the same
id in both variants. The dataset dicts carry "label_remap" {9: 255, 10: 255}, which
SemSegDatasetMapper applies when reading the label (pedestrian and bicyclist become void, so
training never sees them); the metadata holds the same label_remap for SemSegEvaluator (see
mapper.make_sem_seg_loading_fn). The val/test dicts also name the label file as their
"anomaly_mask_file_name" with "anomaly_mask_convention" = "camvid_openset", a rule registered
here in anomaly_datasets.ANOMALY_MASK_CONVENTIONS: raw 9, 10 -> 1 (anomaly), 0..8 -> 0 (known),
255 -> 255 (void). The mask is derived from the label when read; nothing is written to disk.

Registration is lazy: folders are listed when DatasetCatalog.get(name) is called, and a missing or
empty split raises FileNotFoundError naming the expected layout and DETECTRON2_DATASETS.
"""

import os
from functools import partial
from typing import List, Optional

import numpy as np

from .anomaly_datasets import ANOMALY_MASK_CONVENTIONS
from .catalog import register_dataset
from .common import datasets_root, list_image_label_pairs, read_image_size, root_note

__all__ = [
    "CAMVID_CLASSES",
    "CAMVID_COLORS",
    "CAMVID_OPENSET_CLASSES",
    "CAMVID_UNKNOWN_IDS",
    "CAMVID_OPENSET_LABEL_REMAP",
    "CAMVID_ANOMALY_CONVENTION",
    "CAMVID_SPLIT_SIZES",
    "load_camvid_split",
    "register_camvid",
]

CAMVID_CLASSES = (
    "sky",
    "building",
    "pole",
    "road",
    "sidewalk",
    "tree",
    "sign",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
)
# The colours of the SegNet CamVid release, by class.
CAMVID_COLORS = [
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
]
CAMVID_UNKNOWN_IDS = (9, 10)  # pedestrian, bicyclist: withheld in the open-set variant
CAMVID_OPENSET_CLASSES = CAMVID_CLASSES[:9]
CAMVID_OPENSET_LABEL_REMAP = {i: 255 for i in CAMVID_UNKNOWN_IDS}
CAMVID_ANOMALY_CONVENTION = "camvid_openset"
CAMVID_SPLITS = ("train", "val", "test")
CAMVID_SPLIT_SIZES = {"train": 367, "val": 101, "test": 233}  # images of the SegNet release
IGNORE = 255

_LAYOUT = (
    "  $DETECTRON2_DATASETS/camvid/{train,val,test}/images/<name>.jpg\n"
    "  $DETECTRON2_DATASETS/camvid/{train,val,test}/labels/<name>.png  (uint8 ids 0..10, 255 void)"
)


def _anomaly_lut():
    lut = np.full(256, -1, np.int16)  # -1: a value that must not occur
    lut[: len(CAMVID_CLASSES)] = 0
    lut[list(CAMVID_UNKNOWN_IDS)] = 1
    lut[IGNORE] = 255
    return lut


ANOMALY_MASK_CONVENTIONS.setdefault(CAMVID_ANOMALY_CONVENTION, _anomaly_lut())


def load_camvid_split(split: str, root: Optional[str] = None, openset: bool = False) -> List[dict]:
    """Dataset dicts of one CamVid split: file_name, sem_seg_file_name, height, width, image_id;
    with `openset`, also label_remap and (not for train) anomaly_mask_file_name and
    anomaly_mask_convention, as the module docstring says."""
    if split not in CAMVID_SPLITS:
        raise KeyError(f"unknown CamVid split {split!r}; the splits are {CAMVID_SPLITS}")
    base = os.path.join(datasets_root(root), "camvid", split)
    name = f"camvid_{'openset_' if openset else ''}{split}"
    pairs = list_image_label_pairs(
        os.path.join(base, "images"),
        os.path.join(base, "labels"),
        image_exts=(".jpg", ".jpeg", ".png"),
        dataset_name=name,
        layout=_LAYOUT,
        note=root_note(root),
    )
    dicts = []
    for image, label in pairs:
        h, w = read_image_size(image)
        d = {
            "file_name": image,
            "sem_seg_file_name": label,
            "height": h,
            "width": w,
            "image_id": os.path.splitext(os.path.basename(image))[0],
        }
        if openset:
            d["label_remap"] = dict(CAMVID_OPENSET_LABEL_REMAP)
            if split != "train":
                d["anomaly_mask_file_name"] = label
                d["anomaly_mask_convention"] = CAMVID_ANOMALY_CONVENTION
        dicts.append(d)
    return dicts


def register_camvid(root: Optional[str] = None) -> List[str]:
    """Register camvid_{train,val,test} and camvid_openset_{train,val,test}. Lazy; calling it
    again (e.g. with another root) replaces the previous registration. Returns the names."""
    names = []
    for openset in (False, True):
        for split in CAMVID_SPLITS:
            meta = dict(
                stuff_classes=list(CAMVID_CLASSES),
                stuff_colors=[list(c) for c in CAMVID_COLORS],
                ignore_label=IGNORE,
                evaluator_type="sem_seg",
            )
            if openset:
                meta.update(
                    stuff_classes=list(CAMVID_OPENSET_CLASSES),
                    stuff_colors=meta["stuff_colors"][:9],
                    label_remap=dict(CAMVID_OPENSET_LABEL_REMAP),
                    unknown_classes=[CAMVID_CLASSES[i] for i in CAMVID_UNKNOWN_IDS],
                    has_anomaly_masks=(split != "train"),
                    anomaly_mask_convention=CAMVID_ANOMALY_CONVENTION,
                )
            name = f"camvid_{'openset_' if openset else ''}{split}"
            load = partial(load_camvid_split, split, root, openset)
            names.append(
                register_dataset(name, load, meta, official_size=CAMVID_SPLIT_SIZES[split])
            )
    return names
