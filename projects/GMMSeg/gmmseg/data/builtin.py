"""ADE20K and Cityscapes: detectron2's own registrations, checked and re-rootable.

Importing `detectron2.data` registers, with the root $DETECTRON2_DATASETS (else ./datasets):

    ade20k_sem_seg_{train,val}              150 classes, evaluator_type "sem_seg", ignore 255
        ADEChallengeData2016/images/{training,validation}/*.jpg
        ADEChallengeData2016/annotations_detectron2/{training,validation}/*.png
          (label - 1, 0 -> 255; written by tools/prepare_ade20k.py)
    cityscapes_fine_sem_seg_{train,val,test}   19 train ids, evaluator_type "cityscapes_sem_seg",
                                               ignore 255
        cityscapes/leftImg8bit/{train,val,test}/<city>/*_leftImg8bit.png
        cityscapes/gtFine/{train,val,test}/<city>/*_gtFine_{labelTrainIds.png,polygons.json, ...}
          (labelTrainIds written by tools/prepare_cityscapes.py)

Both give dicts with "file_name" and "sem_seg_file_name" (Cityscapes adds height/width) and
metadata with `stuff_classes` and `ignore_label=255`, which is all the semantic-segmentation
mapper and detectron2's SemSegEvaluator need. Note that detectron2 gives the Cityscapes splits
evaluator_type "cityscapes_sem_seg" (CityscapesSemSegEvaluator, which needs cityscapesscripts);
SemSegEvaluator gives the same 19-class mIoU from the labelTrainIds maps.

Nothing is missing from detectron2 for these two datasets, so this module adds no dataset; it
only offers `register_ade20k(root)` / `register_cityscapes(root)` to register the same names
again under another root (tests, or a root chosen after import), and registers a name itself
only if detectron2 did not (a detectron2 build without its builtin registrations).
"""

import logging
from typing import List, Optional

from .common import datasets_root

__all__ = [
    "ADE20K_SEM_SEG_NAMES",
    "CITYSCAPES_SEM_SEG_NAMES",
    "register_ade20k",
    "register_cityscapes",
    "missing_builtin_sem_seg_datasets",
    "ensure_builtin_sem_seg_datasets",
]

logger = logging.getLogger(__name__)

ADE20K_SEM_SEG_NAMES = ("ade20k_sem_seg_train", "ade20k_sem_seg_val")
CITYSCAPES_SEM_SEG_NAMES = tuple(f"cityscapes_fine_sem_seg_{s}" for s in ("train", "val", "test"))
# detectron2's register_all_cityscapes also registers the instance-segmentation twins
_CITYSCAPES_ALL_NAMES = CITYSCAPES_SEM_SEG_NAMES + tuple(
    f"cityscapes_fine_instance_seg_{s}" for s in ("train", "val", "test")
)


def _unregister(names) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for name in names:
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)


def register_ade20k(root: Optional[str] = None) -> List[str]:
    """(Re-)register ade20k_sem_seg_{train,val} with detectron2's own loader under `root`.

    root: the datasets folder (default: $DETECTRON2_DATASETS, else ./datasets).
    Returns the registered names.
    """
    from detectron2.data.datasets.builtin import register_all_ade20k

    _unregister(ADE20K_SEM_SEG_NAMES)
    register_all_ade20k(datasets_root(root))
    return list(ADE20K_SEM_SEG_NAMES)


def register_cityscapes(root: Optional[str] = None) -> List[str]:
    """(Re-)register the Cityscapes fine splits with detectron2's own loader under `root`.

    detectron2 registers the semantic and the instance splits together, so both are replaced.
    Returns the semantic-segmentation names.
    """
    from detectron2.data.datasets.builtin import register_all_cityscapes

    _unregister(_CITYSCAPES_ALL_NAMES)
    register_all_cityscapes(datasets_root(root))
    return list(CITYSCAPES_SEM_SEG_NAMES)


def missing_builtin_sem_seg_datasets() -> List[str]:
    """The ADE20K / Cityscapes semantic-segmentation names not in DatasetCatalog."""
    from detectron2.data import DatasetCatalog

    registered = set(DatasetCatalog.list())
    return [n for n in ADE20K_SEM_SEG_NAMES + CITYSCAPES_SEM_SEG_NAMES if n not in registered]


def ensure_builtin_sem_seg_datasets(root: Optional[str] = None) -> List[str]:
    """Register ADE20K / Cityscapes only where detectron2 has not; returns what was added."""
    missing = missing_builtin_sem_seg_datasets()
    added = []
    if any(n in ADE20K_SEM_SEG_NAMES for n in missing):
        added += register_ade20k(root)
    if any(n in CITYSCAPES_SEM_SEG_NAMES for n in missing):
        added += register_cityscapes(root)
    if added:
        logger.info("registered detectron2's builtin datasets missing from this build: %s", added)
    return added


# Importing the module fills in whatever this detectron2 build did not register.
ensure_builtin_sem_seg_datasets()
