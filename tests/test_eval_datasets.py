"""Anomaly benchmark registrations on tiny fakes of each release layout, the Fishyscapes Static
preparation, and the evaluator choice."""

import importlib.util
import json
import os

import numpy as np
import pytest
from PIL import Image

from gmmseg.data import anomaly_datasets as ad

H, W = 8, 16
TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


def _prepare_fs_static_tool():
    path = os.path.join(TOOLS, "prepare_fishyscapes_static.py")
    spec = importlib.util.spec_from_file_location("_prepare_fishyscapes_static", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


def _rgb(seed):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _mask(values):
    """A label map using each of `values` in a band of columns."""
    m = np.zeros((H, W), np.uint8)
    for i, v in enumerate(values):
        m[:, i * W // len(values) : (i + 1) * W // len(values)] = v
    return m


def make_fs_lost_and_found(root):
    ids = ["04_Maurener_Weg_8_000000_000030", "13_Elly_Beinhorn_Str_000002_000090"]
    for i, (laf_id, split) in enumerate(zip(ids, ["train", "test"])):
        scene = "_".join(laf_id.split("_")[:-2])
        _png(f"{root}/lost_and_found/leftImg8bit/{split}/{scene}/{laf_id}_leftImg8bit.png", _rgb(i))
        _png(
            f"{root}/fishyscapes/fishyscapes_lostandfound/{i:04d}_{laf_id}_labels.png",
            _mask([0, 1, 255]),
        )
    return ids


def make_fs_static(root):
    cs_ids = ["frankfurt_000000_000294", "munster_000010_000019"]
    overlays = []
    for i, cs_id in enumerate(cs_ids):
        city = cs_id.split("_")[0]
        _png(f"{root}/cityscapes/leftImg8bit/val/{city}/{cs_id}_leftImg8bit.png", _rgb(10 + i))
        overlay = np.random.default_rng(20 + i).integers(-300, 300, (H, W, 3))
        overlays.append(overlay)
        os.makedirs(f"{root}/fishyscapes/fs_val_v3", exist_ok=True)
        np.savez(f"{root}/fishyscapes/fs_val_v3/{i:04d}_{cs_id}_rgb.npz", rgb=overlay)
        _png(f"{root}/fishyscapes/fs_val_v3/{i:04d}_{cs_id}_labels.png", _mask([0, 1, 255]))
    return cs_ids, overlays


def make_road_anomaly(root):
    names = ["animals01_calves.jpg", "cones02_road.jpg"]
    base = f"{root}/RoadAnomaly_jpg"
    os.makedirs(f"{base}/frames", exist_ok=True)
    with open(f"{base}/frame_list.json", "w") as f:
        json.dump(names, f)
    for i, name in enumerate(names):
        Image.fromarray(_rgb(30 + i)).save(f"{base}/frames/{name}")
        _png(f"{base}/frames/{name[:-4]}.labels/labels_semantic.png", _mask([0, 1, 2, 255]))
    return names


def make_smiyc(root, track_dir, ext, frames):
    for i, frame in enumerate(frames):
        _png(f"{root}/{track_dir}/images/{frame}.{ext}", _rgb(40 + i))
        _png(f"{root}/{track_dir}/labels_masks/{frame}_labels_semantic.png", _mask([0, 1, 255]))
    # a test frame without labels is not part of the validation set
    _png(f"{root}/{track_dir}/images/test_frame.{ext}", _rgb(99))


@pytest.fixture
def fake_root(tmp_path, monkeypatch):
    root = str(tmp_path / "datasets")
    monkeypatch.setenv("DETECTRON2_DATASETS", root)
    return root


def test_all_layouts_register_and_convert(fake_root):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    make_fs_lost_and_found(fake_root)
    cs_ids, overlays = make_fs_static(fake_root)
    assert _prepare_fs_static_tool().main([]) == 0  # composes the Fishyscapes Static images
    make_road_anomaly(fake_root)
    make_smiyc(fake_root, "dataset_AnomalyTrack", "jpg", ["validation0000", "validation0001"])
    make_smiyc(fake_root, "dataset_ObstacleTrack", "webp", ["validation_1", "validation_2"])
    expected = {  # name -> (raw values in the fake label bands, our values)
        "fishyscapes_lost_and_found_val": ([0, 1, 255], [0, 1, 255]),
        "fishyscapes_static_val": ([0, 1, 255], [0, 1, 255]),
        "road_anomaly": ([0, 1, 2, 255], [0, 0, 1, 255]),
        "smiyc_road_anomaly21_val": ([0, 1, 255], [0, 1, 255]),
        "smiyc_road_obstacle21_val": ([0, 1, 255], [0, 1, 255]),
    }
    for name, (_, ours) in expected.items():
        assert name in DatasetCatalog.list()
        assert MetadataCatalog.get(name).anomaly_eval is True
        dicts = DatasetCatalog.get(name)
        assert len(dicts) == 2, name
        for d in dicts:
            assert os.path.isfile(d["file_name"]) and (d["height"], d["width"]) == (H, W)
            assert "sem_seg_file_name" not in d
            mask = ad.load_anomaly_mask(d["anomaly_mask_file_name"], d["anomaly_mask_convention"])
            np.testing.assert_array_equal(mask, _mask(ours))
    # Fishyscapes Static images are composed as clip(cityscapes + overlay)
    static = DatasetCatalog.get("fishyscapes_static_val")
    for d, cs_id, overlay in zip(static, cs_ids, overlays):
        base = np.asarray(
            Image.open(
                f"{fake_root}/cityscapes/leftImg8bit/val/{cs_id.split('_')[0]}/{cs_id}_leftImg8bit.png"
            ),
            np.int64,
        )
        np.testing.assert_array_equal(
            np.asarray(Image.open(d["file_name"])), np.clip(base + overlay, 0, 255).astype(np.uint8)
        )
    assert DatasetCatalog.get("smiyc_road_obstacle21_val")[0]["file_name"].endswith(".webp")


def test_fishyscapes_static_loading_reads_only_and_names_the_preparation(fake_root):
    from detectron2.data import DatasetCatalog

    cs_ids, overlays = make_fs_static(fake_root)
    composed = os.path.join(fake_root, "fishyscapes", "fs_val_v3_images")
    with pytest.raises(FileNotFoundError) as info:
        DatasetCatalog.get("fishyscapes_static_val")
    msg = str(info.value)
    assert os.path.join(composed, f"0000_{cs_ids[0]}.png") in msg
    assert "python tools/prepare_fishyscapes_static.py" in msg
    assert not os.path.exists(composed)  # loading wrote nothing

    tool = _prepare_fs_static_tool()
    assert tool.main(["--root", fake_root]) == 0
    image = os.path.join(composed, f"0001_{cs_ids[1]}.png")
    base = np.asarray(
        Image.open(f"{fake_root}/cityscapes/leftImg8bit/val/munster/{cs_ids[1]}_leftImg8bit.png"),
        np.int64,
    )
    np.testing.assert_array_equal(
        np.asarray(Image.open(image)), np.clip(base + overlays[1], 0, 255).astype(np.uint8)
    )
    mtime = os.path.getmtime(image)
    assert tool.prepare_fishyscapes_static(fake_root) == ["skipped", "skipped"]  # idempotent
    assert os.path.getmtime(image) == mtime
    records = DatasetCatalog.get("fishyscapes_static_val")
    assert [r["file_name"] for r in records] == sorted(
        os.path.join(composed, f) for f in os.listdir(composed)
    )
    assert [r["image_id"] for r in records] == ["0000", "0001"]


def test_fishyscapes_static_preparation_names_a_missing_input(fake_root):
    cs_ids, _ = make_fs_static(fake_root)
    missing = f"{fake_root}/cityscapes/leftImg8bit/val/munster/{cs_ids[1]}_leftImg8bit.png"
    os.remove(missing)
    tool = _prepare_fs_static_tool()
    with pytest.raises(FileNotFoundError, match=f"missing '{missing}'"):
        tool.prepare_fishyscapes_static(fake_root)
    assert not os.path.exists(
        os.path.join(fake_root, "fishyscapes", "fs_val_v3_images")
    )  # nothing half-written
    assert tool.main([]) == 1


@pytest.mark.parametrize(
    "name,expected",
    [
        ("fishyscapes_lost_and_found_val", "fishyscapes_lostandfound"),
        ("fishyscapes_static_val", "fs_val_v3"),
        ("road_anomaly", "RoadAnomaly_jpg/frame_list.json"),
        ("smiyc_road_anomaly21_val", "dataset_AnomalyTrack/labels_masks"),
        ("smiyc_road_obstacle21_val", "dataset_ObstacleTrack/labels_masks"),
    ],
)
def test_missing_data_names_the_layout(fake_root, name, expected):
    from detectron2.data import DatasetCatalog

    with pytest.raises(FileNotFoundError) as info:
        DatasetCatalog.get(name)
    msg = str(info.value)
    assert expected in msg and "Expected layout" in msg and "DETECTRON2_DATASETS" in msg


def test_missing_laf_image_is_reported(fake_root):
    make_fs_lost_and_found(fake_root)
    os.remove(
        f"{fake_root}/lost_and_found/leftImg8bit/train/04_Maurener_Weg_8/"
        "04_Maurener_Weg_8_000000_000030_leftImg8bit.png"
    )
    with pytest.raises(FileNotFoundError, match="Lost and Found image"):
        ad.load_fishyscapes_lost_and_found()


def test_unknown_label_value_is_rejected(tmp_path):
    path = str(tmp_path / "m.png")
    _png(path, _mask([0, 1, 3]))
    with pytest.raises(ValueError, match=r"\[3\].*'smiyc'"):
        ad.load_anomaly_mask(path, "smiyc")
    np.testing.assert_array_equal(ad.load_anomaly_mask(path, "road_anomaly"), _mask([0, 0, 1]))
    with pytest.raises(KeyError, match="unknown anomaly mask convention"):
        ad.load_anomaly_mask(path, "nope")


# ---------------------------------------------------------------- which evaluators apply
def _cfg():
    from detectron2.config import get_cfg

    from gmmseg import add_gmmseg_config

    cfg = get_cfg()
    add_gmmseg_config(cfg)
    return cfg


def _register(name, dicts, **meta):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(**meta)


def test_build_open_world_evaluators(tmp_path):
    from gmmseg.evaluation import (
        AnomalyEvaluator,
        CalibrationEvaluator,
        build_open_world_evaluators,
    )

    sem = str(tmp_path / "sem.png")
    mask = str(tmp_path / "mask.png")
    _png(sem, np.zeros((H, W)))
    _png(mask, np.zeros((H, W)))
    cfg = _cfg()
    _register("test_ow_semseg", [{"file_name": "a", "sem_seg_file_name": sem}], ignore_label=255)
    _register("test_ow_anomaly_only", [{"file_name": "a", "anomaly_mask_file_name": mask}])
    _register(
        "test_ow_both",
        [{"file_name": "a", "sem_seg_file_name": sem, "anomaly_mask_file_name": mask}],
        has_anomaly_masks=True,
    )
    _register(
        "test_ow_flag_off",
        [{"file_name": "a", "sem_seg_file_name": sem, "anomaly_mask_file_name": mask}],
        anomaly_eval=False,
    )
    kinds = {
        name: [type(e) for e in build_open_world_evaluators(cfg, name, str(tmp_path))]
        for name in ("test_ow_semseg", "test_ow_anomaly_only", "test_ow_both", "test_ow_flag_off")
    }
    assert kinds == {
        "test_ow_semseg": [CalibrationEvaluator],
        "test_ow_anomaly_only": [AnomalyEvaluator],
        "test_ow_both": [CalibrationEvaluator, AnomalyEvaluator],
        "test_ow_flag_off": [CalibrationEvaluator],
    }
    cfg.TEST.OPEN_WORLD.ENABLED = False
    assert build_open_world_evaluators(cfg, "test_ow_both") == []
