"""What the dataset preparation tools share (gmmseg.data.preparation): the default folder under the
one datasets root, the lookup-table conversion of a label file, and the end of every tool."""

import os

import numpy as np
import pytest
from PIL import Image

from gmmseg.data.preparation import (
    dataset_folder,
    read_label_map,
    remap_label_file,
    run_preparation,
)


def _save(path, array):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(str(path))


def test_dataset_folder_reads_the_one_root(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert dataset_folder("camvid") == os.path.join(str(tmp_path), "camvid")
    assert dataset_folder("camvid", "/elsewhere/camvid") == "/elsewhere/camvid"
    monkeypatch.delenv("DETECTRON2_DATASETS")
    assert dataset_folder("coco") == os.path.join("datasets", "coco")


def test_remap_label_file_writes_the_lookup_and_skips_existing_outputs(tmp_path):
    src, dst = tmp_path / "in.png", tmp_path / "out" / "in.png"
    _save(src, [[0, 1, 2], [3, 255, 1]])
    lut = np.arange(256, dtype=np.uint8)
    lut[[1, 3]] = [10, 255]
    assert remap_label_file((str(src), str(dst), lut, False, "test map")) == "written"
    assert np.asarray(Image.open(dst)).tolist() == [[0, 10, 2], [255, 255, 10]]
    assert (
        remap_label_file((str(src), str(dst), np.zeros(256, np.uint8), False, "test map"))
        == "skipped"
    )
    assert np.asarray(Image.open(dst))[0, 1] == 10  # kept
    assert (
        remap_label_file((str(src), str(dst), np.zeros(256, np.uint8), True, "test map"))
        == "written"
    )
    assert np.asarray(Image.open(dst)).max() == 0

    rgb = tmp_path / "rgb.png"
    _save(rgb, np.zeros((2, 2, 3)))
    with pytest.raises(
        ValueError,
        match=r"rgb\.png: expected a single-channel uint8 test map, got uint8 \(2, 2, 3\)",
    ):
        read_label_map(str(rgb), "test map")


def test_run_preparation_reports_counts_or_one_error_line(capsys):
    assert run_preparation(lambda: ["written", "skipped", "written"], "label maps", "/d") == 0
    assert capsys.readouterr().out.strip() == "2 label maps written, 1 already present, under /d"

    def missing():
        raise FileNotFoundError("/d/x does not exist")

    assert run_preparation(missing, "label maps", "/d") == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == "error: /d/x does not exist" and captured.out == ""
