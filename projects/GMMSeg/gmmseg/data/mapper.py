"""SemSegDatasetMapper: detectron2's DatasetMapper for semantic segmentation, with checked inputs.

On top of what detectron2's DatasetMapper does for "sem_seg_file_name" it
- stops with an error naming the file when an image, label map or anomaly mask is missing,
  cannot be decoded, or does not have the image's size;
- validates label values: anything that is neither a class id in [0, num_classes) nor the ignore
  value raises ValueError naming the file, the bad values and the allowed range;
- applies a label remapping, given per dataset dict ("label_remap": {raw id: new id}, what the
  CamVid open-set registration sets) or for the whole mapper (`label_remap=`);
- in inference mode returns "anomaly_mask" (LongTensor (H, W): 1 anomaly, 0 known, 255 void)
  read from "anomaly_mask_file_name" (converted by "anomaly_mask_convention", see
  gmmseg.data.anomaly_datasets), transformed exactly like the label.

Augmentations come from gmmseg.data.augmentation.build_sem_seg_augmentation(cfg, is_train).

The label-loading functions are public so evaluators and the class-balanced sampler read labels
the same way (`make_sem_seg_loading_fn` is the `sem_seg_loading_fn` for SemSegEvaluator).
"""

import copy
import logging
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from PIL import Image

from .anomaly_datasets import load_anomaly_mask
from .augmentation import build_sem_seg_augmentation

__all__ = [
    "build_sem_seg_test_loader",
    "SemSegDatasetMapper",
    "read_image_checked",
    "read_label_map",
    "remap_and_check_labels",
    "load_sem_seg_label",
    "anomaly_mask_of",
    "make_sem_seg_loading_fn",
]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ reading files
_LABEL_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L", "1")  # single-channel PIL modes


def read_image_checked(file_name: str, format: Optional[str] = None) -> np.ndarray:
    """detectron2's read_image, with an error that names the file when it is missing or corrupt."""
    try:
        return utils.read_image(file_name, format=format)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"image file not found: {file_name!r}") from e
    except Exception as e:  # PIL: UnidentifiedImageError, truncated data, decoder errors
        raise OSError(
            f"cannot read/decode image file {file_name!r}: {type(e).__name__}: {e}"
        ) from e


def read_label_map(file_name: str) -> np.ndarray:
    """A single-channel label map (H, W) as stored: uint8 (L or palette PNG) or a wider int type.

    A colour (RGB) label image is refused rather than converted to grey, which would silently
    produce wrong class ids.
    """
    try:
        with Image.open(file_name) as im:
            mode = im.mode
            arr = np.asarray(im) if mode in _LABEL_MODES else None
    except FileNotFoundError as e:
        raise FileNotFoundError(f"label file not found: {file_name!r}") from e
    except Exception as e:  # PIL: UnidentifiedImageError, truncated data, decoder errors
        raise OSError(
            f"cannot read/decode label file {file_name!r}: {type(e).__name__}: {e}"
        ) from e
    if arr is None:
        raise ValueError(
            f"label map {file_name!r} has PIL mode {mode!r}; expected a single-channel image of "
            f"class ids (mode L, P or I), not a colour-coded label"
        )
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    return arr


def _present_values(label: np.ndarray) -> np.ndarray:
    """Sorted distinct values; a bincount for uint8 (much cheaper than np.unique)."""
    if label.dtype == np.uint8:
        return np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    return np.unique(label)


