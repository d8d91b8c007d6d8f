"""Datasets (built-in demo data, CamVid), the checked semantic-segmentation mapper and the
class-balanced sampler. Importing this package registers the datasets (lazily: nothing is read or
generated until DatasetCatalog.get is called; DETECTRON2_DATASETS is read at that time)."""

from . import builtin, coco_stuff  # noqa: F401  (ADE20K / Cityscapes check, COCO-Stuff registration)
from .anomaly_datasets import register_anomaly_datasets
from .augmentation import build_sem_seg_augmentation
from .camvid import register_camvid
from .demo import generate_demo_dataset, register_demo_datasets
from .folder_dataset import register_folder_dataset, setup_folder_dataset
from .mapper import SemSegDatasetMapper, make_sem_seg_loading_fn
from .sampler import ClassBalancedSampler, build_class_balanced_sampler

__all__ = [
    "register_demo_datasets",
    "generate_demo_dataset",
    "register_camvid",
    "register_anomaly_datasets",
    "register_folder_dataset",
    "setup_folder_dataset",
    "SemSegDatasetMapper",
    "build_sem_seg_augmentation",
    "make_sem_seg_loading_fn",
    "ClassBalancedSampler",
    "build_class_balanced_sampler",
]

register_demo_datasets()
register_camvid()
register_anomaly_datasets()
