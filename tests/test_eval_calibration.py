"""ECE / reliability diagram: hand-computed cases and the CalibrationEvaluator end-to-end."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from gmmseg.evaluation import CalibrationEvaluator, load_calibration_bins, plot_reliability_diagrams
from gmmseg.evaluation import calibration as calibration_module
from gmmseg.evaluation.metrics import calibration_bin_sums, expected_calibration_error


def test_ece_hand_case():
    # 10 pixels at confidence 0.9, 9 correct (calibrated); 10 at 0.6, 3 correct (gap 0.3)
    conf = np.r_[np.full(10, 0.9), np.full(10, 0.6)]
    correct = np.r_[np.arange(10) < 9, np.arange(10) < 3]
    e = expected_calibration_error(*calibration_bin_sums(conf, correct, 15))
    assert e["ECE"] == pytest.approx(0.5 * 0.0 + 0.5 * 0.3)
    assert e["MCE"] == pytest.approx(0.3)
    assert e["accuracy"] == pytest.approx(12 / 20) and e["confidence"] == pytest.approx(0.75)
    assert e["bin_count"].sum() == 20 and (e["bin_count"] > 0).sum() == 2
    assert np.isnan(e["bin_accuracy"][0])  # empty bins are NaN, not 0


def test_bin_edges():
    count, _, _ = calibration_bin_sums(np.array([0.0, 1 / 15 + 1e-9, 0.5, 1.0]), np.ones(4, bool), 15)
    # 0 -> bin 0, just above 1/15 -> bin 1, 0.5 -> bin 7 ((7/15, 8/15]), 1.0 -> last bin
    assert count[0] == 1 and count[1] == 1 and count[7] == 1 and count[14] == 1
    with pytest.raises(ValueError):
        calibration_bin_sums(np.array([1.5]), np.ones(1, bool))


def test_perfectly_calibrated_is_zero():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.2, 1.0, 200_000)
    correct = rng.random(conf.size) < conf
    e = expected_calibration_error(*calibration_bin_sums(conf, correct, 15))
    assert e["ECE"] < 0.01


H, W = 4, 6  # 24 pixels: 10 confident, 10 unsure, 4 void


def _register(tmp_path, name):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    gt = np.full(H * W, 255, np.uint8)
    gt[:10] = [0] * 9 + [1]  # predicted 0 at confidence 0.9: 9 of 10 correct
    gt[10:20] = [0] * 3 + [1] * 7  # predicted 0 at confidence 0.6: 3 of 10 correct
    path = str(tmp_path / f"{name}_gt.png")
    Image.fromarray(gt.reshape(H, W)).save(path)
    dicts = [{"file_name": "a.png", "sem_seg_file_name": path, "height": H, "width": W}]
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(ignore_label=255, stuff_classes=["a", "b"])
    return path


def _logits():
    p0 = torch.full((H * W,), 0.5)
    p0[:10], p0[10:20] = 0.9, 0.6
    p0[20:] = 0.99  # void pixels: must not count
    return torch.stack([p0.log(), (1 - p0).log()]).view(2, H, W)


def test_evaluator_end_to_end(tmp_path):
    _register(tmp_path, "test_eval_calib_fake")
    out = tmp_path / "out"
    ev = CalibrationEvaluator("test_eval_calib_fake", str(out), num_bins=15, distributed=False,
                              model_name="GMMSeg (test)")
    ev.reset()
    ev.process([{"file_name": "a.png"}], [{"sem_seg": _logits()}])
    res = ev.evaluate()["calibration"]
    assert res["ECE"] == pytest.approx(15.0, abs=1e-4)
    assert res["MCE"] == pytest.approx(30.0, abs=1e-4)
    assert res["accuracy"] == pytest.approx(60.0) and res["confidence"] == pytest.approx(75.0, abs=1e-4)
    saved = json.loads((out / "calibration_test_eval_calib_fake.json").read_text())
    assert saved["num_pixels"] == 20 and saved["num_bins"] == 15
    assert sum(saved["bins"]["bin_count"]) == 20
    i9 = math.ceil(0.9 * 15) - 1
    assert saved["bins"]["bin_accuracy"][i9] == pytest.approx(0.9)
    assert saved["bins"]["bin_accuracy"][0] is None
    with Image.open(out / "calibration_test_eval_calib_fake_reliability.png") as im:
        assert im.size[0] > 300 and im.size[1] > 300
    # the saved bins rebuild a comparison figure (e.g. GMMSeg vs its softmax twin)
    bins = load_calibration_bins(str(out / "calibration_test_eval_calib_fake.json"))
    assert bins["ECE"] == pytest.approx(15.0, abs=1e-4)
    path = plot_reliability_diagrams({"GMMSeg": bins, "Softmax": bins}, str(tmp_path / "cmp.png"), "cmp")
    with Image.open(path) as im:
        assert im.size[0] > im.size[1]


def test_evaluator_gathers_across_processes(tmp_path, monkeypatch):
    _register(tmp_path, "test_eval_calib_dist")
    a = CalibrationEvaluator("test_eval_calib_dist", None, distributed=True)
    b = CalibrationEvaluator("test_eval_calib_dist", None, distributed=True)
    a.process([{"file_name": "a.png"}], [{"sem_seg": _logits()}])
    b.process([{"file_name": "a.png"}], [{"sem_seg": _logits()}])
    other = (b._count, b._conf_sum, b._correct, b._num_images)
    monkeypatch.setattr(calibration_module.comm, "synchronize", lambda: None)
    monkeypatch.setattr(calibration_module.comm, "gather", lambda data, dst=0: [data, other])
    res = a.evaluate()["calibration"]
    assert res["ECE"] == pytest.approx(15.0, abs=1e-4)  # the same data twice: same ECE
    assert int(a._count.sum()) == 20  # local state untouched


def test_evaluator_rejects_bad_labels(tmp_path):
    path = _register(tmp_path, "test_eval_calib_bad")
    ev = CalibrationEvaluator("test_eval_calib_bad", None, distributed=False)
    Image.fromarray(np.full((H, W), 5, np.uint8)).save(path)
    with pytest.raises(ValueError, match=r"value\(s\) \[5\]"):
        ev.process([{"file_name": "a.png"}], [{"sem_seg": _logits()}])
    Image.fromarray(np.zeros((H, W), np.uint8)).save(path)  # a valid label, a mis-sized prediction
    with pytest.raises(ValueError, match="prediction"):
        ev.process([{"file_name": "a.png"}], [{"sem_seg": torch.zeros(2, H + 1, W)}])
