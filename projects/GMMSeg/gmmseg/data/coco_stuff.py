"""COCO-Stuff (171 classes) for semantic segmentation: class table, id mapping, registration.

COCO-Stuff labels every pixel with one of 182 ids: 1-91 are COCO "things" (of which 11 ids are
never used: 12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91) and 92-182 are "stuff". The benchmark
uses the 171 used ids, renumbered contiguously in id order: train id 0 = "person" (id 1) ...
79 = "toothbrush" (id 90), 80 = "banner" (id 92) ... 170 = "wood" (id 182). 255 = ignore.

The raw files store the ids differently, so each form has its own lookup table:

* stuffthingmaps PNG (COCO-Stuff-164k, `stuffthingmaps_trainval2017.zip`): pixel = id - 1,
  255 = unlabeled                                          -> `STUFFTHINGMAPS_TO_TRAIN_ID`
* COCO-Stuff-10k `.mat` files (key "S"): pixel = id, 0 = unlabeled   -> `COCO_ID_TO_TRAIN_ID`
* stuff_*.json / instances_*.json (category_id = id)                 -> `COCO_ID_TO_TRAIN_ID`

`tools/prepare_coco_stuff.py` writes the 171-class maps; this module registers the prepared
splits (layouts below; root: argument, else $DETECTRON2_DATASETS, else ./datasets):

    coco_stuff_164k_sem_seg_{train,val}:
        coco/{train2017,val2017}/*.jpg
        coco/stuffthingmaps_detectron2/{train2017,val2017}/*.png      (171-class train ids)
    coco_stuff_10k_sem_seg_{train,test}:
        coco/coco_stuff_10k/images_detectron2/{train,test}/*.jpg
        coco/coco_stuff_10k/annotations_detectron2/{train,test}/*.png (171-class train ids)

These are the layouts of MaskFormer / Mask2Former, so a tree prepared for them works as is.
"""

import colorsys
import os
from functools import partial
from typing import Dict, List, Optional

import numpy as np

from .catalog import register_dataset
from .common import datasets_root, list_image_label_pairs, read_image_size

__all__ = [
    "COCO_STUFF_NUM_CLASSES",
    "COCO_STUFF_CLASSES",
    "COCO_STUFF_COLORS",
    "COCO_STUFF_IDS",
    "COCO_STUFF_UNUSED_IDS",
    "COCO_ID_TO_TRAIN_ID",
    "STUFFTHINGMAPS_TO_TRAIN_ID",
    "COCO_STUFF_SPLITS",
    "COCO_STUFF_SPLIT_SIZES",
    "IGNORE_LABEL",
    "coco_id_lut",
    "load_coco_stuff_split",
    "register_coco_stuff",
]

IGNORE_LABEL = 255
COCO_STUFF_NUM_CLASSES = 171

# COCO thing ids 1..91 that COCO-Stuff never uses.
COCO_STUFF_UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)

_THING_NAMES = [  # the 80 COCO thing classes, in id order (ids 1..90 minus the unused ones)
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
]
_STUFF_NAMES = [  # the 91 stuff classes, ids 92..182 in order
    "banner",
    "blanket",
    "branch",
    "bridge",
    "building-other",
    "bush",
    "cabinet",
    "cage",
    "cardboard",
    "carpet",
    "ceiling-other",
    "ceiling-tile",
    "cloth",
    "clothes",
    "clouds",
    "counter",
    "cupboard",
    "curtain",
    "desk-stuff",
    "dirt",
    "door-stuff",
    "fence",
    "floor-marble",
    "floor-other",
    "floor-stone",
    "floor-tile",
    "floor-wood",
    "flower",
    "fog",
    "food-other",
    "fruit",
    "furniture-other",
    "grass",
    "gravel",
    "ground-other",
    "hill",
    "house",
    "leaves",
    "light",
    "mat",
    "metal",
    "mirror-stuff",
    "moss",
    "mountain",
    "mud",
    "napkin",
    "net",
    "paper",
    "pavement",
    "pillow",
    "plant-other",
    "plastic",
    "platform",
    "playingfield",
    "railing",
    "railroad",
    "river",
    "road",
    "rock",
    "roof",
    "rug",
    "salad",
    "sand",
    "sea",
    "shelf",
    "sky-other",
    "skyscraper",
    "snow",
    "solid-other",
    "stairs",
    "stone",
    "straw",
    "structural-other",
    "table",
    "tent",
    "textile-other",
    "towel",
    "tree",
    "vegetable",
    "wall-brick",
    "wall-concrete",
    "wall-other",
    "wall-panel",
    "wall-stone",
    "wall-tile",
    "wall-wood",
    "water-other",
    "waterdrops",
    "window-blind",
    "window-other",
    "wood",
]

#: The 171 COCO-Stuff ids in use, in train-id order (COCO_STUFF_IDS[train_id] = id).
COCO_STUFF_IDS: List[int] = [i for i in range(1, 183) if i not in COCO_STUFF_UNUSED_IDS]
#: Class names, indexed by train id.
COCO_STUFF_CLASSES: List[str] = _THING_NAMES + _STUFF_NAMES
#: COCO-Stuff id (1..182) -> train id (0..170); unused ids are absent.
COCO_ID_TO_TRAIN_ID: Dict[int, int] = {cid: t for t, cid in enumerate(COCO_STUFF_IDS)}
#: stuffthingmaps pixel value (id - 1) -> train id; 255 (unlabeled) -> 255.
STUFFTHINGMAPS_TO_TRAIN_ID: Dict[int, int] = {cid - 1: t for cid, t in COCO_ID_TO_TRAIN_ID.items()}
STUFFTHINGMAPS_TO_TRAIN_ID[IGNORE_LABEL] = IGNORE_LABEL


