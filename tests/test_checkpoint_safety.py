"""Checkpoints: what the trainer writes loads with torch.load(weights_only=True) and holds only
tensors and plain containers; loading never runs code from a file; a checkpoint whose classes,
components, embedding size or memory size differ from the config stops with an error naming the
config key and both values, for --eval-only, MODEL.WEIGHTS and --resume alike."""

import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from _common import assert_plain
from _scripts import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "demo", "fpn_r18_gmm.yaml")
TINY = [
    "SOLVER.IMS_PER_BATCH",
    "2",
    "INPUT.MIN_SIZE_TRAIN",
    "(48,)",
    "SOLVER.MAX_ITER",
    "2",
    "SOLVER.WARMUP_ITERS",
    "1",
    "SOLVER.CHECKPOINT_PERIOD",
    "1",
    "MODEL.GMM.MEMORY_SIZE",
    "30",
    "MODEL.GMM.UPDATE_INTERVAL",
    "1",
    "DATASETS.TEST",
    "()",
    "SEED",
    "0",
]


def _train_net():
    return load_script("tools/train_net.py")


def _run(argv):
    train_net = _train_net()
    args = train_net.default_argument_parser().parse_args(["--config-file", CONFIG] + argv)
    return train_net.main(args)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_datasets_root):
    """A 2-iteration training run: checkpoints after iterations 0 and 1, and model_final."""
    root = demo_datasets_root
    old = os.environ.get("DETECTRON2_DATASETS")
    os.environ["DETECTRON2_DATASETS"] = str(root)
    out = tmp_path_factory.mktemp("trained")
    try:
        _run(TINY + ["OUTPUT_DIR", str(out)])
        yield out
    finally:
        if old is None:
            os.environ.pop("DETECTRON2_DATASETS", None)
        else:
            os.environ["DETECTRON2_DATASETS"] = old


def test_trainer_checkpoints_are_weights_only_and_plain(trained):
    files = sorted(p.name for p in trained.glob("*.pth"))
    assert files == ["model_0000000.pth", "model_0000001.pth", "model_final.pth"]
    for name in files:
        ckpt = torch.load(trained / name, weights_only=True)
        assert_plain(ckpt)
        assert set(ckpt) == {"model", "trainer", "iteration"}
        assert {"optimizer", "run_seed", "sampler_seed"} <= set(ckpt["trainer"]["_trainer"]) | set(
            ckpt["trainer"]["gmmseg"]
        )
        assert "LRScheduler" in ckpt["trainer"]["hooks"]


@pytest.mark.parametrize(
    "key,value,ckpt_value",
    [
        ("MODEL.GMM.NUM_COMPONENTS", 3, 5),
        ("MODEL.GMM.EMBED_DIM", 32, 64),
        ("MODEL.SEM_SEG_HEAD.NUM_CLASSES", 4, 6),
    ],
)  # (MODEL.GMM.MEMORY_SIZE does not matter to --eval-only: its model has no bank; resume checks it below)
def test_eval_only_with_a_checkpoint_of_another_shape_names_key_and_values(
    trained, key, value, ckpt_value
):
    with pytest.raises(ValueError) as info:
        _run(
            [
                "--eval-only",
                "MODEL.WEIGHTS",
                str(trained / "model_final.pth"),
                "MODEL.GMM.MEMORY_SIZE",
                "30",
                key,
                str(value),
                "OUTPUT_DIR",
                str(trained / "eval"),
            ]
        )
    assert f"{key}: checkpoint {ckpt_value}, config {value}" in str(info.value)


def test_training_from_model_weights_of_another_shape_stops(trained):
    with pytest.raises(ValueError, match="MODEL.GMM.NUM_COMPONENTS: checkpoint 5, config 2"):
        _run(
            TINY
            + [
                "MODEL.WEIGHTS",
                str(trained / "model_final.pth"),
                "MODEL.GMM.NUM_COMPONENTS",
                "2",
                "OUTPUT_DIR",
                str(trained / "finetune"),
            ]
        )


