"""Your own semantic-segmentation data as a folder, declared in the config (DATASETS.FOLDER.*).

Layout (label maps have the stem of their image):

    <ROOT>/classes.txt                     one class name per line, in id order (or DATASETS.FOLDER.CLASSES)
    <ROOT>/<split>/images/<name>.jpg       (.jpeg / .png accepted: DATASETS.FOLDER.IMAGE_EXTENSIONS)
    <ROOT>/<split>/labels/<name>.png       single channel: class ids 0..K-1, IGNORE_LABEL = void

Every split in DATASETS.FOLDER.SPLITS is registered as "<NAME>_<split>" with the metadata the
trainer and detectron2's SemSegEvaluator need (stuff_classes, ignore_label, evaluator_type). An
ignore value other than 255 is mapped to 255 when a label is read (a "label_remap", as the CamVid
open-set registration uses), so MODEL.SEM_SEG_HEAD.IGNORE_VALUE stays 255.

`setup_folder_dataset(cfg)` does the registration; tools/train_net.py calls it in every process
(also in the workers spawned by --num-gpus), so nothing needs to be registered by hand. With
MODEL.SEM_SEG_HEAD.NUM_CLASSES 0 it sets the count from the class names. Listing the files is
lazy (at DatasetCatalog.get); a missing folder or label stops with an error naming the path.
"""

import os
from functools import partial
from typing import List, Sequence

from .catalog import register_dataset
from .common import list_image_label_pairs, read_image_size

__all__ = ["read_class_names", "register_folder_dataset", "setup_folder_dataset"]

IGNORE = 255  # the ignore value after reading (MODEL.SEM_SEG_HEAD.IGNORE_VALUE)
_LAYOUT = (
    "  <ROOT>/<split>/images/<name>.jpg|.jpeg|.png\n"
    "  <ROOT>/<split>/labels/<name>.png   (class ids 0..K-1, DATASETS.FOLDER.IGNORE_LABEL = void)"
)


def read_class_names(root: str) -> List[str]:
    """The class names of <root>/classes.txt: one per line, in id order; blank lines are skipped."""
    path = os.path.join(root, "classes.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"DATASETS.FOLDER.CLASSES is empty and {os.path.abspath(path)!r} does not exist: give the class "
            f"names in id order, in that file (one per line) or as DATASETS.FOLDER.CLASSES \"('a', 'b')\""
        )
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    if not names:
        raise ValueError(f"{os.path.abspath(path)!r} holds no class name")
    return names


def _load_split(
    name: str, split_dir: str, image_extensions: Sequence[str], label_remap
) -> List[dict]:
    pairs = list_image_label_pairs(
        os.path.join(split_dir, "images"),
        os.path.join(split_dir, "labels"),
        image_exts=image_extensions,
        dataset_name=name,
        layout=_LAYOUT,
        note=f"DATASETS.FOLDER.ROOT is {os.path.dirname(split_dir)!r}",
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
        if label_remap:
            d["label_remap"] = dict(label_remap)
        dicts.append(d)
    return dicts


def register_folder_dataset(
    name: str,
    root: str,
    classes: Sequence[str],
    *,
    splits=("train", "val"),
    ignore_label: int = IGNORE,
    image_extensions=(".jpg", ".jpeg", ".png"),
) -> List[str]:
    """Register "<name>_<split>" for every split of `root` (layout in the module docstring).
    Registering the same names again replaces them. Returns the registered names."""
    classes = [str(c) for c in classes]
    if len(set(classes)) != len(classes):
        raise ValueError(f"dataset '{name}': the class names are not unique: {classes}")
    ignore_label = int(ignore_label)
    if 0 <= ignore_label < len(classes):
        raise ValueError(
            f"DATASETS.FOLDER.IGNORE_LABEL {ignore_label} is the id of class "
            f"{classes[ignore_label]!r}; the ignore value must not be a class id 0..{len(classes) - 1}"
        )
    label_remap = {ignore_label: IGNORE} if ignore_label != IGNORE else None
    root = os.path.abspath(os.path.expanduser(root))
    names = []
    for split in splits:
        split_name = f"{name}_{split}"
        split_dir = os.path.join(root, split)
        meta = dict(
            stuff_classes=list(classes),
            ignore_label=IGNORE,
            evaluator_type="sem_seg",
            dataset_root=root,
        )
        if label_remap:
            meta["label_remap"] = dict(label_remap)  # read by the evaluator's label loading
        load = partial(_load_split, split_name, split_dir, tuple(image_extensions), label_remap)
        names.append(register_dataset(split_name, load, meta))
    return names


def setup_folder_dataset(cfg) -> List[str]:
    """Register the dataset of cfg.DATASETS.FOLDER (nothing when NAME is empty) and, when
    MODEL.SEM_SEG_HEAD.NUM_CLASSES is 0, set it to the number of classes (cfg must not be frozen
    then). Returns the registered names."""
    folder = cfg.DATASETS.FOLDER
    if not folder.NAME:
        if cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 0:
            raise ValueError(
                "MODEL.SEM_SEG_HEAD.NUM_CLASSES is 0 (take it from the dataset) but no dataset is "
                "declared in DATASETS.FOLDER (NAME is empty): set NUM_CLASSES or DATASETS.FOLDER.*"
            )
        return []
    if not folder.ROOT:
        raise ValueError(
            f"DATASETS.FOLDER.NAME is {folder.NAME!r} but DATASETS.FOLDER.ROOT is empty: set it to the "
            f"folder that holds <split>/images and <split>/labels, e.g. DATASETS.FOLDER.ROOT /data/mine"
        )
    if not os.path.isdir(folder.ROOT):
        raise FileNotFoundError(
            f"DATASETS.FOLDER.ROOT {os.path.abspath(folder.ROOT)!r} is not a folder. Expected layout:\n{_LAYOUT}"
        )
    classes = list(folder.CLASSES) or read_class_names(folder.ROOT)
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    if num_classes == 0:
        cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = len(classes)
    elif num_classes != len(classes):
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {num_classes} but dataset '{folder.NAME}' "
            f"({folder.ROOT}) has {len(classes)} classes {classes}: set it to {len(classes)}, or to 0 "
            f"to take the count from the dataset"
        )
    return register_folder_dataset(
        folder.NAME,
        folder.ROOT,
        classes,
        splits=tuple(folder.SPLITS),
        ignore_label=folder.IGNORE_LABEL,
        image_extensions=tuple(folder.IMAGE_EXTENSIONS),
    )
