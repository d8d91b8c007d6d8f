"""Semantic-segmentation augmentation as in the paper (MMSegmentation recipes), for detectron2.

Training pipeline, in this order (each step optional, selected by config keys):

    1. resize     INPUT.AUG.RESIZE = "ratio_range": base scale (long, short) = INPUT.AUG.BASE_SCALE
                  times r ~ U(INPUT.AUG.RATIO_RANGE), aspect ratio kept (the paper: 0.5-2.0 of
                  2048x512 for ADE20K / COCO-Stuff, of 2048x1024 for Cityscapes);
                  "shortest_edge": detectron2's ResizeShortestEdge(INPUT.MIN_SIZE_TRAIN,
                  INPUT.MAX_SIZE_TRAIN, INPUT.MIN_SIZE_TRAIN_SAMPLING) (the default: detectron2's
                  own behaviour, Mask2Former's recipe); "none".
    2. crop       INPUT.CROP.{ENABLED, TYPE, SIZE, SINGLE_CATEGORY_MAX_AREA}: detectron2's
                  RandomCrop_CategoryAreaConstraint; the ignore label (MODEL.SEM_SEG_HEAD.
                  IGNORE_VALUE) does not count towards the area ratio (paper: 0.75).
    3. flip       INPUT.RANDOM_FLIP ("horizontal" | "vertical" | "none").
    4. photometric INPUT.AUG.PHOTOMETRIC.*: random brightness, contrast, saturation and hue
                  (MMSegmentation's PhotoMetricDistortion), each with probability 0.5.
    5. pad        INPUT.AUG.PAD_TO_CROP: pad bottom/right up to the absolute crop size, image with
                  INPUT.AUG.IMAGE_PAD_VALUE and label with the ignore label, so every training
                  sample has the crop size.

Inference ("whole image"): ResizeShortestEdge(INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST), nothing
when MIN_SIZE_TEST == 0. Sliding-window inference (TEST.SLIDING_WINDOW.*) is done by the model
(gmmseg.modeling.sliding_window) on the image this pipeline returns.

Use from a dataset mapper:

    augs = T.AugmentationList(build_sem_seg_augmentation(cfg, is_train))
    aug_input = T.AugInput(image, sem_seg=sem_seg)   # image (H, W, 3) uint8 in INPUT.FORMAT,
    transforms = augs(aug_input)                       # sem_seg (H, W) integer/float array
    image, sem_seg = aug_input.image, aug_input.sem_seg
"""

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from detectron2.data import transforms as T
from fvcore.transforms.transform import NoOpTransform, PadTransform, Transform
from PIL import Image

__all__ = [
    "build_sem_seg_augmentation",
    "RatioRangeResize",
    "PhotometricDistortion",
    "PhotometricTransform",
    "PadToSize",
]


def _pair(value, what: str) -> Tuple:
    if isinstance(value, (int, float)):
        return (value, value)
    value = tuple(value)
    if len(value) != 2:
        raise ValueError(f"{what} must be one number or a pair, got {value!r}")
    return value


class RatioRangeResize(T.Augmentation):
    """Resize to a random multiple of a base scale, keeping the aspect ratio (MMSeg's Resize
    with `ratio_range`).

    r ~ U(ratio_range); the image is scaled by min(r*L / long side, r*S / short side) where
    (L, S) = base_scale, i.e. as large as possible while its long side <= r*L and its short
    side <= r*S (orientation-free, so portrait images behave like landscape ones).
    """

    def __init__(
        self,
        base_scale: Sequence[int] = (2048, 512),
        ratio_range: Sequence[float] = (0.5, 2.0),
        interp=Image.BILINEAR,
    ):
        super().__init__()
        base_scale = tuple(int(v) for v in _pair(base_scale, "base_scale"))
        ratio_range = tuple(float(v) for v in _pair(ratio_range, "ratio_range"))
        if not 0 < ratio_range[0] <= ratio_range[1]:
            raise ValueError(f"ratio_range must satisfy 0 < low <= high, got {ratio_range!r}")
        self._init(dict(base_scale=base_scale, ratio_range=ratio_range, interp=interp))

    def get_transform(self, image):
        h, w = image.shape[:2]
        r = float(np.random.uniform(*self.ratio_range))
        base_long, base_short = max(self.base_scale), min(self.base_scale)
        scale = min(r * base_long / max(h, w), r * base_short / min(h, w))
        new_h, new_w = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
        return T.ResizeTransform(h, w, new_h, new_w, self.interp)


