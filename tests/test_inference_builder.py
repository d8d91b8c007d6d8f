"""The one inference builder (gmmseg/inference.py) and the tools that must go through it.

- the export tool never allocates a GMM memory bank: with the bank's constructor made to fail and
  a MEMORY_SIZE whose bank would need terabytes, it still exports the trained model, and the
  file's outputs are those of that model with its bank;
- ImageSegmenter (tools/demo.py) gives DefaultPredictor's outputs, to the bit, from a model that
  has no bank;
- evaluate_model (train_net --eval-only, run_demo) keeps the dataset level for one dataset.
"""

import importlib.util
import os

import numpy as np
import pytest
import torch
from _deploy_helpers import CONFIGS, ROOT, demo_cfg, image_of, trained_like
from detectron2.engine import DefaultPredictor

from gmmseg.checkpoint import GMMSegCheckpointer
from gmmseg.deploy import ExportedSegmenter
from gmmseg.gmm import FeatureMemory, InferenceMemory
from gmmseg.inference import ImageSegmenter, build_inference_model, inference_config

# a bank of 6 classes x 5 components x 10^9 rows x 64 float32: 7.7 TB, never allocatable
HUGE_MEMORY_SIZE = 10**9


def _load_tool(*parts):
    spec = importlib.util.spec_from_file_location(
        "gmmseg_tool_" + parts[-1][:-3], os.path.join(ROOT, *parts)
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained_gmm(tmp_path_factory):
    """(path of a checkpoint of the demo GMM that holds its bank, the model it was saved from)."""
    torch.manual_seed(0)
    model = trained_like(DefaultPredictor(demo_cfg("gmm")).model)
    folder = tmp_path_factory.mktemp("trained")
    GMMSegCheckpointer(model, save_dir=str(folder)).save("model_trained")
    path = str(folder / "model_trained.pth")
    assert any(".memory.bank" in k for k in torch.load(path, weights_only=True)["model"])
    return path, model


def _forbid_memory_banks(monkeypatch):
    """Make every bank constructor (FeatureMemory and its sharded subclass) fail."""

    def no_bank(self, *args, **kwargs):
        raise AssertionError("a GMM memory bank was allocated")

    monkeypatch.setattr(FeatureMemory, "__init__", no_bank)


def test_the_bank_guard_fires_on_a_training_model(monkeypatch):
    """The guard of the next test is real: a model built for training does allocate a bank."""
    from detectron2.modeling import build_model

    _forbid_memory_banks(monkeypatch)
    with pytest.raises(AssertionError, match="memory bank was allocated"):
        build_model(demo_cfg("gmm"))
    model = build_model(
        inference_config(demo_cfg("gmm", "MODEL.GMM.MEMORY_SIZE", str(HUGE_MEMORY_SIZE)))
    )
    assert isinstance(model.sem_seg_head.predictor.memory, InferenceMemory)


def test_export_never_allocates_the_memory_bank(trained_gmm, tmp_path, monkeypatch):
    weights, trained = trained_gmm
    _forbid_memory_banks(monkeypatch)
    export = _load_tool("tools", "deploy", "export_model.py")
    args = export.get_parser().parse_args(
        [
            "--config-file",
            os.path.join(ROOT, CONFIGS["gmm"]),
            "--format",
            "torchscript",
            "--output",
            str(tmp_path),
            "MODEL.WEIGHTS",
            weights,
            "MODEL.GMM.MEMORY_SIZE",
            str(HUGE_MEMORY_SIZE),
        ]
    )
    path = export.main(args)
    image = image_of((96, 128))
    with torch.no_grad():
        ref = trained([{"image": torch.from_numpy(image)}])[0]
    out = ExportedSegmenter(path).run(image)
    np.testing.assert_allclose(out["sem_seg"], ref["sem_seg"].numpy(), rtol=0, atol=5e-5)
    np.testing.assert_allclose(
        out["anomaly_score"], ref["anomaly_score"].numpy(), rtol=0, atol=5e-5
    )


def test_image_segmenter_is_default_predictor_without_the_bank(trained_gmm):
    weights, _ = trained_gmm
    cfg = demo_cfg("gmm", "MODEL.WEIGHTS", weights)
    reference = DefaultPredictor(cfg)  # builds the bank, loads with detectron2's checkpointer
    segmenter = ImageSegmenter(cfg)
    assert isinstance(segmenter.model.sem_seg_head.predictor.memory, InferenceMemory)
    assert not segmenter.model.training
    for h, w in ((300, 400), (96, 128)):
        image = np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8)
        expected, out = reference(image), segmenter(image)
        assert sorted(out) == sorted(expected)
        assert out["sem_seg"].shape == (6, h, w)
        for key in ("sem_seg", "anomaly_score"):
            torch.testing.assert_close(out[key], expected[key], rtol=0, atol=0)


def test_build_inference_model_names_a_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS '.*nothing.pth' is not a file"):
        build_inference_model(demo_cfg("gmm"), str(tmp_path / "nothing.pth"))


def test_evaluate_model_keeps_the_dataset_level(monkeypatch):
    """DefaultTrainer.test returns one dataset's results unwrapped; evaluate_model never does."""
    from gmmseg.engine import Trainer
    from gmmseg.engine.evaluate import evaluate_model

    seen = []

    def fake_test(cfg, model):
        seen.append(tuple(cfg.DATASETS.TEST))
        results = {name: {"sem_seg": {"mIoU": float(len(name))}} for name in cfg.DATASETS.TEST}
        return results if len(results) != 1 else next(iter(results.values()))

    monkeypatch.setattr(Trainer, "test", staticmethod(fake_test))
    cfg = demo_cfg("gmm")
    cfg.freeze()
    assert evaluate_model(cfg, None, ["abc"]) == {"abc": {"sem_seg": {"mIoU": 3.0}}}
    assert evaluate_model(cfg, None, ["a", "bb"]) == {
        "a": {"sem_seg": {"mIoU": 1.0}},
        "bb": {"sem_seg": {"mIoU": 2.0}},
    }
    assert seen == [("abc",), ("a", "bb")]
    assert tuple(cfg.DATASETS.TEST) == tuple(
        demo_cfg("gmm").DATASETS.TEST
    )  # the caller's config is untouched
    with pytest.raises(ValueError, match="no dataset"):
        evaluate_model(cfg, None, [])
