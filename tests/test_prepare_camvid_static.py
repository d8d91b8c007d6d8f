"""tools/prepare_camvid_static.py and gmmseg.data.pasted_objects: the pasted pixels, the anomaly
mask's three values, which COCO instances are used, determinism, and the registered dataset."""

import importlib.util
import json
import os

import numpy as np
import pytest
from PIL import Image

from gmmseg.data.pasted_objects import PastedObject, coco_objects, paste_object

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRAY, RED, BLUE = (100, 100, 100), (255, 0, 0), (0, 0, 255)


def _tool():
    spec = importlib.util.spec_from_file_location(
        "prepare_camvid_static", os.path.join(ROOT, "tools", "prepare_camvid_static.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _red_square_on_blue():
    """A 10 x 10 crop: a red 6 x 6 object (rows and columns 2..7) on its source's blue background."""
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[:] = BLUE
    mask = np.zeros((10, 10), bool)
    mask[2:8, 2:8] = True
    rgb[mask] = RED
    return PastedObject(rgb, mask, "kite", {})


def test_hard_paste_replaces_exactly_the_mask_and_keeps_void():
    image = np.full((40, 60, 3), GRAY, np.uint8)
    known = np.zeros((40, 60), np.uint8)
    known[:5, :5] = 255
    out, anomaly, where = paste_object(
        image,
        known,
        _red_square_on_blue(),
        np.random.default_rng(0),
        position=(20, 30, 10, 10),
        feather_sigma=0,
    )
    inside = np.zeros((40, 60), bool)
    inside[22:28, 32:38] = True
    assert (anomaly[inside] == 1).all() and (out[inside] == RED).all()
    assert (out[~inside] == GRAY).all()  # nothing of the blue source background
    assert (anomaly[:5, :5] == 255).all()
    assert ((anomaly == 0) == (~inside & (known == 0))).all()
    assert where == {"top": 20, "left": 30, "height": 10, "width": 10}


def test_feathered_paste_blends_object_colours_only_and_voids_the_soft_edge():
    image = np.full((40, 60, 3), GRAY, np.uint8)
    known = np.zeros((40, 60), np.uint8)
    out, anomaly, _ = paste_object(
        image,
        known,
        _red_square_on_blue(),
        np.random.default_rng(0),
        position=(20, 30, 10, 10),
        feather_sigma=1.5,
    )
    # the blur of a square at sigma 1.5: its 0.5 level is the square's edge, the alpha of its
    # corners is 0.25 (a quarter of the kernel), so the corners fall in the soft edge
    core = np.zeros((40, 60), bool)
    core[23:27, 33:37] = True
    assert (anomaly[core] == 1).all()
    assert anomaly[22, 32] == 255 and anomaly[22, 34] == 1
    assert set(np.unique(anomaly)) == {0, 1, 255}
    # blue never leaks in: every pixel lies between gray and red
    assert out[..., 2].max() <= 100 and out[..., 0].min() >= 100
    far = np.ones((40, 60), bool)
    far[20 - 6 : 30 + 6, 30 - 6 : 40 + 6] = False  # beyond 3 sigma + 1 of the box: untouched
    assert (out[far] == GRAY).all() and (anomaly[far] == 0).all()
    assert ((anomaly == 1) <= (out[..., 0] > 177)).all()  # alpha >= 0.5: at least half red


def _coco_source(tmp_path):
    """Two source images and a COCO json: a kite (used), a person (road-scene class), a cat below
    the area threshold, and a crowd."""
    src = tmp_path / "coco"
    (src / "images").mkdir(parents=True)
    (src / "annotations").mkdir()
    img = np.zeros((30, 40, 3), np.uint8)
    img[5:25, 10:30] = (10, 200, 30)
    Image.fromarray(img).save(src / "images" / "a.jpg", quality=100)
    Image.fromarray(img).save(src / "images" / "b.png")

    def poly(x0, y0, x1, y1):
        return [[x0, y0, x1, y0, x1, y1, x0, y1]]

    anns = [
        {
            "id": 1,
            "image_id": 2,
            "category_id": 38,
            "segmentation": poly(10, 5, 30, 25),
            "area": 400,
            "bbox": [10, 5, 20, 20],
            "iscrowd": 0,
        },
        {
            "id": 2,
            "image_id": 2,
            "category_id": 1,
            "segmentation": poly(0, 0, 20, 20),
            "area": 400,
            "bbox": [0, 0, 20, 20],
            "iscrowd": 0,
        },
        {
            "id": 3,
            "image_id": 1,
            "category_id": 17,
            "segmentation": poly(0, 0, 5, 5),
            "area": 25,
            "bbox": [0, 0, 5, 5],
            "iscrowd": 0,
        },
        {
            "id": 4,
            "image_id": 1,
            "category_id": 38,
            "segmentation": {"counts": [0, 1200], "size": [30, 40]},
            "area": 1200,
            "bbox": [0, 0, 40, 30],
            "iscrowd": 1,
        },
    ]
    coco = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "height": 30, "width": 40, "license": 4},
            {"id": 2, "file_name": "b.png", "height": 30, "width": 40, "license": 4},
        ],
        "annotations": anns,
        "categories": [
            {"id": 1, "name": "person"},
            {"id": 17, "name": "cat"},
            {"id": 38, "name": "kite"},
        ]
        + [
            {"id": 100 + i, "name": n}
            for i, n in enumerate(
                (
                    "bicycle",
                    "car",
                    "motorcycle",
                    "bus",
                    "train",
                    "truck",
                    "boat",
                    "traffic light",
                    "fire hydrant",
                    "stop sign",
                    "parking meter",
                    "bench",
                    "potted plant",
                )
            )
        ],
    }
    (src / "annotations" / "instances.json").write_text(json.dumps(coco))
    return src


