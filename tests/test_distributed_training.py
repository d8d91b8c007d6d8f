"""`tools/train_net.py --num-gpus 2` on CPU (GLOO, DDP without device_ids): two processes train
on different images, and every rank ends with the same GMM state (means, stds, memory bank,
pointers, counters), checked by the EM hook's all-gathered digests at every checkpoint period and
after the last iteration. The bank is bfloat16 (MODEL.GMM.MEMORY_DTYPE) here, to run the
reduced-precision bank end to end. The checkpoints load with torch.load(weights_only=True)."""

import os
import re
import subprocess
import sys

import torch
from _common import assert_plain, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(ROOT, "tools", "train_net.py")
CONFIG = os.path.join(ROOT, "configs", "demo", "fpn_r18_gmm.yaml")
TINY = [
    "SOLVER.IMS_PER_BATCH",
    "2",
    "INPUT.MIN_SIZE_TRAIN",
    "(48,)",
    "SOLVER.MAX_ITER",
    "6",
    "SOLVER.WARMUP_ITERS",
    "2",
    "SOLVER.CHECKPOINT_PERIOD",
    "3",
    "MODEL.GMM.MEMORY_SIZE",
    "40",
    "MODEL.GMM.UPDATE_INTERVAL",
    "2",
    "MODEL.GMM.PUSH_ROWS",
    "all",
    "MODEL.GMM.MEMORY_DTYPE",
    "bfloat16",  # the reduced-precision bank, end to end
    "DATASETS.TEST",
    "()",
    "DATALOADER.NUM_WORKERS",
    "0",
    "SEED",
    "3",
]


def test_train_net_with_two_processes_keeps_identical_gmm_state(tmp_path, demo_datasets_root):
    out = tmp_path / "out"
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        DETECTRON2_DATASETS=str(demo_datasets_root),
        PYTHONWARNINGS="ignore",
    )
    env.pop("LOCAL_RANK", None)
    env.pop("WORLD_SIZE", None)
    cmd = (
        [
            sys.executable,
            TRAIN_NET,
            "--config-file",
            CONFIG,
            "--num-gpus",
            "2",
            "--dist-url",
            f"tcp://127.0.0.1:{free_port()}",
        ]
        + TINY
        + ["OUTPUT_DIR", str(out)]
    )
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-5000:]
    log = (out / "log.txt").read_text()
    assert "World size: 2" in log
    # the EM hook compared the digests of both ranks: without the bank after iterations 2 and 5,
    # with the bank (and everything else) at the end; a difference would have raised
    checks = re.findall(r"EM state (.*?): sha256 (\w+) \((.*?)\), identical on all 2 ranks", log)
    assert [c[0] for c in checks] == [
        "after iteration 2",
        "after iteration 5",
        "at the end of training (iteration 5)",
    ], log[-3000:]
    assert checks[-1][2] == "incl. memory bank"
    assert len({c[1] for c in checks}) == 3  # the state moved between the checks

    ckpt = torch.load(out / "model_final.pth", weights_only=True)
    assert_plain(ckpt)
    model = ckpt["model"]
    assert not any(k.startswith("module.") for k in model)  # saved without the DDP wrapper
    assert int(model["sem_seg_head.predictor.num_em_updates"]) == 3
    assert int(model["sem_seg_head.predictor.memory.filled"].min()) == 40  # "random" init: full
    assert model["sem_seg_head.predictor.memory.bank"].dtype == torch.bfloat16
    for name in ("means", "stds", "memory.bank"):
        assert torch.isfinite(model[f"sem_seg_head.predictor.{name}"].float()).all()
    for name in ("model_0000002.pth", "model_0000005.pth"):
        assert_plain(torch.load(out / name, weights_only=True))