class PhotometricTransform(Transform):
    """Deterministic colour distortion of the image; segmentation and coordinates unchanged.

    Applied in MMSeg's order: brightness (+delta), contrast (x alpha) first if `contrast_first`,
    then saturation (x alpha on HSV S) and hue (+delta on OpenCV H, mod 180), contrast last
    otherwise. A None parameter skips that step. Values are clipped to [0, 255] after each step;
    an uint8 image stays uint8, any other dtype is returned as float32.
    """

    def __init__(
        self,
        brightness: Optional[float],
        contrast: Optional[float],
        saturation: Optional[float],
        hue: Optional[int],
        contrast_first: bool,
        image_format: str = "RGB",
    ):
        super().__init__()
        if image_format not in ("RGB", "BGR"):
            raise ValueError(
                f"PhotometricTransform needs an RGB or BGR image, got format {image_format!r}"
            )
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"PhotometricTransform expects an (H, W, 3) image, got {img.shape}")
        out = img.astype(np.float32)
        if self.brightness is not None:
            out = np.clip(out + self.brightness, 0, 255)
        if self.contrast_first and self.contrast is not None:
            out = np.clip(out * self.contrast, 0, 255)
        if self.saturation is not None or self.hue is not None:
            out = self._apply_hsv(out)
        if not self.contrast_first and self.contrast is not None:
            out = np.clip(out * self.contrast, 0, 255)
        if img.dtype == np.uint8:
            return np.round(out).astype(np.uint8)
        return out

    def _apply_hsv(self, img: np.ndarray) -> np.ndarray:
        to_hsv, from_hsv = (
            (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB)
            if self.image_format == "RGB"
            else (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR)
        )
        hsv = cv2.cvtColor(np.round(img).astype(np.uint8), to_hsv).astype(np.int32)
        if self.saturation is not None:
            hsv[..., 1] = np.clip(np.round(hsv[..., 1] * self.saturation), 0, 255)
        if self.hue is not None:
            hsv[..., 0] = (hsv[..., 0] + int(self.hue)) % 180
        return cv2.cvtColor(hsv.astype(np.uint8), from_hsv).astype(np.float32)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def inverse(self) -> Transform:
        return NoOpTransform()  # colour changes do not move pixels


class PhotometricDistortion(T.Augmentation):
    """Random brightness, contrast, saturation and hue (MMSegmentation's PhotoMetricDistortion).

    Each of the four distortions is applied with probability 0.5; contrast goes before or after
    the HSV steps with probability 0.5. Parameters are sampled here (np.random), so a seeded
    run is reproducible, and applied by a PhotometricTransform.
    """

    def __init__(
        self,
        brightness_delta: float = 32.0,
        contrast_range: Sequence[float] = (0.5, 1.5),
        saturation_range: Sequence[float] = (0.5, 1.5),
        hue_delta: int = 18,
        image_format: str = "RGB",
    ):
        super().__init__()
        if image_format not in ("RGB", "BGR"):
            raise ValueError(
                f"photometric distortion needs INPUT.FORMAT 'RGB' or 'BGR', got {image_format!r}"
            )
        self._init(
            dict(
                brightness_delta=float(brightness_delta),
                contrast_range=_pair(contrast_range, "contrast_range"),
                saturation_range=_pair(saturation_range, "saturation_range"),
                hue_delta=int(hue_delta),
                image_format=image_format,
            )
        )

    def get_transform(self, image):
        def maybe(sample):
            return sample() if np.random.rand() < 0.5 else None

        brightness = maybe(
            lambda: float(np.random.uniform(-self.brightness_delta, self.brightness_delta))
        )
        contrast_first = bool(np.random.randint(2))
        contrast = maybe(lambda: float(np.random.uniform(*self.contrast_range)))
        saturation = maybe(lambda: float(np.random.uniform(*self.saturation_range)))
        hue = maybe(lambda: int(np.random.randint(-self.hue_delta, self.hue_delta + 1)))
        if brightness is None and contrast is None and saturation is None and hue is None:
            return NoOpTransform()
        return PhotometricTransform(
            brightness, contrast, saturation, hue, contrast_first, self.image_format
        )


