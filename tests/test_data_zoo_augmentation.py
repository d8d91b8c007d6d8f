"""Training augmentation (resize ratio range, category-constrained crop, flip, photometric, pad)
and the inference-mode pipeline, on a fake image + label."""

import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.data import transforms as T

from gmmseg import add_gmmseg_config
from gmmseg.data.augmentation import (
    PadToSize,
    PhotometricDistortion,
    PhotometricTransform,
    RatioRangeResize,
    build_sem_seg_augmentation,
)


def _cfg(**overrides):
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.AUG.RESIZE = "ratio_range"
    cfg.INPUT.AUG.BASE_SCALE = (96, 32)
    cfg.INPUT.AUG.RATIO_RANGE = (0.5, 2.0)
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.SIZE = (24, 24)
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.75
    cfg.INPUT.AUG.PHOTOMETRIC.ENABLED = True
    for key, value in overrides.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    return cfg


def _sample(h=30, w=40, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = np.zeros((h, w), np.uint8)
    label[:, w // 2 :] = 1
    label[h // 2 :, : w // 4] = 2
    label[:3] = 255
    return image, label


def _run(augs, image, label):
    aug_input = T.AugInput(image.copy(), sem_seg=label.copy())
    transforms = T.AugmentationList(augs)(aug_input)
    return aug_input.image, aug_input.sem_seg, transforms


def test_paper_pipeline_shapes_and_label_values():
    cfg = _cfg()
    augs = build_sem_seg_augmentation(cfg, is_train=True)
    kinds = [type(a).__name__ for a in augs]
    assert kinds == [
        "RatioRangeResize",
        "RandomCrop_CategoryAreaConstraint",
        "RandomFlip",
        "PhotometricDistortion",
        "PadToSize",
    ]
    crop = augs[1]
    assert crop.single_category_max_area == 0.75 and crop.ignored_category == 255
    image, label = _sample()
    np.random.seed(0)
    for _ in range(12):
        out_image, out_label, _ = _run(augs, image, label)
        assert out_image.shape == (24, 24, 3) and out_image.dtype == np.uint8
        assert out_label.shape == (24, 24)
        assert set(np.unique(out_label).tolist()) <= {0, 1, 2, 255}  # nearest resize, no new ids


def test_small_image_is_padded_with_ignore():
    cfg = _cfg(
        **{
            "INPUT.AUG.RATIO_RANGE": (0.5, 0.5),
            "INPUT.AUG.PHOTOMETRIC.ENABLED": False,
            "INPUT.RANDOM_FLIP": "none",
        }
    )
    image, label = _sample(h=30, w=40)  # scale min(48/40, 16/30) -> 16 x 21
    out_image, out_label, _ = _run(build_sem_seg_augmentation(cfg, True), image, label)
    assert out_image.shape == (24, 24, 3) and out_label.shape == (24, 24)
    assert (out_label[16:] == 255).all() and (out_label[:, 21:] == 255).all()
    assert (out_image[16:] == 128).all() and (out_image[:, 21:] == 128).all()
    assert set(np.unique(out_label[:16, :21]).tolist()) <= {0, 1, 2, 255}


def test_ratio_range_resize_keeps_aspect_and_is_orientation_free():
    resize = RatioRangeResize(base_scale=(2048, 512), ratio_range=(1.0, 1.0))
    landscape = resize.get_transform(np.zeros((1024, 2048, 3), np.uint8))
    assert (landscape.new_h, landscape.new_w) == (512, 1024)
    portrait = resize.get_transform(np.zeros((2048, 1024, 3), np.uint8))
    assert (portrait.new_h, portrait.new_w) == (1024, 512)
    np.random.seed(1)
    scales = [
        RatioRangeResize((2048, 512), (0.5, 2.0))
        .get_transform(np.zeros((512, 1024, 3), np.uint8))
        .new_h
        / 512
        for _ in range(50)
    ]
    assert 0.5 <= min(scales) and max(scales) <= 2.0 and max(scales) - min(scales) > 0.5
    with pytest.raises(ValueError):
        RatioRangeResize((2048, 512), (2.0, 0.5))


def test_photometric_transform_values():
    image = np.full((4, 5, 3), 100, np.uint8)
    label = np.arange(20, dtype=np.uint8).reshape(4, 5)
    bright = PhotometricTransform(10.0, None, None, None, True, "RGB")
    assert (bright.apply_image(image) == 110).all()
    assert (bright.apply_segmentation(label) == label).all()
    contrast = PhotometricTransform(None, 3.0, None, None, False, "RGB")
    assert (contrast.apply_image(image) == 255).all()  # clipped
    gray_hue = PhotometricTransform(None, None, None, 30, True, "BGR")
    assert np.abs(gray_hue.apply_image(image).astype(int) - 100).max() <= 1  # gray has no hue
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 200  # RGB red
    # OpenCV hue is degrees / 2: +60 is +120 degrees, red -> green
    shifted = PhotometricTransform(None, None, None, 60, True, "RGB").apply_image(red)
    assert shifted[0, 0, 1] > 150 and shifted[0, 0, 0] < 50 and shifted[0, 0, 2] < 50
    shifted_bgr = PhotometricTransform(None, None, None, 60, True, "BGR").apply_image(
        red[..., ::-1].copy()
    )
    assert (shifted_bgr[..., ::-1] == shifted).all()  # the image format is honoured
    desaturated = PhotometricTransform(None, None, 0.0, None, True, "RGB").apply_image(red)
    assert np.ptp(desaturated[0, 0].astype(int)) <= 1
    with pytest.raises(ValueError):
        PhotometricTransform(None, None, None, 5, True, "YUV-BT.601")


def test_photometric_distortion_is_reproducible_and_label_preserving():
    image, label = _sample()
    aug = PhotometricDistortion(image_format="RGB")
    outs = []
    for _ in range(2):
        np.random.seed(3)
        out_image, out_label, _ = _run([aug], image, label)
        outs.append(out_image)
        assert (out_label == label).all()
    assert (outs[0] == outs[1]).all()


def test_pad_to_size_noop_when_large_enough():
    image, label = _sample(h=30, w=40)
    out_image, out_label, _ = _run([PadToSize((20, 20))], image, label)
    assert out_image.shape == image.shape and (out_label == label).all()


def test_defaults_and_inference_modes():
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    train = build_sem_seg_augmentation(cfg, is_train=True)  # detectron2's own default behaviour
    assert [type(a).__name__ for a in train] == ["ResizeShortestEdge", "RandomFlip"]
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 16, 64
    test = build_sem_seg_augmentation(cfg, is_train=False)
    assert len(test) == 1 and isinstance(test[0], T.ResizeShortestEdge)
    out_image, _, _ = _run(test, *_sample(h=30, w=40))
    assert out_image.shape[:2] == (16, 21)
    cfg.INPUT.MIN_SIZE_TEST = 0
    assert build_sem_seg_augmentation(cfg, is_train=False) == []
    assert cfg.TEST.SLIDING_WINDOW.ENABLED is False
    assert tuple(cfg.TEST.SLIDING_WINDOW.SIZE) == (1024, 1024)
    cfg.INPUT.AUG.RESIZE = "bogus"
    with pytest.raises(ValueError, match="INPUT.AUG.RESIZE"):
        build_sem_seg_augmentation(cfg, is_train=True)