def remap_and_check_labels(
    label: np.ndarray,
    num_classes: int,
    ignore_label: int = 255,
    remap: Optional[Mapping[int, int]] = None,
    file_name: str = "<array>",
) -> np.ndarray:
    """Apply `remap` ({raw id: new id}, other ids unchanged), then check every value is a class id
    in [0, num_classes) or `ignore_label`. Returns uint8 when the values fit, else int64.

    Raises ValueError naming `file_name`, the offending raw values and the allowed range.
    """
    present = _present_values(label)  # sorted distinct raw values
    mapped = present.astype(np.int64)
    if remap:
        mapped = np.array([int(remap.get(int(v), int(v))) for v in present], np.int64)
    bad = ((mapped < 0) | (mapped >= num_classes)) & (mapped != ignore_label)
    if bad.any():
        after = (
            f" (after the label remapping {dict(remap)}: {mapped[bad].tolist()})" if remap else ""
        )
        raise ValueError(
            f"label file {file_name!r} contains value(s) {present[bad].tolist()}{after} that are "
            f"neither a class id in [0, {num_classes}) nor the ignore value {ignore_label}. Check that "
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES / IGNORE_VALUE match the dataset, and that labels hold "
            f"train ids (not raw dataset ids or colours)."
        )
    if remap and not np.array_equal(mapped, present):
        if label.dtype == np.uint8:
            lut = np.arange(256, dtype=np.int64)
            lut[present] = mapped
            label = lut[label]
        else:
            label = mapped[np.searchsorted(present, label)]
    if mapped.size == 0 or (mapped.min() >= 0 and mapped.max() <= 255):
        return label.astype(np.uint8, copy=False)
    return label.astype(np.int64, copy=False)


def load_sem_seg_label(
    dataset_dict: dict,
    num_classes: int,
    ignore_label: int = 255,
    label_remap: Optional[Mapping[int, int]] = None,
) -> np.ndarray:
    """Read dataset_dict["sem_seg_file_name"], remap (the dict's own "label_remap" wins over
    `label_remap`) and validate. Returns (H, W) uint8 (or int64 for very large ids)."""
    file_name = dataset_dict["sem_seg_file_name"]
    remap = dataset_dict.get("label_remap", label_remap)
    return remap_and_check_labels(
        read_label_map(file_name), num_classes, ignore_label, remap, file_name
    )


def anomaly_mask_of(dataset_dict: dict) -> Optional[np.ndarray]:
    """The (H, W) uint8 anomaly mask of a dataset dict (1 anomaly, 0 known, 255 void), or None
    when the dict has no "anomaly_mask_file_name". The file is converted by the dict's
    "anomaly_mask_convention" (gmmseg.data.anomaly_datasets.ANOMALY_MASK_CONVENTIONS; default
    "ours", i.e. stored as 0/1/255); values the convention does not define raise ValueError
    naming the file."""
    file_name = dataset_dict.get("anomaly_mask_file_name")
    if file_name is None:
        return None
    try:
        return load_anomaly_mask(file_name, dataset_dict.get("anomaly_mask_convention", "ours"))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"anomaly mask file not found: {file_name!r}") from e
    except (ValueError, KeyError):
        raise
    except Exception as e:
        raise OSError(
            f"cannot read/decode anomaly mask {file_name!r}: {type(e).__name__}: {e}"
        ) from e


def make_sem_seg_loading_fn(dataset_name: str) -> Callable[..., np.ndarray]:
    """A `sem_seg_loading_fn(file_name, dtype=int)` for detectron2's SemSegEvaluator that applies
    the dataset's `label_remap` metadata (e.g. camvid_openset_*) and validates the values against
    its stuff_classes and ignore_label."""
    meta = MetadataCatalog.get(dataset_name)
    # without class names the range check is left to the caller (e.g. against the logits' K)
    num_classes = len(meta.stuff_classes) if meta.get("stuff_classes") else 256
    ignore_label = meta.get("ignore_label", 255)
    remap = meta.get("label_remap", None)

    def load(file_name, dtype=int):
        label = remap_and_check_labels(
            read_label_map(file_name), num_classes, ignore_label, remap, file_name
        )
        return np.asarray(label, dtype=dtype)

    return load


