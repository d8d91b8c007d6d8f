"""DATASETS.FOLDER (gmmseg/data/folder_dataset.py) and --register (gmmseg/data/registration_modules.py):
what gets registered, and the errors that name the key, the file or the value."""

import os

import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from gmmseg import add_gmmseg_config
from gmmseg.data.folder_dataset import setup_folder_dataset
from gmmseg.data.mapper import SemSegDatasetMapper
from gmmseg.data.registration_modules import import_registration_modules


def _folder(root, classes=("a", "b"), labels=(0, 1, 7)):
    for split in ("train", "val"):
        os.makedirs(root / split / "images", exist_ok=True)
        os.makedirs(root / split / "labels", exist_ok=True)
        label = np.array([list(labels) * 2] * 4, np.uint8)
        Image.fromarray(np.zeros(label.shape + (3,), np.uint8)).save(
            root / split / "images" / "x.jpg"
        )
        Image.fromarray(label).save(root / split / "labels" / "x.png")
    if classes is not None:
        (root / "classes.txt").write_text("\n".join(classes) + "\n\n")
    return root


def _cfg(root, *opts):
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.merge_from_list(
        [
            "DATASETS.FOLDER.NAME",
            "unit_folder",
            "DATASETS.FOLDER.ROOT",
            str(root),
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
            "0",
            *opts,
        ]
    )
    return cfg


def test_registers_splits_with_evaluation_metadata_and_void_mapped_to_255(tmp_path):
    cfg = _cfg(_folder(tmp_path), "DATASETS.FOLDER.IGNORE_LABEL", "7")
    assert setup_folder_dataset(cfg) == ["unit_folder_train", "unit_folder_val"]
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 2  # from classes.txt (the blank line is skipped)
    meta = MetadataCatalog.get("unit_folder_val")
    assert (
        meta.stuff_classes == ["a", "b"]
        and meta.ignore_label == 255
        and meta.evaluator_type == "sem_seg"
    )
    (d,) = DatasetCatalog.get("unit_folder_train")
    assert d["sem_seg_file_name"].endswith(os.path.join("train", "labels", "x.png")) and (
        d["height"],
        d["width"],
    ) == (
        4,
        6,
    )
    mapper = SemSegDatasetMapper(True, augmentations=[], image_format="RGB", num_classes=2)
    assert sorted(mapper(d)["sem_seg"].unique().tolist()) == [0, 1, 255]


def test_class_names_from_the_config_and_explicit_count(tmp_path):
    cfg = _cfg(
        _folder(tmp_path, classes=None, labels=(0, 1, 2)),
        "DATASETS.FOLDER.CLASSES",
        "('x', 'y', 'z')",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
        "3",
    )
    setup_folder_dataset(cfg)
    assert MetadataCatalog.get("unit_folder_train").stuff_classes == ["x", "y", "z"]


@pytest.mark.parametrize(
    "opts, error, words",
    [
        (["DATASETS.FOLDER.ROOT", ""], ValueError, ["DATASETS.FOLDER.ROOT is empty"]),
        (
            ["DATASETS.FOLDER.ROOT", "/nonexistent/mine"],
            FileNotFoundError,
            ["/nonexistent/mine", "not a folder"],
        ),
        (
            ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5"],
            ValueError,
            ["NUM_CLASSES is 5", "2 classes", "set it to 2"],
        ),
        (["DATASETS.FOLDER.IGNORE_LABEL", "1"], ValueError, ["IGNORE_LABEL 1", "'b'"]),
        (["DATASETS.FOLDER.CLASSES", "('a', 'a')"], ValueError, ["not unique"]),
    ],
)
def test_configuration_errors_name_the_key_and_value(tmp_path, opts, error, words):
    cfg = _cfg(_folder(tmp_path), *opts)
    with pytest.raises(error) as e:
        setup_folder_dataset(cfg)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_missing_class_names_and_missing_split_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="classes.txt"):
        setup_folder_dataset(_cfg(_folder(tmp_path, classes=None)))
    cfg = _cfg(_folder(tmp_path), "DATASETS.FOLDER.SPLITS", "('train', 'test')")
    setup_folder_dataset(cfg)
    with pytest.raises(FileNotFoundError, match=r"unit_folder_test.*test/images"):
        DatasetCatalog.get("unit_folder_test")


def test_no_folder_dataset_needs_an_explicit_class_count():
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    assert setup_folder_dataset(cfg) == []
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 0
    with pytest.raises(ValueError, match="NUM_CLASSES is 0"):
        setup_folder_dataset(cfg)


def test_register_imports_files_and_modules_and_names_what_is_missing(tmp_path, monkeypatch):
    (tmp_path / "unit_registration_mod.py").write_text("REGISTERED = True\n")
    (mod,) = import_registration_modules([str(tmp_path / "unit_registration_mod.py")])
    assert mod.REGISTERED
    monkeypatch.syspath_prepend(str(tmp_path))
    (mod,) = import_registration_modules(["unit_registration_mod"])
    assert mod.REGISTERED
    with pytest.raises(ImportError, match="no such file"):
        import_registration_modules([str(tmp_path / "absent.py")])
    with pytest.raises(ImportError, match="no module named 'no_such_registration_module'"):
        import_registration_modules(["no_such_registration_module"])


def test_check_dataset_reads_a_config_and_applies_the_void_mapping(tmp_path, capsys):
    """tools/check_dataset.py --config-file: the folder dataset is registered and its void 7 is not an error."""
    import importlib.util

    tools = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")
    spec = importlib.util.spec_from_file_location(
        "_check_dataset_tool", os.path.join(tools, "check_dataset.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    config = os.path.join(os.path.dirname(tools), "configs", "user_data", "fpn_r50_gmm.yaml")
    root = _folder(tmp_path)
    argv = [
        "--config-file",
        config,
        "--expected-count",
        "0",
        "--no-progress",
        "DATASETS.FOLDER.ROOT",
        str(root),
    ]
    assert tool.main(argv + ["DATASETS.FOLDER.IGNORE_LABEL", "7"]) == 0
    out = capsys.readouterr().out
    assert "user_data_train" in out and "user_data_val" in out
    assert tool.main(argv) == 1  # void left at 255: the stored 7 is reported
    assert "label ids [7] outside [0, 2)" in capsys.readouterr().out
