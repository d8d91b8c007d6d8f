"""The one registration helper (gmmseg.data.catalog), the one entry that registers every project
dataset, and the listing and official sizes the dataset check takes from the catalog."""

import importlib.util
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from gmmseg.data import catalog, register_all_datasets
from gmmseg.data.check import check_sem_seg_dataset

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


@pytest.fixture
def names():
    """Dataset names of a test, forgotten afterwards."""
    used = []
    yield used
    catalog.unregister_datasets(used)


def _save(path, array):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(str(path))


def test_register_dataset_is_lazy_and_replaces_dicts_and_metadata(names):
    calls = []

    def load():
        calls.append(1)
        return [{"file_name": "a.png"}]

    names.append("catalog_test_set")
    assert (
        catalog.register_dataset(
            "catalog_test_set", load, {"stuff_classes": ["x", "y"], "thing": 1}
        )
        == names[0]
    )
    assert calls == []  # nothing read at registration
    assert DatasetCatalog.get("catalog_test_set") == [{"file_name": "a.png"}] and calls == [1]
    assert MetadataCatalog.get("catalog_test_set").stuff_classes == ["x", "y"]

    # again: the loader and the whole metadata are replaced (no stale key, no "already registered")
    catalog.register_dataset(
        "catalog_test_set", lambda: [], {"stuff_classes": ["z"]}, official_size=7
    )
    assert DatasetCatalog.get("catalog_test_set") == []
    meta = MetadataCatalog.get("catalog_test_set").as_dict()
    assert meta["stuff_classes"] == ["z"] and "thing" not in meta
    assert catalog.official_size("catalog_test_set") == 7
    catalog.register_dataset("catalog_test_set", lambda: [], {"stuff_classes": ["z"]})
    assert catalog.official_size("catalog_test_set") is None  # not carried over from the old entry

    with pytest.raises(TypeError, match="catalog_test_set"):
        catalog.register_dataset("catalog_test_set", [{"file_name": "a.png"}], {})
    with pytest.raises(ValueError, match="catalog_bad_size"):
        catalog.declare_official_sizes({"catalog_bad_size": 0})


def test_unregister_datasets_forgets_both_catalogs(names):
    names.append("catalog_test_gone")
    catalog.register_dataset("catalog_test_gone", lambda: [], {"ignore_label": 255})
    catalog.unregister_datasets(["catalog_test_gone", "catalog_never_registered"])
    assert (
        "catalog_test_gone" not in DatasetCatalog.list()
        and "catalog_test_gone" not in MetadataCatalog
    )


def test_semantic_segmentation_listing_comes_from_the_catalog(names):
    names += ["catalog_sem", "catalog_plain", "catalog_instances", "catalog_anomaly"]
    catalog.register_dataset(
        "catalog_sem", list, {"stuff_classes": ["a"], "evaluator_type": "sem_seg"}
    )
    catalog.register_dataset(
        "catalog_plain", list, {"stuff_classes": ["a"], "ignore_label": 255}
    )  # a user's
    catalog.register_dataset(
        "catalog_instances", list, {"stuff_classes": ["a"], "evaluator_type": "coco"}
    )
    catalog.register_dataset(
        "catalog_anomaly", list, {"evaluator_type": "anomaly", "anomaly_eval": True}
    )
    DatasetCatalog.register("catalog_no_meta", list)
    names.append("catalog_no_meta")
    listed = catalog.semantic_segmentation_datasets()
    assert "catalog_sem" in listed and "catalog_plain" in listed
    assert not {"catalog_instances", "catalog_anomaly", "catalog_no_meta"} & set(listed)
    assert "catalog_no_meta" not in MetadataCatalog  # listing creates no metadata entry
    assert {
        "camvid_val",
        "coco_stuff_10k_sem_seg_test",
        "gmmseg_demo_val",
        "ade20k_sem_seg_val",
    } <= set(listed)
    assert listed == sorted(listed)


def test_official_sizes_come_with_the_registrations_and_drive_the_count_check(tmp_path, names):
    assert (
        catalog.official_size("camvid_val") == 101
        and catalog.official_size("camvid_openset_test") == 233
    )
    assert catalog.official_size("coco_stuff_164k_sem_seg_val") == 5000
    assert catalog.official_size("cityscapes_fine_sem_seg_val") == 500
    assert catalog.official_size("gmmseg_demo_train") is None  # sizes are a generation setting

    image, label = tmp_path / "a.png", tmp_path / "a_label.png"
    _save(image, np.zeros((4, 4, 3)))
    _save(label, np.zeros((4, 4)))
    names.append("catalog_counted")
    record = {"file_name": str(image), "sem_seg_file_name": str(label)}
    catalog.register_dataset(
        "catalog_counted", lambda: [record] * 2, {"stuff_classes": ["a"]}, official_size=3
    )
    report = check_sem_seg_dataset("catalog_counted")
    assert report.expected_count == 3 and [p.kind for p in report.problems] == ["count"]
    assert check_sem_seg_dataset("catalog_counted", expected_count=0).ok


def test_register_all_datasets_takes_one_root_for_every_project_dataset(tmp_path):
    _save(tmp_path / "camvid" / "val" / "images" / "x.png", np.zeros((3, 5, 3)))
    _save(tmp_path / "camvid" / "val" / "labels" / "x.png", np.zeros((3, 5)))
    _save(tmp_path / "camvid_static" / "val" / "images" / "y.png", np.zeros((2, 2, 3)))
    _save(tmp_path / "camvid_static" / "val" / "labels" / "y.png", np.ones((2, 2)))
    try:
        names = register_all_datasets(str(tmp_path))
        assert len(names) == len(set(names))  # each name once
        for name in (
            "gmmseg_demo_train",
            "camvid_openset_val",
            "road_anomaly",
            "coco_stuff_10k_sem_seg_train",
        ):
            assert name in names
        assert names[-5:] == [
            "ade20k_sem_seg_train",
            "ade20k_sem_seg_val",
            "cityscapes_fine_sem_seg_train",
            "cityscapes_fine_sem_seg_val",
            "cityscapes_fine_sem_seg_test",
        ]
        assert [d["file_name"] for d in DatasetCatalog.get("camvid_val")] == [
            str(tmp_path / "camvid" / "val" / "images" / "x.png")
        ]
        assert DatasetCatalog.get("camvid_static_val")[0]["image_id"] == "y"
        assert MetadataCatalog.get("coco_stuff_10k_sem_seg_test").image_root.startswith(
            str(tmp_path)
        )
        assert MetadataCatalog.get("ade20k_sem_seg_val").image_root.startswith(str(tmp_path))
    finally:
        register_all_datasets()


def test_check_dataset_list_prints_the_catalog(capsys, names):
    spec = importlib.util.spec_from_file_location(
        "_check_dataset_list", os.path.join(TOOLS, "check_dataset.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    names.append("catalog_listed_by_the_tool")
    catalog.register_dataset(
        "catalog_listed_by_the_tool", list, {"stuff_classes": ["a", "b"]}, official_size=4
    )
    assert tool.main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "catalog_listed_by_the_tool  (2 classes, 4 images)" in lines
    assert "camvid_val  (11 classes, 101 images)" in lines
    assert "gmmseg_demo_val  (6 classes)" in lines
    assert not any(
        line.startswith("road_anomaly") for line in lines
    )  # anomaly-only: nothing to check
