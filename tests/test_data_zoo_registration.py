"""Dataset registrations (COCO-Stuff, ADE20K, Cityscapes) on tiny fakes of their official layouts."""

import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from PIL import Image

from gmmseg.data import builtin
from gmmseg.data.coco_stuff import (
    COCO_ID_TO_TRAIN_ID,
    COCO_STUFF_CLASSES,
    COCO_STUFF_UNUSED_IDS,
    coco_id_lut,
    register_coco_stuff,
)


@pytest.fixture
def fake_root(tmp_path, monkeypatch):
    """A temporary DETECTRON2_DATASETS; the real registrations are restored afterwards."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    yield tmp_path
    monkeypatch.undo()
    builtin.register_ade20k()
    builtin.register_cityscapes()
    register_coco_stuff()


def _write_image(path, h, w, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def _write_label(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


# ---- COCO-Stuff id mapping ---------------------------------------------------------------------
def test_coco_stuff_182_to_171_mapping():
    assert len(COCO_STUFF_CLASSES) == 171 and len(COCO_ID_TO_TRAIN_ID) == 171
    assert sorted(COCO_ID_TO_TRAIN_ID.values()) == list(range(171))
    spot = {
        1: (0, "person"),
        11: (10, "fire hydrant"),
        13: (11, "stop sign"),
        90: (79, "toothbrush"),
        92: (80, "banner"),
        149: (137, "road"),
        182: (170, "wood"),
    }
    for coco_id, (train_id, name) in spot.items():
        assert COCO_ID_TO_TRAIN_ID[coco_id] == train_id
        assert COCO_STUFF_CLASSES[train_id] == name
    for unused in COCO_STUFF_UNUSED_IDS:
        assert unused not in COCO_ID_TO_TRAIN_ID

    png = coco_id_lut("stuffthingmaps")  # pixel = id - 1, 255 unlabeled
    assert png[0] == 0 and png[10] == 10 and png[12] == 11 and png[181] == 170
    assert png[11] == 255 and png[90] == 255 and png[182] == 255 and png[255] == 255
    mat = coco_id_lut("coco_id")  # pixel = id, 0 unlabeled (COCO-Stuff-10k .mat)
    assert mat[0] == 255 and mat[1] == 0 and mat[12] == 255 and mat[92] == 80 and mat[182] == 170
    assert len(set(png[:182].tolist()) - {255}) == 171
    with pytest.raises(ValueError):
        coco_id_lut("nope")


# ---- COCO-Stuff registration ------------------------------------------------------------------
def test_coco_stuff_164k_and_10k_registration(fake_root):
    for split in ("train2017", "val2017"):
        for i in range(2):
            stem = f"{split}_{i:012d}"
            _write_image(str(fake_root / "coco" / split / f"{stem}.jpg"), 12, 16, i)
            _write_label(
                str(fake_root / "coco" / "stuffthingmaps_detectron2" / split / f"{stem}.png"),
                np.full((12, 16), i * 170, np.uint8),
            )
    for split in ("train", "test"):
        base = fake_root / "coco" / "coco_stuff_10k"
        _write_image(str(base / "images_detectron2" / split / f"COCO_{split}_1.jpg"), 10, 8)
        _write_label(
            str(base / "annotations_detectron2" / split / f"COCO_{split}_1.png"),
            np.zeros((10, 8), np.uint8),
        )

    names = register_coco_stuff(str(fake_root))
    assert set(names) == {
        "coco_stuff_164k_sem_seg_train",
        "coco_stuff_164k_sem_seg_val",
        "coco_stuff_10k_sem_seg_train",
        "coco_stuff_10k_sem_seg_test",
    }
    train = DatasetCatalog.get("coco_stuff_164k_sem_seg_train")
    assert len(train) == 2
    assert train[0]["file_name"] == str(fake_root / "coco/train2017/train2017_000000000000.jpg")
    assert train[0]["sem_seg_file_name"].endswith(
        "stuffthingmaps_detectron2/train2017/train2017_000000000000.png"
    )
    assert len(DatasetCatalog.get("coco_stuff_10k_sem_seg_test")) == 1
    for name in names:
        meta = MetadataCatalog.get(name)
        assert len(meta.stuff_classes) == 171 and len(meta.stuff_colors) == 171
        assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255
        assert os.path.isdir(meta.image_root) and os.path.isdir(meta.sem_seg_root)

    # an image without its label map is an error naming the file, never a silently smaller split
    os.remove(fake_root / "coco/stuffthingmaps_detectron2/val2017/val2017_000000000001.png")
    with pytest.raises(FileNotFoundError, match="val2017_000000000001"):
        DatasetCatalog.get("coco_stuff_164k_sem_seg_val")


# ---- ADE20K (detectron2's builtin registration) ------------------------------------------------
def test_ade20k_builtin_registration_with_mapper_flow(fake_root):
    ade = fake_root / "ADEChallengeData2016"
    for split in ("training", "validation"):
        for i in range(2):
            _write_image(str(ade / "images" / split / f"ADE_{split}_{i:08d}.jpg"), 20, 24, i)
            label = np.full((20, 24), 255, np.uint8)
            label[:10] = 149
            label[10:, :12] = 0
            _write_label(
                str(ade / "annotations_detectron2" / split / f"ADE_{split}_{i:08d}.png"), label
            )
    assert builtin.register_ade20k(str(fake_root)) == ["ade20k_sem_seg_train", "ade20k_sem_seg_val"]
    records = DatasetCatalog.get("ade20k_sem_seg_val")
    assert len(records) == 2 and records[0]["file_name"].startswith(
        str(ade / "images" / "validation")
    )
    meta = MetadataCatalog.get("ade20k_sem_seg_val")
    assert (
        len(meta.stuff_classes) == 150
        and meta.evaluator_type == "sem_seg"
        and meta.ignore_label == 255
    )

    # what a dataset mapper does with a record: read, augment, labels stay in {0..149, 255}
    from detectron2.config import get_cfg

    from gmmseg import add_gmmseg_config
    from gmmseg.data.augmentation import build_sem_seg_augmentation

    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.INPUT.AUG.RESIZE = "ratio_range"
    cfg.INPUT.AUG.BASE_SCALE = (48, 16)
    cfg.INPUT.CROP.ENABLED, cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE = True, "absolute", (16, 16)
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.75
    image = utils.read_image(records[0]["file_name"], format=cfg.INPUT.FORMAT)
    sem_seg = utils.read_image(records[0]["sem_seg_file_name"]).astype("double")
    aug_input = T.AugInput(image, sem_seg=sem_seg)
    T.AugmentationList(build_sem_seg_augmentation(cfg, is_train=True))(aug_input)
    assert aug_input.image.shape == (16, 16, 3) and aug_input.sem_seg.shape == (16, 16)
    assert set(np.unique(aug_input.sem_seg).tolist()) <= {0.0, 149.0, 255.0}


# ---- Cityscapes (detectron2's builtin registration) --------------------------------------------
def test_cityscapes_builtin_registration(fake_root):
    city = fake_root / "cityscapes"
    for split in ("train", "val", "test"):
        stem = "aachen_000000_000019"
        _write_image(
            str(city / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png"), 8, 16
        )
        gt = city / "gtFine" / split / "aachen"
        for kind in ("instanceIds", "labelIds", "labelTrainIds"):
            _write_label(str(gt / f"{stem}_gtFine_{kind}.png"), np.zeros((8, 16), np.uint8))
        with open(gt / f"{stem}_gtFine_polygons.json", "w") as f:
            json.dump({"imgHeight": 8, "imgWidth": 16, "objects": []}, f)
    names = builtin.register_cityscapes(str(fake_root))
    assert names == [
        "cityscapes_fine_sem_seg_train",
        "cityscapes_fine_sem_seg_val",
        "cityscapes_fine_sem_seg_test",
    ]
    records = DatasetCatalog.get("cityscapes_fine_sem_seg_train")
    assert len(records) == 1
    assert records[0]["sem_seg_file_name"].endswith("aachen_000000_000019_gtFine_labelTrainIds.png")
    assert (records[0]["height"], records[0]["width"]) == (8, 16)
    meta = MetadataCatalog.get("cityscapes_fine_sem_seg_train")
    assert len(meta.stuff_classes) == 19 and meta.ignore_label == 255
    assert meta.evaluator_type == "cityscapes_sem_seg"
    assert builtin.register_builtin_sem_seg(str(fake_root)) == [
        "ade20k_sem_seg_train",
        "ade20k_sem_seg_val",
        "cityscapes_fine_sem_seg_train",
        "cityscapes_fine_sem_seg_val",
        "cityscapes_fine_sem_seg_test",
    ]
    assert (
        DatasetCatalog.get("cityscapes_fine_sem_seg_train") == records
    )  # registered again, same records