def test_coco_objects_filter_and_crop(tmp_path):
    src = _coco_source(tmp_path)
    objs = coco_objects(
        str(src / "annotations" / "instances.json"), str(src / "images"), min_area=100
    )
    assert [(o.category, o.source["annotation_id"]) for o in objs] == [("kite", 1)]
    kite = objs[0]
    assert kite.mask.all() and kite.mask.shape == kite.rgb.shape[:2]
    assert (kite.rgb == (10, 200, 30)).all()  # the crop of the lossless source image
    assert 20 <= kite.mask.shape[0] <= 21  # pycocotools rasterises the polygon's 20 x 20 box


def _camvid_val(tmp_path, n=3):
    val = tmp_path / "camvid" / "val"
    (val / "images").mkdir(parents=True)
    (val / "labels").mkdir()
    for i in range(n):
        Image.fromarray(np.full((60, 80, 3), 90 + i, np.uint8)).save(val / "images" / f"f{i}.png")
        label = np.full((60, 80), 3, np.uint8)  # road
        label[:10] = 9  # pedestrian: withheld in the open set
        label[10:15] = 10  # bicyclist
        label[15:20] = 255
        Image.fromarray(label).save(val / "labels" / f"f{i}.png")
    return val


def test_tool_writes_masks_manifest_deterministically_and_registers(tmp_path, monkeypatch):
    src = _coco_source(tmp_path)
    val = _camvid_val(tmp_path)
    tool = _tool()
    outputs = []
    for run in range(2):
        out = tmp_path / f"out{run}" / "camvid_static"
        tool.main(
            ["--source", str(src), "--camvid", str(val), "--output", str(out), "--min-area", "100"]
        )
        outputs.append(out)
    manifest = json.loads((outputs[0] / "manifest.json").read_text())
    assert manifest["objects"] == 1 and set(manifest["images"]) == {"f0", "f1", "f2"}
    for stem, entry in manifest["images"].items():
        assert entry["category"] == "kite" and entry["annotation_id"] == 1
        mask = np.asarray(Image.open(outputs[0] / "val" / "labels" / f"{stem}.png"))
        assert (mask == 1).sum() == entry["anomaly_pixels"] > 0
        covered = mask == 1
        assert (mask[:20][~covered[:20]] == 255).all()  # withheld classes and void stay void
        assert set(np.unique(mask[20:])) <= {0, 1, 255}
        box = (
            slice(entry["top"], entry["top"] + entry["height"]),
            slice(entry["left"], entry["left"] + entry["width"]),
        )
        outside = np.ones_like(covered)
        outside[box] = False
        assert not covered[outside].any()
        for name in ("images", "labels"):  # the same seed writes the same files
            a = np.asarray(Image.open(outputs[0] / "val" / name / f"{stem}.png"))
            b = np.asarray(Image.open(outputs[1] / "val" / name / f"{stem}.png"))
            assert (a == b).all()
    from detectron2.data import DatasetCatalog

    from gmmseg.data.anomaly_datasets import load_anomaly_mask

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "out0"))
    dicts = DatasetCatalog.get("camvid_static_val")
    assert [d["image_id"] for d in dicts] == ["f0", "f1", "f2"]
    m = load_anomaly_mask(dicts[0]["anomaly_mask_file_name"], dicts[0]["anomaly_mask_convention"])
    assert (m == 1).sum() == manifest["images"]["f0"]["anomaly_pixels"]
    # --camera-shift: the same images through other cameras, the same labels, registered apart
    tool.main(["--camera-shift", "--output", str(outputs[0])])
    shifted = tmp_path / "out0" / "camvid_static_shift"
    cams = json.loads((shifted / "manifest.json").read_text())["images"]
    assert set(cams) == {"f0", "f1", "f2"}
    for stem in cams:
        a = np.asarray(Image.open(outputs[0] / "val" / "images" / f"{stem}.png"))
        b = np.asarray(Image.open(shifted / "val" / "images" / f"{stem}.png"))
        assert a.shape == b.shape and not (a == b).all()
        la, lb = (
            np.asarray(Image.open(d / "val" / "labels" / f"{stem}.png"))
            for d in (outputs[0], shifted)
        )
        assert (la == lb).all()
    assert [d["image_id"] for d in DatasetCatalog.get("camvid_static_shift_val")] == [
        "f0",
        "f1",
        "f2",
    ]


