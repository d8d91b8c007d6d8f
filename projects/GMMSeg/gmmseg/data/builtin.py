"""ADE20K and Cityscapes: detectron2's own registrations, re-rootable.

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
offers `register_ade20k(root)` / `register_cityscapes(root)` to register the same names again
under a root (tests, or a root chosen after import), and `register_builtin_sem_seg(root)`, which
gmmseg.data.register_all_datasets calls, so that these names take their root from the same
lookup as every other dataset of the project (and exist in a detectron2 build without its
builtin registrations). It also declares the official split sizes for the dataset check.
"""

from typing import List, Optional

from .catalog import declare_official_sizes, unregister_datasets
from .common import datasets_root

__all__ = [
    "ADE20K_SEM_SEG_NAMES",
    "CITYSCAPES_SEM_SEG_NAMES",
    "register_ade20k",
    "register_cityscapes",
    "register_builtin_sem_seg",
    "ADE20K_CITYSCAPES_SPLIT_SIZES",
]

ADE20K_SEM_SEG_NAMES = ("ade20k_sem_seg_train", "ade20k_sem_seg_val")
CITYSCAPES_SEM_SEG_NAMES = tuple(f"cityscapes_fine_sem_seg_{s}" for s in ("train", "val", "test"))
# detectron2's register_all_cityscapes also registers the instance-segmentation twins
_CITYSCAPES_ALL_NAMES = CITYSCAPES_SEM_SEG_NAMES + tuple(
    f"cityscapes_fine_instance_seg_{s}" for s in ("train", "val", "test")
)
#: images of each official split
ADE20K_CITYSCAPES_SPLIT_SIZES = {
    "ade20k_sem_seg_train": 20210,
    "ade20k_sem_seg_val": 2000,
    "cityscapes_fine_sem_seg_train": 2975,
    "cityscapes_fine_sem_seg_val": 500,
    "cityscapes_fine_sem_seg_test": 1525,
}


def register_ade20k(root: Optional[str] = None) -> List[str]:
    """(Re-)register ade20k_sem_seg_{train,val} with detectron2's own loader under `root`.

    root: the datasets folder (default: $DETECTRON2_DATASETS, else ./datasets).
    Returns the registered names.
    """
    from detectron2.data.datasets.builtin import register_all_ade20k

    unregister_datasets(ADE20K_SEM_SEG_NAMES)
    register_all_ade20k(datasets_root(root))
    return list(ADE20K_SEM_SEG_NAMES)


def register_cityscapes(root: Optional[str] = None) -> List[str]:
    """(Re-)register the Cityscapes fine splits with detectron2's own loader under `root`.

    detectron2 registers the semantic and the instance splits together, so both are replaced.
    Returns the semantic-segmentation names.
    """
    from detectron2.data.datasets.builtin import register_all_cityscapes

    unregister_datasets(_CITYSCAPES_ALL_NAMES)
    register_all_cityscapes(datasets_root(root))
    return list(CITYSCAPES_SEM_SEG_NAMES)


def register_builtin_sem_seg(root: Optional[str] = None) -> List[str]:
    """ADE20K and Cityscapes registered (again) with detectron2's loaders under `root` (None:
    $DETECTRON2_DATASETS, else ./datasets, read now), their official sizes declared. Returns the
    semantic-segmentation names."""
    declare_official_sizes(ADE20K_CITYSCAPES_SPLIT_SIZES)
    return register_ade20k(root) + register_cityscapes(root)
