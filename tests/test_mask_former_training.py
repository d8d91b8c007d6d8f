"""A short training of the Mask2Former GMM variant on demo data, with the project's Trainer (its
EM hook runs flush()/em_update()), evaluated to an mIoU and to anomaly metrics of the GMM score."""

import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from gmmseg import add_gmmseg_config
from gmmseg.data.demo import DEMO_CLASSES, load_demo_split
from gmmseg.engine import Trainer
from gmmseg.solver import build_optimizer

CONFIG = os.path.join(
    os.path.dirname(__file__), "..", "configs", "demo", "mask2former_r18_gmm.yaml"
)
SIZES = {"train": 32, "val": 6, "anomaly": 4, "near": 1}
NAMES = {split: f"test_m2f_demo_{split}" for split in SIZES}


class _Trainer(Trainer):
    @classmethod
    def build_optimizer(cls, cfg, model):  # the recipe's AdamW (SOLVER.OPTIMIZER) and clipping
        return build_optimizer(cfg, model)


@pytest.fixture(scope="module")
def demo_datasets(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("datasets"))
    for split, name in NAMES.items():
        DatasetCatalog.register(name, lambda s=split: load_demo_split(s, root, 0, SIZES))
        MetadataCatalog.get(name).set(
            stuff_classes=list(DEMO_CLASSES),
            ignore_label=255,
            evaluator_type="sem_seg",
            has_anomaly_masks=split == "anomaly",
        )
    yield NAMES
    for name in NAMES.values():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_short_demo_training_of_gmm_variant_evaluates(demo_datasets, tmp_path):
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(
        [
            "DATASETS.TRAIN",
            (NAMES["train"],),
            "DATASETS.TEST",
            (NAMES["val"], NAMES["anomaly"]),
            "INPUT.MIN_SIZE_TRAIN",
            (64,),
            "INPUT.MIN_SIZE_TEST",
            64,
            "SOLVER.IMS_PER_BATCH",
            4,
            "SOLVER.MAX_ITER",
            20,
            "SOLVER.STEPS",
            (18, 19),
            "SOLVER.CHECKPOINT_PERIOD",
            1000,
            "MODEL.GMM.UPDATE_INTERVAL",
            5,
            "TEST.OPEN_WORLD.PLOTS",
            False,
            "OUTPUT_DIR",
            str(tmp_path),
        ]
    )
    torch.manual_seed(0)
    trainer = _Trainer(cfg)
    trainer.resume_or_load(resume=False)
    gmm = trainer.model.class_head
    means = gmm.means.clone()
    trainer.train()
    assert (
        int(gmm.num_em_updates) == 20 // 5
    )  # the EM hook's M-steps: 4, 9, 14, 19 (Base-Mask2Former's UPDATE_START)
    assert not torch.allclose(gmm.means, means)
    results = trainer._last_eval_results  # DefaultTrainer's evaluation after the last iteration
    miou = results[NAMES["val"]]["sem_seg"]["mIoU"]
    assert 0.0 <= miou <= 100.0
    assert miou > 20.0, f"mIoU {miou:.1f} after 20 iterations"  # ~35 observed; chance is < 10
    anomaly = results[NAMES["anomaly"]]["anomaly"]
    assert (
        0.0 <= anomaly["query_likelihood_AUROC"] <= 100.0
    )  # the query-mixture anomaly map is scored too
    assert 0.0 <= anomaly["rba_AUROC"] <= 100.0 and 0.0 <= anomaly["eam_AUROC"] <= 100.0
    assert "msp_AUROC" in anomaly
