"""Datasets (built-in demo data, CamVid, COCO-Stuff, anomaly benchmarks, your own folder), the
checked semantic-segmentation mapper and the class-balanced sampler.

Every dataset module registers its names through one helper, `catalog.register_dataset`, and
reads the datasets root through one function, `common.datasets_root` ($DETECTRON2_DATASETS, else
./datasets). Importing this package registers the project's datasets once, with
`register_all_datasets()`: lazily (nothing is read or generated until DatasetCatalog.get is
called; DETECTRON2_DATASETS is read at that time, COCO-Stuff's at registration). Files are
written by the preparation tools (tools/prepare_*.py, shared parts in preparation.py), never by a
loader; the one exception is the synthetic demo dataset, generated on first use.
"""

from typing import List, Optional

from . import builtin
from .anomaly_datasets import register_anomaly_datasets
from .augmentation import build_sem_seg_augmentation
from .camvid import register_camvid
from .catalog import register_dataset, semantic_segmentation_datasets, unregister_datasets
from .coco_stuff import register_coco_stuff
from .common import datasets_root
from .demo import generate_demo_dataset, register_demo_datasets
from .folder_dataset import register_folder_dataset, setup_folder_dataset
from .mapper import SemSegDatasetMapper, make_sem_seg_loading_fn
from .sampler import ClassBalancedSampler, build_class_balanced_sampler

__all__ = [
    "register_all_datasets",
    "register_dataset",
    "unregister_datasets",
    "semantic_segmentation_datasets",
    "datasets_root",
    "register_demo_datasets",
    "generate_demo_dataset",
    "register_camvid",
    "register_coco_stuff",
    "register_anomaly_datasets",
    "register_folder_dataset",
    "setup_folder_dataset",
    "SemSegDatasetMapper",
    "build_sem_seg_augmentation",
    "make_sem_seg_loading_fn",
    "ClassBalancedSampler",
    "build_class_balanced_sampler",
]


def register_all_datasets(root: Optional[str] = None) -> List[str]:
    """(Re-)register every dataset of the project under `root` (None: $DETECTRON2_DATASETS).

    In this order: the demo (gmmseg_demo_*), CamVid (camvid_*, camvid_openset_*), the anomaly
    benchmarks, COCO-Stuff, then ADE20K and Cityscapes (with detectron2's own loaders). A dataset given in the config (DATASETS.FOLDER) or by a
    `--register` module is registered by tools/train_net.py instead. Returns the names.
    """
    return (
        register_demo_datasets(root)
        + register_camvid(root)
        + register_anomaly_datasets(root)
        + register_coco_stuff(root)
        + builtin.register_builtin_sem_seg(root)
    )


register_all_datasets()
