"""`--eval-only` names a class labelled in the set that the model never predicts (IoU 0); the
evaluator reads label maps with the project's loader (numpy 1 and 2)."""

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from gmmseg.evaluation import CheckedSemSegEvaluator, never_predicted_classes


def test_never_predicted_classes_by_hand():
    # [prediction, ground truth], K = 3 + the ignore row/column: class 1 labelled (5 pixels) and
    # never predicted; class 2 predicted (3 pixels) but not labelled; ignored pixels do not count
    conf = np.zeros((4, 4), dtype=np.int64)
    conf[0, 0], conf[0, 1], conf[2, 0], conf[3, 1], conf[1, 3] = 10, 5, 3, 7, 4
    assert never_predicted_classes(conf) == [1]


def test_the_evaluator_warns_and_reports_the_class(tmp_path, caplog):
    name = "never_predicted_test"
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], dtype=np.uint8)
    Image.fromarray(gt).save(tmp_path / "gt.png")
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(
        name, lambda: [{"file_name": "img.png", "sem_seg_file_name": str(tmp_path / "gt.png")}]
    )
    MetadataCatalog.get(name).set(stuff_classes=["road", "bicyclist", "sky"], ignore_label=255)
    try:
        ev = CheckedSemSegEvaluator(name, distributed=False)
        ev.reset()
        scores = torch.zeros(3, 2, 4)
        scores[0, :, :2] = 1  # road on the left half (where road and sky are)
        scores[2, :, 2:] = (
            1  # sky on the right half (the bicyclist's pixels): bicyclist never predicted
        )
        ev.process([{"file_name": "img.png"}], [{"sem_seg": scores}])
        with caplog.at_level("WARNING", logger="gmmseg.evaluation.sem_seg"):
            res = ev.evaluate()
        # sky: in the wrong places, but predicted
        assert "predicts no pixel of bicyclist although the set labels 3 pixels" in caplog.text
        assert res["sem_seg"]["IoU-bicyclist"] == 0.0
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _register(name, tmp_path, gt, **meta):
    Image.fromarray(gt).save(tmp_path / "gt.png")
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(
        name, lambda: [{"file_name": "img.png", "sem_seg_file_name": str(tmp_path / "gt.png")}]
    )
    MetadataCatalog.get(name).set(**meta)


def test_the_evaluator_reads_labels_with_the_datasets_remap_and_names_a_bad_file(tmp_path):
    # raw id 7 is class 1 after the dataset's label_remap; the prediction is right everywhere
    name = "evaluator_loader_test"
    _register(
        name, tmp_path, np.array([[0, 7], [7, 255]], np.uint8), stuff_classes=["a", "b"], ignore_label=255,
        label_remap={7: 1},
    )  # fmt: skip
    try:
        ev = CheckedSemSegEvaluator(name, distributed=False)
        ev.reset()
        scores = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]]])
        ev.process([{"file_name": "img.png"}], [{"sem_seg": scores}])
        res = ev.evaluate()["sem_seg"]
        assert res["mIoU"] == 100.0 and res["IoU-a"] == 100.0 and res["IoU-b"] == 100.0
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    _register(
        name, tmp_path, np.array([[0, 9]], np.uint8), stuff_classes=["a", "b"], ignore_label=255
    )
    try:
        ev = CheckedSemSegEvaluator(name, distributed=False)
        ev.reset()
        with pytest.raises(ValueError, match=r"gt\.png.*\[9\]"):
            ev.process([{"file_name": "img.png"}], [{"sem_seg": torch.zeros(2, 1, 2)}])
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
