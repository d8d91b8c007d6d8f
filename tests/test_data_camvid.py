"""CamVid registrations (closed and open set) on a tiny fake of the release layout."""

import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from gmmseg.data import camvid
from gmmseg.data.mapper import SemSegDatasetMapper, make_sem_seg_loading_fn

H, W = 12, 16
COUNTS = {"train": 3, "val": 2}  # no test split, as in the shared copy


def _label(seed):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 9, (H, W)).astype(np.uint8)
    label[0, :4] = 9  # pedestrian
    label[1, :3] = 10  # bicyclist
    label[-1, :5] = 255  # void
    return label


@pytest.fixture(scope="module")
def camvid_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    for split, n in COUNTS.items():
        os.makedirs(root / "camvid" / split / "images")
        os.makedirs(root / "camvid" / split / "labels")
        for i in range(n):
            stem = f"0001TP_{i:06d}"
            rgb = np.random.default_rng(i).integers(0, 256, (H, W, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(
                root / "camvid" / split / "images" / f"{stem}.jpg", quality=95
            )
            Image.fromarray(_label(100 * i + len(split))).save(
                root / "camvid" / split / "labels" / f"{stem}.png"
            )
    return str(root)


@pytest.fixture
def registered(camvid_root):
    camvid.register_camvid(camvid_root)
    yield camvid_root
    camvid.register_camvid()  # back to the import-time registration


def _mapper(num_classes, is_train=False):
    return SemSegDatasetMapper(
        is_train, augmentations=[], image_format="RGB", num_classes=num_classes
    )


def test_registered_names_dicts_and_metadata(registered):
    for prefix, k in (("camvid_", 11), ("camvid_openset_", 9)):
        for split, n in COUNTS.items():
            name = prefix + split
            dicts = DatasetCatalog.get(name)
            assert len(dicts) == n
            d = dicts[0]
            assert d["file_name"].endswith(".jpg") and d["sem_seg_file_name"].endswith(".png")
            assert os.path.splitext(os.path.basename(d["file_name"]))[0] == d["image_id"]
            assert (d["height"], d["width"]) == (H, W)
            meta = MetadataCatalog.get(name)
            assert len(meta.stuff_classes) == len(meta.stuff_colors) == k
            assert meta.ignore_label == 255 and meta.evaluator_type == "sem_seg"
    assert MetadataCatalog.get("camvid_train").stuff_classes[9:] == ["pedestrian", "bicyclist"]
    assert MetadataCatalog.get("camvid_openset_train").stuff_classes == list(
        camvid.CAMVID_CLASSES[:9]
    )
    assert MetadataCatalog.get("camvid_openset_val").label_remap == {9: 255, 10: 255}
    assert "label_remap" not in DatasetCatalog.get("camvid_train")[0]
    assert "anomaly_mask_file_name" not in DatasetCatalog.get("camvid_openset_train")[0]


def test_missing_split_names_layout_and_env(registered, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get("camvid_test")
    msg = str(e.value)
    assert os.path.join("camvid", "test", "images") in msg and "labels" in msg
    assert "DETECTRON2_DATASETS" in msg and "camvid_test" in msg
    # root from the environment, read when the dataset is loaded
    camvid.register_camvid()
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere") as e:
        DatasetCatalog.get("camvid_openset_train")
    assert "DETECTRON2_DATASETS" in str(e.value)


def test_empty_split_and_missing_label(tmp_path):
    (tmp_path / "camvid" / "val" / "images").mkdir(parents=True)
    (tmp_path / "camvid" / "val" / "labels").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no image"):
        camvid.load_camvid_split("val", str(tmp_path))
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(
        tmp_path / "camvid" / "val" / "images" / "a.jpg"
    )
    with pytest.raises(FileNotFoundError, match="a.png"):
        camvid.load_camvid_split("val", str(tmp_path))


def test_openset_train_withholds_pedestrian_and_bicyclist(registered):
    closed = DatasetCatalog.get("camvid_train")[0]
    opened = DatasetCatalog.get("camvid_openset_train")[0]
    raw = np.asarray(Image.open(closed["sem_seg_file_name"]))
    sem = _mapper(9, is_train=True)(opened)["sem_seg"].numpy()
    assert set(np.unique(sem)) <= set(range(9)) | {255}
    assert np.all(sem[np.isin(raw, [9, 10])] == 255)
    keep = raw < 9
    assert np.array_equal(sem[keep], raw[keep])  # known ids keep their CamVid numbers
    assert np.array_equal(_mapper(11, is_train=True)(closed)["sem_seg"].numpy(), raw)
    with pytest.raises(
        ValueError, match=r"\[9, 10\]"
    ):  # the closed-set labels do not fit 9 classes
        _mapper(9, is_train=True)(closed)


def test_openset_val_anomaly_mask_from_label(registered):
    for d in DatasetCatalog.get("camvid_openset_val"):
        raw = np.asarray(Image.open(d["sem_seg_file_name"]))
        out = _mapper(9)(d)
        mask = out["anomaly_mask"].numpy()
        assert out["anomaly_mask"].dtype == torch.long
        expected = np.where(np.isin(raw, [9, 10]), 1, np.where(raw == 255, 255, 0))
        assert np.array_equal(mask, expected)
        assert np.all(out["sem_seg"].numpy()[mask == 1] == 255)


def test_evaluator_loading_fn_applies_the_remap(registered):
    d = DatasetCatalog.get("camvid_openset_val")[0]
    raw = np.asarray(Image.open(d["sem_seg_file_name"]))
    gt = make_sem_seg_loading_fn("camvid_openset_val")(d["sem_seg_file_name"], dtype=int)
    assert gt.dtype == int and np.all(gt[np.isin(raw, [9, 10])] == 255)
    assert np.array_equal(make_sem_seg_loading_fn("camvid_val")(d["sem_seg_file_name"]), raw)