def test_camera_shift_of_a_flat_image_by_hand():
    # a flat grey image stays flat through the resize and the blur: only the gains act on it
    from gmmseg.data.camera_shift import camera_shift

    image = np.full((30, 40, 3), 100, np.uint8)
    out, cam = camera_shift(image, np.random.default_rng(3))
    want = np.clip(np.rint(100 * cam["gain"] * np.asarray(cam["channel_gains"])), 0, 255)
    assert out.shape == image.shape and (out == want.astype(np.uint8)).all()
    again, cam2 = camera_shift(image, np.random.default_rng(3))
    assert cam2 == cam and (again == out).all()
    with pytest.raises(ValueError, match="uint8 image"):
        camera_shift(image.astype(np.float32), np.random.default_rng(0))


def test_bad_camvid_label_is_named(tmp_path):
    src = _coco_source(tmp_path)
    val = _camvid_val(tmp_path, n=1)
    Image.fromarray(np.full((60, 80), 20, np.uint8)).save(val / "labels" / "f0.png")
    with pytest.raises(ValueError, match=r"f0\.png.*\[20\]"):
        _tool().main(
            [
                "--source",
                str(src),
                "--camvid",
                str(val),
                "--output",
                str(tmp_path / "o"),
                "--min-area",
                "100",
            ]
        )


def test_missing_dataset_names_the_layout(tmp_path, monkeypatch):
    from detectron2.data import DatasetCatalog

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="prepare_camvid_static"):
        DatasetCatalog.get("camvid_static_val")
