"""The dataset check (gmmseg.data.check, tools/check_dataset.py) and the preparation tools
(tools/prepare_{coco_stuff,cityscapes,ade20k}.py), on tiny fakes in tmp."""

import importlib.util
import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg
from PIL import Image

from gmmseg.data.check import check_sem_seg_dataset
from gmmseg.data.coco_stuff import register_coco_stuff

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


def _tool(name):
    spec = importlib.util.spec_from_file_location(
        f"_zoo_tool_{name}", os.path.join(TOOLS, f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _save(path, array):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(str(path))


def _register_fake(name, image_root, label_root, classes=("a", "b", "c")):
    DatasetCatalog.pop(name, None)
    MetadataCatalog.pop(name, None)
    DatasetCatalog.register(
        name, lambda: load_sem_seg(str(label_root), str(image_root), "png", "jpg")
    )
    MetadataCatalog.get(name).set(
        stuff_classes=list(classes),
        ignore_label=255,
        evaluator_type="sem_seg",
        image_root=str(image_root),
        sem_seg_root=str(label_root),
    )


@pytest.fixture
def planted(tmp_path):
    """a: fine; b: a label id 7 (K = 3); c: label 6x8 vs image 8x8; d: image without label;
    e: label without image."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    rng = np.random.default_rng(0)
    for stem in "abcd":
        _save(images / f"{stem}.jpg", rng.integers(0, 256, (8, 8, 3)))
    good = np.zeros((8, 8), np.uint8)
    good[:4] = 1
    good[0, 0] = 255
    _save(labels / "a.png", good)
    bad = good.copy()
    bad[7, 7] = 7
    _save(labels / "b.png", bad)
    _save(labels / "c.png", np.zeros((6, 8), np.uint8))
    _save(labels / "e.png", good)
    _register_fake("zoo_check_planted", images, labels)
    yield "zoo_check_planted", images, labels
    DatasetCatalog.pop("zoo_check_planted", None)
    MetadataCatalog.pop("zoo_check_planted", None)


def test_check_finds_planted_problems(planted):
    name, images, labels = planted
    report = check_sem_seg_dataset(name, expected_count=0)
    assert not report.ok
    # 4 images, 4 labels: load_sem_seg pairs the sorted lists by position, d.jpg with e.png
    assert report.num_records == 4
    assert report.problem_files("bad_label") == [str(labels / "b.png")]
    assert report.problem_files("size_mismatch") == [str(labels / "c.png")]
    assert report.problem_files("missing_label") == [str(images / "d.jpg")]
    assert report.problem_files("orphan_label") == [str(labels / "e.png")]
    assert report.problem_files("mispaired") == [str(images / "d.jpg")]
    assert "label ids [7]" in str(
        report.problems[[p.kind for p in report.problems].index("bad_label")]
    )
    # frequencies over a, b, c, e (b's id 7 is not a class)
    assert report.pixel_counts.tolist() == [32 + 31 + 48 + 32, 31 * 3, 0]  # a, b, c, e
    assert report.image_counts.tolist() == [4, 3, 0]
    assert report.ignore_pixels == 3
    text = report.format()
    assert "FAILED: 5 problem(s)" in text and "b.png" in text and "never seen" in text

    counted = check_sem_seg_dataset(name, expected_count=10)
    assert counted.problem_files("count") == [name]


def test_check_command_exit_codes(planted, tmp_path, capsys):
    name, images, labels = planted
    check = _tool("check_dataset")
    assert check.main(["--dataset", name, "--expected-count", "0", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "[bad_label]" in out and "[size_mismatch]" in out and "d.jpg" in out

    for f in ("b.png", "c.png", "e.png"):
        os.remove(labels / f)
    os.remove(images / "d.jpg")
    for stem in "bc":
        os.remove(images / f"{stem}.jpg")
    assert check.main(["--dataset", name, "--expected-count", "0", "--no-progress"]) == 0
    assert "OK: no problem found" in capsys.readouterr().out
    assert check.main(["--dataset", "no_such_dataset_zoo", "--no-progress"]) == 1


# ---- preparation tools ------------------------------------------------------------------------
def test_prepare_coco_stuff_png_is_idempotent(tmp_path):
    tool = _tool("prepare_coco_stuff")
    raw = np.array([[0, 11, 12, 181], [90, 91, 182, 255]], np.uint8)  # pixel = id - 1
    _save(tmp_path / "coco" / "stuffthingmaps" / "val2017" / "000000000001.png", raw)
    assert tool.main(["164k", "--coco", str(tmp_path / "coco"), "--splits", "val2017"]) == 0
    out_file = tmp_path / "coco" / "stuffthingmaps_detectron2" / "val2017" / "000000000001.png"
    out = np.asarray(Image.open(out_file))
    assert out.tolist() == [[0, 255, 11, 170], [255, 80, 255, 255]]
    mtime = os.path.getmtime(out_file)
    assert tool.prepare_164k_png(str(tmp_path / "coco"), ["val2017"]) == ["skipped"]
    assert os.path.getmtime(out_file) == mtime
    assert tool.main(["164k", "--coco", str(tmp_path / "nothing")]) == 1  # clear error, no crash


def test_prepare_coco_stuff_json_rasterises_stuff_then_things(tmp_path):
    from pycocotools import mask as mask_utils

    tool = _tool("prepare_coco_stuff")
    h, w = 6, 8
    sky = np.zeros((h, w), np.uint8, order="F")
    sky[:3] = 1
    sky_rle = mask_utils.encode(sky)
    sky_rle["counts"] = sky_rle["counts"].decode("ascii")
    other = np.asfortranarray(1 - sky)
    other_rle = mask_utils.encode(other)
    other_rle["counts"] = other_rle["counts"].decode("ascii")
    images = [{"id": 5, "file_name": "000000000005.jpg", "height": h, "width": w}]
    stuff = {
        "images": images,
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 157, "segmentation": sky_rle},  # sky-other
            {"id": 2, "image_id": 5, "category_id": 183, "segmentation": other_rle},
        ],
    }  # "other"
    things = {
        "images": images,
        "annotations": [  # a person box (polygon) on the "other" part
            {
                "id": 3,
                "image_id": 5,
                "category_id": 1,
                "area": 4.0,
                "iscrowd": 0,
                "segmentation": [[1, 3, 3, 3, 3, 5, 1, 5]],
            }
        ],
    }
    (tmp_path / "stuff.json").write_text(json.dumps(stuff))
    (tmp_path / "inst.json").write_text(json.dumps(things))
    out_dir = tmp_path / "coco" / "stuffthingmaps_detectron2" / "val2017"
    assert (
        tool.main(
            [
                "164k-json",
                "--coco",
                str(tmp_path / "coco"),
                "--stuff-json",
                str(tmp_path / "stuff.json"),
                "--things-json",
                str(tmp_path / "inst.json"),
            ]
        )
        == 0
    )
    label = np.asarray(Image.open(out_dir / "000000000005.png"))
    assert (label[:3] == 145).all()  # sky-other: id 157 -> train id 145
    assert label[4, 2] == 0  # person on top
    assert label[5, 7] == 255  # "other" without a thing stays ignored


def test_prepare_coco_stuff_10k(tmp_path):
    from scipy.io import savemat

    tool = _tool("prepare_coco_stuff")
    src = tmp_path / "coco" / "coco_stuff_10k"
    for split, names in (
        ("train", ["COCO_train2014_000000000077"]),
        ("test", ["COCO_train2014_000000000078"]),
    ):
        (src / "imageLists").mkdir(parents=True, exist_ok=True)
        (src / "imageLists" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for n in names:
            _save(src / "images" / f"{n}.jpg", np.zeros((4, 5, 3)))
            os.makedirs(src / "annotations", exist_ok=True)
            savemat(
                str(src / "annotations" / f"{n}.mat"),
                {"S": np.array([[0, 1, 12, 92, 182]] * 4, np.uint16)},
            )
    assert tool.main(["10k", "--coco", str(tmp_path / "coco")]) == 0
    label = np.asarray(
        Image.open(src / "annotations_detectron2" / "train" / "COCO_train2014_000000000077.png")
    )
    assert label[0].tolist() == [255, 0, 255, 80, 170]
    assert os.path.islink(src / "images_detectron2" / "test" / "COCO_train2014_000000000078.jpg")
    assert tool.prepare_10k(str(src)) == ["skipped", "skipped"]
    # the prepared tree is what coco_stuff_10k_sem_seg_* reads, and it passes the check
    try:
        register_coco_stuff(str(tmp_path))
        report = check_sem_seg_dataset("coco_stuff_10k_sem_seg_train", expected_count=0)
        assert report.ok, report.format()
        assert report.num_records == 1 and report.pixel_counts[[0, 80, 170]].tolist() == [4, 4, 4]
    finally:
        register_coco_stuff()


def test_prepare_ade20k(tmp_path):
    tool = _tool("prepare_ade20k")
    ade = tmp_path / "ADEChallengeData2016"
    for split in ("training", "validation"):
        _save(ade / "annotations" / split / f"ADE_{split}_1.png", [[0, 1, 150]])
    assert tool.main(["--ade", str(ade)]) == 0
    out = np.asarray(
        Image.open(ade / "annotations_detectron2" / "validation" / "ADE_validation_1.png")
    )
    assert out.tolist() == [[255, 0, 149]]
    assert tool.prepare_ade20k(str(ade)) == ["skipped", "skipped"]


def _fake_cityscapes_gt(city_root):
    gt = city_root / "gtFine" / "train" / "aachen"
    gt.mkdir(parents=True)
    polygons = {
        "imgHeight": 6,
        "imgWidth": 8,
        "objects": [
            {"label": "road", "polygon": [[0, 3], [7, 3], [7, 5], [0, 5]]},
            {"label": "car", "polygon": [[1, 0], [3, 0], [3, 2], [1, 2]]},
            {"label": "license plate", "polygon": [[6, 0], [7, 0], [7, 1], [6, 1]]},
        ],
    }
    (gt / "aachen_000000_000019_gtFine_polygons.json").write_text(json.dumps(polygons))
    ids = np.zeros((6, 8), np.uint8)  # unlabeled (id 0)
    ids[3:] = 7  # road
    ids[:3, 1:4] = 26  # car
    _save(gt / "aachen_000000_000019_gtFine_labelIds.png", ids)
    return gt / "aachen_000000_000019_gtFine_labelTrainIds.png"


def test_prepare_cityscapes_train_ids(tmp_path):
    pytest.importorskip("cityscapesscripts")
    tool = _tool("prepare_cityscapes")
    out_file = _fake_cityscapes_gt(tmp_path / "cityscapes")
    assert tool.main(["--cityscapes", str(tmp_path / "cityscapes"), "--splits", "train"]) == 0
    from_polygons = np.asarray(Image.open(out_file))
    assert from_polygons[4, 0] == 0 and from_polygons[1, 2] == 13 and from_polygons[0, 7] == 255
    assert set(np.unique(from_polygons).tolist()) <= {0, 13, 255}
    assert (
        tool.main(
            [
                "--cityscapes",
                str(tmp_path / "cityscapes"),
                "--splits",
                "train",
                "--source",
                "label-ids",
                "--overwrite",
            ]
        )
        == 0
    )
    from_ids = np.asarray(Image.open(out_file))
    assert from_ids[4, 0] == 0 and from_ids[1, 2] == 13 and from_ids[0, 0] == 255
    assert tool.main(["--cityscapes", str(tmp_path / "empty")]) == 1


def test_prepare_cityscapes_without_cityscapesscripts(monkeypatch):
    import sys

    tool = _tool("prepare_cityscapes")
    monkeypatch.setitem(sys.modules, "cityscapesscripts", None)  # import now raises ImportError
    with pytest.raises(SystemExit, match="pip install cityscapesscripts"):
        tool.main([])