# ---------------------------------------------------------------------------------- the mapper
class SemSegDatasetMapper(DatasetMapper):
    """Dataset dict -> {"image": (3, H, W) uint8 tensor, "sem_seg": (H, W) long, "height", "width",
    "file_name", ..., and in inference "anomaly_mask": (H, W) long when the dict describes one}.

    Dict keys understood: file_name, sem_seg_file_name, height/width (checked against the image),
    label_remap, anomaly_mask_file_name, anomaly_mask_convention.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: Sequence[Union[T.Augmentation, T.Transform]],
        image_format: str,
        num_classes: int,
        ignore_label: int = 255,
        label_remap: Optional[Mapping[int, int]] = None,
        load_anomaly_mask: Optional[bool] = None,
    ):
        """
        Args:
            augmentations: applied to image, label and anomaly mask alike.
            image_format: as detectron2's read_image ("RGB", "BGR", ...).
            num_classes, ignore_label: the valid label values are [0, num_classes) and ignore_label.
            label_remap: {raw id: new id} for dicts without their own "label_remap".
            load_anomaly_mask: return "anomaly_mask"; default: in inference mode only.
        """
        super().__init__(is_train, augmentations=list(augmentations), image_format=image_format)
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.label_remap = dict(label_remap) if label_remap else None
        self.load_anomaly_mask = (
            (not is_train) if load_anomaly_mask is None else bool(load_anomaly_mask)
        )

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        names = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
        for name in names:
            classes = MetadataCatalog.get(name).get("stuff_classes", None)
            if classes is not None and len(classes) != num_classes:
                raise ValueError(
                    f"MODEL.SEM_SEG_HEAD.NUM_CLASSES = {num_classes} but dataset '{name}' has "
                    f"{len(classes)} classes ({list(classes)}); set MODEL.SEM_SEG_HEAD.NUM_CLASSES "
                    f"to {len(classes)}"
                )
        return {
            "is_train": is_train,
            "augmentations": build_sem_seg_augmentation(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "num_classes": num_classes,
            "ignore_label": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        }

    def _check_same_size(
        self, image: np.ndarray, other: np.ndarray, what: str, file_name: str, image_name: str
    ):
        if other.shape[:2] != image.shape[:2]:
            raise ValueError(
                f"{what} {file_name!r} has size {other.shape[1]}x{other.shape[0]} (WxH) but its image "
                f"{image_name!r} is {image.shape[1]}x{image.shape[0]}"
            )

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image_name = dataset_dict["file_name"]
        image = read_image_checked(image_name, format=self.image_format)
        utils.check_image_size(dataset_dict, image)

        sem_seg = None
        label_name = dataset_dict.get("sem_seg_file_name")
        if label_name is not None:
            raw_label = read_label_map(label_name)
            self._check_same_size(image, raw_label, "label map", label_name, image_name)
            remap = dataset_dict.get("label_remap", self.label_remap)
            sem_seg = remap_and_check_labels(
                raw_label, self.num_classes, self.ignore_label, remap, label_name
            )
        anomaly = anomaly_mask_of(dataset_dict) if self.load_anomaly_mask else None
        if anomaly is not None:
            self._check_same_size(
                image, anomaly, "anomaly mask", dataset_dict["anomaly_mask_file_name"], image_name
            )
        dataset_dict.pop("sem_seg_file_name", None)

        aug_input = T.AugInput(image, sem_seg=sem_seg)
        transforms = self.augmentations(aug_input)
        image, sem_seg = aug_input.image, aug_input.sem_seg
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg.astype(np.int64))
        if anomaly is not None:
            anomaly = transforms.apply_segmentation(anomaly)
            dataset_dict["anomaly_mask"] = torch.as_tensor(anomaly.astype(np.int64))
        dataset_dict.pop("annotations", None)
        return dataset_dict


def build_sem_seg_test_loader(cfg, dataset_name):
    """detectron2's test loader (batch 1) with SemSegDatasetMapper: the Trainer's test loader."""
    from detectron2.data import build_detection_test_loader

    return build_detection_test_loader(
        cfg, dataset_name, mapper=SemSegDatasetMapper(cfg, is_train=False)
    )
