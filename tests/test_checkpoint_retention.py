"""SOLVER.CHECKPOINT_MAX_TO_KEEP: only the newest periodic checkpoints stay on disk (each one holds
the GMM memory bank), model_final.pth always; 0 keeps them all (make demo's fit curve reads them)."""

import os

from detectron2.config import get_cfg

from gmmseg import add_gmmseg_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "demo", "fpn_r18_gmm.yaml")
TINY = [
    "SOLVER.IMS_PER_BATCH",
    "2",
    "INPUT.MIN_SIZE_TRAIN",
    "(48,)",
    "SOLVER.MAX_ITER",
    "4",
    "SOLVER.WARMUP_ITERS",
    "1",
    "SOLVER.CHECKPOINT_PERIOD",
    "1",
    "MODEL.GMM.MEMORY_SIZE",
    "20",
    "DATASETS.TEST",
    "()",
    "SEED",
    "0",
]


def test_default_keeps_two_and_the_demo_keeps_all():
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    assert cfg.SOLVER.CHECKPOINT_MAX_TO_KEEP == 2
    cfg.merge_from_file(CONFIG)
    assert cfg.SOLVER.CHECKPOINT_MAX_TO_KEEP == 0


def test_only_the_newest_periodic_checkpoints_stay(tmp_path, demo_datasets_root, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(demo_datasets_root))
    monkeypatch.syspath_prepend(os.path.join(ROOT, "tools"))
    import train_net

    out = tmp_path / "out"
    args = train_net.argument_parser().parse_args(
        ["--config-file", CONFIG]
        + TINY
        + ["SOLVER.CHECKPOINT_MAX_TO_KEEP", "2", "OUTPUT_DIR", str(out)]
    )
    train_net.main(args)
    assert sorted(f for f in os.listdir(out) if f.endswith(".pth")) == [
        "model_0000002.pth",
        "model_0000003.pth",
        "model_final.pth",
    ]
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