class PadToSize(T.Augmentation):
    """Pad bottom/right so that the image is at least `size` = (height, width).

    The image is padded with `pad_value`, the segmentation with `seg_pad_value` (the ignore
    label, so padded pixels never count in the loss). No-op when the image is large enough.
    """

    def __init__(self, size: Sequence[int], pad_value: float = 128.0, seg_pad_value: int = 255):
        super().__init__()
        size = tuple(int(v) for v in _pair(size, "size"))
        self._init(dict(size=size, pad_value=pad_value, seg_pad_value=seg_pad_value))

    def get_transform(self, image):
        h, w = image.shape[:2]
        pad_h, pad_w = max(self.size[0] - h, 0), max(self.size[1] - w, 0)
        if pad_h == 0 and pad_w == 0:
            return NoOpTransform()
        return PadTransform(
            0,
            0,
            pad_w,
            pad_h,
            orig_w=w,
            orig_h=h,
            pad_value=self.pad_value,
            seg_pad_value=self.seg_pad_value,
        )


def build_sem_seg_augmentation(cfg, is_train: bool) -> List[T.Augmentation]:
    """The augmentations of a semantic-segmentation sample, from the config.

    Args:
        cfg: a config with the INPUT.AUG keys (add_gmmseg_config adds them, gmmseg/config.py)
            and detectron2's INPUT.* / MODEL.SEM_SEG_HEAD.IGNORE_VALUE.
        is_train: the training pipeline (resize, crop, flip, photometric, pad) or the inference
            one (shortest-edge resize by INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST, or nothing).
    Returns:
        a list for T.AugmentationList, to apply to T.AugInput(image, sem_seg=label); the crop
        reads `sem_seg`, so the label must be given during training.
    """
    if not is_train:
        if cfg.INPUT.MIN_SIZE_TEST > 0:
            return [
                T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")
            ]
        return []

    aug_cfg = cfg.INPUT.AUG
    ignore = int(cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)
    augs: List[T.Augmentation] = []

    if aug_cfg.RESIZE == "ratio_range":
        augs.append(RatioRangeResize(aug_cfg.BASE_SCALE, aug_cfg.RATIO_RANGE))
    elif aug_cfg.RESIZE == "shortest_edge":
        augs.append(
            T.ResizeShortestEdge(
                cfg.INPUT.MIN_SIZE_TRAIN,
                cfg.INPUT.MAX_SIZE_TRAIN,
                cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING,
            )
        )
    elif aug_cfg.RESIZE != "none":
        raise ValueError(
            f"INPUT.AUG.RESIZE must be 'ratio_range', 'shortest_edge' or 'none', got {aug_cfg.RESIZE!r}"
        )

    crop = cfg.INPUT.CROP
    if crop.ENABLED:
        max_area = float(crop.get("SINGLE_CATEGORY_MAX_AREA", 1.0))
        augs.append(T.RandomCrop_CategoryAreaConstraint(crop.TYPE, crop.SIZE, max_area, ignore))

    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(
            T.RandomFlip(
                horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
            )
        )

    photo = aug_cfg.PHOTOMETRIC
    if photo.ENABLED:
        augs.append(
            PhotometricDistortion(
                photo.BRIGHTNESS_DELTA,
                photo.CONTRAST_RANGE,
                photo.SATURATION_RANGE,
                photo.HUE_DELTA,
                image_format=cfg.INPUT.FORMAT,
            )
        )

    if crop.ENABLED and crop.TYPE == "absolute" and aug_cfg.PAD_TO_CROP:
        augs.append(PadToSize(crop.SIZE, pad_value=aug_cfg.IMAGE_PAD_VALUE, seg_pad_value=ignore))
    return augs