def test_resume_with_another_memory_size_stops(trained, tmp_path):
    out = tmp_path / "resume"
    shutil.copytree(trained, out)
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    with pytest.raises(ValueError) as info:
        _run(
            ["--resume"]
            + TINY
            + ["MODEL.GMM.MEMORY_SIZE", "50", "SOLVER.MAX_ITER", "3", "OUTPUT_DIR", str(out)]
        )
    msg = str(info.value)
    assert "MODEL.GMM.MEMORY_SIZE: checkpoint 30, config 50" in msg
    assert (
        "sem_seg_head.predictor.memory.bank: checkpoint (30, 30, 64) vs model (30, 50, 64)" in msg
    )


# ------------------------------------------------------------------------- nothing is executed
class _Payload:
    """Unpickling this calls os.makedirs(path): what a malicious checkpoint could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.makedirs, (self.path,)


def _model():
    from detectron2.config import get_cfg

    from gmmseg import add_gmmseg_config
    from gmmseg.engine import Trainer

    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(["MODEL.GMM.MEMORY_SIZE", 30])
    return cfg, Trainer.build_model(cfg)


def test_checkpoints_with_code_are_refused_without_running_it(tmp_path):
    from gmmseg.checkpoint import GMMSegCheckpointer

    _, model = _model()
    marker = tmp_path / "code_ran"
    pth, pkl = tmp_path / "evil.pth", tmp_path / "evil.pkl"
    torch.save({"model": {}, "x": _Payload(str(marker))}, pth)
    with open(pkl, "wb") as f:
        pickle.dump({"model": {}, "__author__": _Payload(str(marker))}, f)
    for path in (pth, pkl):
        with pytest.raises(ValueError, match="weights_only|plain weights pickle"):
            GMMSegCheckpointer(model).load(str(path))
    assert not marker.exists()

    # a detectron2 model-zoo style .pkl (NumPy arrays) still loads
    zoo = tmp_path / "zoo.pkl"
    w = model.backbone.bottom_up.stem.conv1.weight
    with open(zoo, "wb") as f:
        pickle.dump(
            {
                "model": {
                    "backbone.bottom_up.stem.conv1.weight": np.full(tuple(w.shape), 0.5, np.float32)
                },
                "__author__": "test",
            },
            f,
        )
    GMMSegCheckpointer(model).load(str(zoo))
    assert torch.all(model.backbone.bottom_up.stem.conv1.weight == 0.5)


def test_bf16_bank_from_an_fp32_checkpoint_keeps_statistics_consistent(trained):
    from detectron2.config import get_cfg

    from gmmseg import add_gmmseg_config
    from gmmseg.checkpoint import GMMSegCheckpointer
    from gmmseg.engine import Trainer

    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(["MODEL.GMM.MEMORY_SIZE", 30, "MODEL.GMM.MEMORY_DTYPE", "bfloat16"])
    model = Trainer.build_model(cfg)
    GMMSegCheckpointer(model).load(str(trained / "model_final.pth"))
    mem = model.sem_seg_head.predictor.memory
    saved = torch.load(trained / "model_final.pth", weights_only=True)["model"]
    assert mem.bank.dtype == torch.bfloat16
    assert torch.equal(mem.bank, saved["sem_seg_head.predictor.memory.bank"].to(torch.bfloat16))
    # the running statistics describe the converted (rounded) entries, not the fp32 ones
    for running, exact in zip(mem.local_statistics(), mem.statistics_from_bank()):
        assert torch.equal(running, exact)
    assert torch.allclose(mem.statistics()[1], mem.bank.double().sum(1), rtol=0, atol=1e-6)
    assert not torch.equal(mem.stat_sum, saved["sem_seg_head.predictor.memory.stat_sum"])