def _distinct_colors(n: int) -> List[List[int]]:
    """n visually distinct RGB colours (golden-ratio hue walk, alternating lightness)."""
    colors = []
    for i in range(n):
        hue = (i * 0.618033988749895) % 1.0
        light = (0.45, 0.6, 0.35)[i % 3]
        r, g, b = colorsys.hls_to_rgb(hue, light, 0.75)
        colors.append([int(round(255 * r)), int(round(255 * g)), int(round(255 * b))])
    return colors


#: A colour per train id (RGB), for visualisation only.
COCO_STUFF_COLORS: List[List[int]] = _distinct_colors(COCO_STUFF_NUM_CLASSES)

assert len(_THING_NAMES) == 80 and len(_STUFF_NAMES) == 91
assert len(COCO_STUFF_IDS) == COCO_STUFF_NUM_CLASSES == len(COCO_STUFF_CLASSES)


def coco_id_lut(source: str) -> np.ndarray:
    """A 256-entry uint8 lookup table from a raw COCO-Stuff label value to the train id.

    source: "stuffthingmaps" (pixel = id - 1, 255 unlabeled) or "coco_id" (pixel = id,
    0 unlabeled, as in the COCO-Stuff-10k .mat files). Values that are not a used class map to
    255. Use as `lut[raw_label]` on a uint8 array.
    """
    if source == "stuffthingmaps":
        table = STUFFTHINGMAPS_TO_TRAIN_ID
    elif source == "coco_id":
        table = COCO_ID_TO_TRAIN_ID
    else:
        raise ValueError(
            f"coco_id_lut: source must be 'stuffthingmaps' or 'coco_id', got {source!r}"
        )
    lut = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    for raw, train_id in table.items():
        lut[raw] = train_id
    return lut


# name -> (image folder, label folder), relative to the datasets root
COCO_STUFF_SPLITS = {
    "coco_stuff_164k_sem_seg_train": ("coco/train2017", "coco/stuffthingmaps_detectron2/train2017"),
    "coco_stuff_164k_sem_seg_val": ("coco/val2017", "coco/stuffthingmaps_detectron2/val2017"),
    "coco_stuff_10k_sem_seg_train": (
        "coco/coco_stuff_10k/images_detectron2/train",
        "coco/coco_stuff_10k/annotations_detectron2/train",
    ),
    "coco_stuff_10k_sem_seg_test": (
        "coco/coco_stuff_10k/images_detectron2/test",
        "coco/coco_stuff_10k/annotations_detectron2/test",
    ),
}

#: images of each official split
COCO_STUFF_SPLIT_SIZES = {
    "coco_stuff_164k_sem_seg_train": 118287,
    "coco_stuff_164k_sem_seg_val": 5000,
    "coco_stuff_10k_sem_seg_train": 9000,
    "coco_stuff_10k_sem_seg_test": 1000,
}

_LAYOUT = """\
  <root>/coco/{train2017,val2017}/*.jpg
  <root>/coco/stuffthingmaps_detectron2/{train2017,val2017}/*.png   (COCO-Stuff-164k)
  <root>/coco/coco_stuff_10k/images_detectron2/{train,test}/*.jpg
  <root>/coco/coco_stuff_10k/annotations_detectron2/{train,test}/*.png   (COCO-Stuff-10k)
The label maps (171 train ids, 255 = ignore) are written by tools/prepare_coco_stuff.py;
see datasets/README.md."""


def load_coco_stuff_split(
    name: str, image_dir: str, label_dir: str, read_sizes: bool = False
) -> List[dict]:
    """Dataset dicts (file_name, sem_seg_file_name, image_id[, height, width]) of a split.

    Images and label maps are matched by file stem; a missing folder or an image without its
    label map raises FileNotFoundError naming the files and the expected layout.
    read_sizes: also read height/width from each image header (slower; off by default, the
    mapper reads the image anyway).
    """
    pairs = list_image_label_pairs(
        image_dir,
        label_dir,
        image_exts=(".jpg", ".jpeg", ".png"),
        label_ext=".png",
        dataset_name=name,
        layout=_LAYOUT,
    )
    dicts = []
    for image, label in pairs:
        d = {
            "file_name": image,
            "sem_seg_file_name": label,
            "image_id": os.path.splitext(os.path.basename(image))[0],
        }
        if read_sizes:
            d["height"], d["width"] = read_image_size(image)
        dicts.append(d)
    return dicts


def register_coco_stuff(root: Optional[str] = None) -> List[str]:
    """Register the four COCO-Stuff splits (see COCO_STUFF_SPLITS) under `root`.

    root: the datasets folder (default: $DETECTRON2_DATASETS, else ./datasets), resolved now.
    Lazy: no file is read until DatasetCatalog.get(name). Calling it again replaces the previous
    registration (e.g. with another root). Returns the registered names.
    """
    root = datasets_root(root)
    names = []
    for name, (image_rel, label_rel) in COCO_STUFF_SPLITS.items():
        image_dir, label_dir = os.path.join(root, image_rel), os.path.join(root, label_rel)
        meta = dict(
            stuff_classes=list(COCO_STUFF_CLASSES),
            stuff_colors=[list(c) for c in COCO_STUFF_COLORS],
            stuff_dataset_id_to_contiguous_id=dict(COCO_ID_TO_TRAIN_ID),
            image_root=image_dir,
            sem_seg_root=label_dir,
            evaluator_type="sem_seg",
            ignore_label=IGNORE_LABEL,
        )
        load = partial(load_coco_stuff_split, name, image_dir, label_dir)
        names.append(register_dataset(name, load, meta, official_size=COCO_STUFF_SPLIT_SIZES[name]))
    return names
