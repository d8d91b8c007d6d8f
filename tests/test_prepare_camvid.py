"""tools/prepare_camvid.py on a tiny synthetic copy of the SegNet release layout
(train/ + trainannot/, val/ + valannot/, void = 11): the output is what camvid_* register and the
mapper accepts, void becomes 255, reruns skip, bad inputs are named."""

import importlib.util
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from PIL import Image

from gmmseg.data import camvid
from gmmseg.data.mapper import SemSegDatasetMapper

TOOL = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "prepare_camvid.py"
)
H, W = 6, 8


def _tool():
    spec = importlib.util.spec_from_file_location("_prepare_camvid_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _segnet(root, counts=None):
    for split, n in (counts or {"train": 2, "val": 1}).items():
        os.makedirs(root / split)
        os.makedirs(root / f"{split}annot")
        for i in range(n):
            name = f"0001TP_{i:06d}.png"
            Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(root / split / name)
            label = np.arange(H * W).reshape(H, W) % 12  # every id 0..11, 11 = void
            Image.fromarray(label.astype(np.uint8)).save(root / f"{split}annot" / name)
    return root


def test_converts_segnet_layout_for_the_camvid_registration(tmp_path):
    segnet, out = _segnet(tmp_path / "CamVid"), tmp_path / "datasets" / "camvid"
    tool = _tool()
    assert (
        tool.main(["--segnet", str(segnet), "--output", str(out), "--splits", "train", "val"]) == 0
    )
    label = np.asarray(Image.open(out / "train" / "labels" / "0001TP_000001.png"))
    expected = np.arange(H * W).reshape(H, W) % 12
    assert (label[expected == 11] == 255).all() and (
        label[expected < 11] == expected[expected < 11]
    ).all()
    image = out / "val" / "images" / "0001TP_000000.png"
    assert os.path.islink(image) and os.path.samefile(image, segnet / "val" / "0001TP_000000.png")
    assert tool.prepare_camvid(str(segnet), str(out), ("train", "val")) == ["skipped"] * 3

    camvid.register_camvid(str(tmp_path / "datasets"))
    try:
        dicts = DatasetCatalog.get("camvid_train")
        assert len(dicts) == 2
        mapper = SemSegDatasetMapper(True, augmentations=[], image_format="RGB", num_classes=11)
        assert sorted(mapper(dicts[0])["sem_seg"].unique().tolist()) == list(range(11)) + [255]
    finally:
        camvid.register_camvid()  # back to the import-time registration


def test_copy_mode_writes_files(tmp_path):
    segnet, out = _segnet(tmp_path / "CamVid", {"train": 1}), tmp_path / "out"
    assert _tool().prepare_camvid(str(segnet), str(out), ("train",), copy=True) == ["written"]
    assert not os.path.islink(out / "train" / "images" / "0001TP_000000.png")


def test_bad_inputs_are_named(tmp_path, capsys):
    segnet, out = _segnet(tmp_path / "CamVid", {"train": 1}), tmp_path / "out"
    tool = _tool()
    assert tool.main(["--segnet", str(segnet), "--output", str(out)]) == 1  # no val/ in this copy
    assert "val does not exist" in capsys.readouterr().err
    Image.fromarray(np.full((H, W), 12, np.uint8)).save(segnet / "trainannot" / "0001TP_000000.png")
    with pytest.raises(ValueError, match=r"0001TP_000000.png: values \[12\]"):
        tool.prepare_camvid(str(segnet), str(out), ("train",))
    os.remove(segnet / "trainannot" / "0001TP_000000.png")
    with pytest.raises(FileNotFoundError, match="have no annotation"):
        tool.prepare_camvid(str(segnet), str(out), ("train",))
