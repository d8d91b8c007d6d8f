"""SemSegDatasetMapper: bad labels, unreadable files, remapping, anomaly masks, config."""

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from PIL import Image

from gmmseg import add_gmmseg_config
from gmmseg.data.mapper import SemSegDatasetMapper, read_label_map, remap_and_check_labels

H, W = 10, 14


def _write(tmp_path, name, array):
    path = str(tmp_path / name)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def sample(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    label = np.zeros((H, W), np.uint8)
    label[:, 5:] = 3
    label[0] = 255
    label[4:6, 2:4] = 255  # an anomaly, void in the label
    mask = np.zeros((H, W), np.uint8)
    mask[4:6, 2:4] = 1
    mask[0] = 255
    return {
        "file_name": _write(tmp_path, "img.png", image),
        "sem_seg_file_name": _write(tmp_path, "label.png", label),
        "anomaly_mask_file_name": _write(tmp_path, "mask.png", mask),
        "height": H,
        "width": W,
    }


def _mapper(is_train=False, num_classes=6, augs=(), **kw):
    return SemSegDatasetMapper(
        is_train, augmentations=list(augs), image_format="RGB", num_classes=num_classes, **kw
    )


def test_valid_sample(sample):
    out = _mapper(is_train=True)(sample)
    assert out["image"].shape == (3, H, W) and out["image"].dtype == torch.uint8
    assert out["sem_seg"].dtype == torch.long and set(out["sem_seg"].unique().tolist()) == {
        0,
        3,
        255,
    }
    assert "anomaly_mask" not in out  # only in inference mode by default
    assert "sem_seg_file_name" not in out


def test_bad_label_value_names_file_value_and_range(sample, tmp_path):
    label = np.zeros((H, W), np.uint8)
    label[2, 3] = 7
    label[5, 5] = 200
    sample["sem_seg_file_name"] = _write(tmp_path, "bad_label.png", label)
    with pytest.raises(ValueError) as e:
        _mapper(num_classes=6)(sample)
    msg = str(e.value)
    assert "bad_label.png" in msg and "[7, 200]" in msg and "[0, 6)" in msg and "255" in msg
    _mapper(num_classes=201)(sample)  # the same file is fine for 201 classes


def test_label_remap_from_dict_or_mapper(sample):
    sample["label_remap"] = {3: 1}
    assert set(_mapper()(sample)["sem_seg"].unique().tolist()) == {0, 1, 255}
    del sample["label_remap"]
    out = _mapper(label_remap={3: 255})(sample)
    assert set(out["sem_seg"].unique().tolist()) == {0, 255}
    with pytest.raises(
        ValueError, match=r"\[3\].*remapping.*\[9\]"
    ):  # the remapped value is checked
        _mapper(label_remap={3: 9})(sample)


def test_remap_and_check_wide_labels():
    label = np.array([[0, 300], [255, 70000]], np.int32)
    out = remap_and_check_labels(label, 5, remap={300: 1, 70000: 255}, file_name="x.png")
    assert out.dtype == np.uint8 and out.tolist() == [[0, 1], [255, 255]]
    with pytest.raises(ValueError, match=r"x.png.*\[70000\]"):
        remap_and_check_labels(label, 5, remap={300: 1}, file_name="x.png")
    with pytest.raises(ValueError, match=r"\[-1\]"):
        remap_and_check_labels(np.array([[-1, 0]]), 5)


def test_corrupt_missing_and_truncated_images_name_the_file(sample, tmp_path):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image at all")
    with pytest.raises(OSError, match="garbage.png"):
        _mapper()(dict(sample, file_name=str(garbage)))
    data = open(sample["file_name"], "rb").read()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="truncated.png"):
        _mapper()(dict(sample, file_name=str(truncated)))
    with pytest.raises(FileNotFoundError, match="does_not_exist.jpg"):
        _mapper()(dict(sample, file_name=str(tmp_path / "does_not_exist.jpg")))
    with pytest.raises(OSError, match="garbage.png"):
        _mapper()(dict(sample, sem_seg_file_name=str(garbage)))
    with pytest.raises(FileNotFoundError, match="no_label.png"):
        _mapper()(dict(sample, sem_seg_file_name=str(tmp_path / "no_label.png")))


def test_colour_label_and_size_mismatch_are_refused(sample, tmp_path):
    rgb_label = _write(tmp_path, "rgb_label.png", np.zeros((H, W, 3), np.uint8))
    with pytest.raises(ValueError, match="rgb_label.png.*RGB"):
        _mapper()(dict(sample, sem_seg_file_name=rgb_label))
    small = _write(tmp_path, "small_label.png", np.zeros((H - 1, W), np.uint8))
    with pytest.raises(ValueError, match="small_label.png"):
        _mapper()(dict(sample, sem_seg_file_name=small))
    with pytest.raises(ValueError, match="Mismatched image shape"):  # detectron2's own check
        _mapper()(dict(sample, height=H + 1))


def test_palette_and_16bit_labels(tmp_path):
    pal = Image.fromarray(np.array([[0, 1], [2, 255]], np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    pal.save(tmp_path / "pal.png")
    assert read_label_map(str(tmp_path / "pal.png")).tolist() == [[0, 1], [2, 255]]
    Image.fromarray(np.array([[0, 1000]], np.uint16)).save(tmp_path / "wide.png")
    assert read_label_map(str(tmp_path / "wide.png")).tolist() == [[0, 1000]]


def test_anomaly_mask_follows_the_resize(sample):
    out = _mapper(augs=[T.ResizeShortestEdge(3 * H, 1000)])(sample)
    mask, sem = out["anomaly_mask"], out["sem_seg"]
    assert out["image"].shape[1:] == mask.shape == sem.shape == (3 * H, 3 * W)
    assert mask.dtype == torch.long and set(mask.unique().tolist()) == {0, 1, 255}
    expected = torch.zeros(3 * H, 3 * W, dtype=torch.bool)
    expected[12:18, 6:12] = True  # rows 4:6, columns 2:4 scaled by 3
    assert torch.equal(mask == 1, expected)
    assert torch.all(sem[mask == 1] == 255) and torch.all(sem[mask == 0] != 255)
    assert "anomaly_mask" not in _mapper(augs=[], load_anomaly_mask=False)(sample)


def test_bad_anomaly_mask_value(sample, tmp_path):
    sample["anomaly_mask_file_name"] = _write(
        tmp_path, "bad_mask.png", np.full((H, W), 2, np.uint8)
    )
    with pytest.raises(ValueError, match=r"bad_mask.png.*\[2\]"):
        _mapper()(sample)


def test_from_config_and_class_count_check():
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 6
    cfg.DATASETS.TRAIN = ("gmmseg_demo_train",)
    mapper = SemSegDatasetMapper(cfg, is_train=True)
    assert mapper.num_classes == 6 and mapper.ignore_label == 255 and mapper.is_train
    assert len(mapper.augmentations.augs) >= 1
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 19
    with pytest.raises(ValueError, match="NUM_CLASSES.*gmmseg_demo_train.*6"):
        SemSegDatasetMapper(cfg, is_train=True)
    assert "gmmseg_demo_train" in DatasetCatalog.list()
    assert MetadataCatalog.get("gmmseg_demo_train").ignore_label == 255
