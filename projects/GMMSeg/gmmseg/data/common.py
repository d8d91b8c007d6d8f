"""Helpers shared by the dataset registrations: where datasets live and how a split is listed.

A split is a folder of images and a parallel folder of label maps with the same file stems.
A missing or empty split stops with a FileNotFoundError that names the folder, the expected
layout and the DETECTRON2_DATASETS variable, never with an empty dataset.
"""

import os
from typing import List, Optional, Sequence, Tuple

from PIL import Image

__all__ = ["datasets_root", "root_note", "list_image_label_pairs", "read_image_size"]

_MAX_NAMED = 5  # how many offending files an error message names


def datasets_root(root: Optional[str] = None) -> str:
    """The datasets folder: `root` if given, else $DETECTRON2_DATASETS, else "./datasets".

    Read when called (not at import), so a change of the variable after import is honoured.
    """
    if root is None:
        root = os.environ.get("DETECTRON2_DATASETS", "datasets")
    return os.path.expanduser(root)


def root_note(root: Optional[str] = None) -> str:
    """Where the datasets root came from, for error messages."""
    if root is not None:
        return f"the datasets root {root!r} was given explicitly (DETECTRON2_DATASETS is not used)"
    value = os.environ.get("DETECTRON2_DATASETS")
    if value is None:
        return (
            "DETECTRON2_DATASETS is not set, so the datasets root is ./datasets relative to the "
            f"current directory ({os.path.abspath('datasets')!r}); set DETECTRON2_DATASETS to "
            "the folder that contains the dataset"
        )
    return f"DETECTRON2_DATASETS={value!r}; set it to the folder that contains the dataset"


def _missing_split_error(
    what: str, folder: str, dataset_name: str, layout: str, note: Optional[str]
) -> FileNotFoundError:
    return FileNotFoundError(
        f"Dataset '{dataset_name}': {what} {os.path.abspath(folder)!r}. Expected layout:\n"
        f"{layout}\n({note or root_note()}.)"
    )


def list_image_label_pairs(
    image_dir: str,
    label_dir: str,
    *,
    image_exts: Sequence[str],
    label_ext: str = ".png",
    dataset_name: str,
    layout: str,
    note: Optional[str] = None,
) -> List[Tuple[str, str]]:
    """Sorted (image path, label path) pairs matched by file stem.

    Raises FileNotFoundError naming the folder, `layout` and DETECTRON2_DATASETS when the image
    folder is missing or holds no image with one of `image_exts`, when the label folder is
    missing, or when some images have no label (the first few are named). `note` says where
    the root came from (default: root_note()).
    """
    exts = tuple(e.lower() for e in image_exts)
    if not os.path.isdir(image_dir):
        raise _missing_split_error("no image folder", image_dir, dataset_name, layout, note)
    images = sorted(f for f in os.listdir(image_dir) if f.lower().endswith(exts))
    if not images:
        raise _missing_split_error(
            f"no image ({'/'.join(exts)}) in", image_dir, dataset_name, layout, note
        )
    if not os.path.isdir(label_dir):
        raise _missing_split_error("no label folder", label_dir, dataset_name, layout, note)
    pairs, missing = [], []
    for name in images:
        label = os.path.join(label_dir, os.path.splitext(name)[0] + label_ext)
        if not os.path.isfile(label):
            missing.append(label)
        pairs.append((os.path.join(image_dir, name), label))
    if missing:
        shown = ", ".join(repr(m) for m in missing[:_MAX_NAMED])
        more = f" and {len(missing) - _MAX_NAMED} more" if len(missing) > _MAX_NAMED else ""
        raise FileNotFoundError(
            f"Dataset '{dataset_name}': {len(missing)} image(s) in {image_dir!r} have no label map: "
            f"{shown}{more}. Expected layout:\n{layout}"
        )
    return pairs


def read_image_size(path: str) -> Tuple[int, int]:
    """(height, width) of an image file, read from its header only (cheap)."""
    with Image.open(path) as im:
        w, h = im.size
    return h, w
