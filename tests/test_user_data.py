"""Your own data through tools/train_net.py, end to end, on a temporary tiny dataset.

- a folder dataset declared on the command line (configs/user_data/fpn_r50_gmm.yaml +
  DATASETS.FOLDER.ROOT), void stored as 9, NUM_CLASSES taken from classes.txt, trained and
  evaluated by 2 processes (--num-gpus 2, GLOO): the spawned workers register it themselves;
- `--register my_module.py`: the user's own DatasetCatalog code, imported in the process that trains.
The network is shrunk on the command line (R-18, no pretrained weights, 64x80 images, 4 iterations).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from _common import free_port
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(ROOT, "tools", "train_net.py")
CONFIG = os.path.join(ROOT, "configs", "user_data", "fpn_r50_gmm.yaml")
CLASSES = ["ground", "wall", "lamp"]
VOID = 9
H, W = 64, 80
TINY_CPU = [
    "MODEL.DEVICE",
    "cpu",
    "MODEL.WEIGHTS",
    "",
    "MODEL.RESNETS.DEPTH",
    "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "64",
    "MODEL.FPN.OUT_CHANNELS",
    "32",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM",
    "32",
    "MODEL.GMM.MEMORY_SIZE",
    "20",
    "MODEL.GMM.UPDATE_INTERVAL",
    "2",
    "INPUT.MIN_SIZE_TRAIN",
    f"({H},)",
    "INPUT.MAX_SIZE_TRAIN",
    "100",
    "INPUT.CROP.SIZE",
    "(64, 64)",
    "INPUT.MIN_SIZE_TEST",
    f"{H}",
    "INPUT.MAX_SIZE_TEST",
    "100",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.MAX_ITER",
    "4",
    "SOLVER.WARMUP_ITERS",
    "1",
    "SOLVER.CHECKPOINT_PERIOD",
    "2",
    "TEST.EVAL_PERIOD",
    "0",
    "DATALOADER.NUM_WORKERS",
    "0",
    "SEED",
    "2",
]


def _write_split(folder, n, seed):
    rng = np.random.default_rng(seed)
    os.makedirs(folder / "images")
    os.makedirs(folder / "labels")
    for i in range(n):
        label = np.zeros((H, W), np.uint8)
        label[H // 2 :] = 1
        label[5:15, 10:20] = 2
        label[:3] = VOID
        image = np.stack([label * 70 + 20] * 3, -1).astype(np.int16) + rng.integers(
            -10, 10, (H, W, 3)
        )
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
            folder / "images" / f"img{i}.png"
        )
        Image.fromarray(label).save(folder / "labels" / f"img{i}.png")


@pytest.fixture(scope="module")
def user_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("my_data")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    _write_split(root / "train", 4, 0)
    _write_split(root / "val", 2, 1)
    return root


def _run(argv, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("LOCAL_RANK", None)
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [sys.executable, TRAIN_NET] + argv,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
    return proc.stdout


def _final_metrics(out):
    lines = (out / "metrics.json").read_text().splitlines()
    return [json.loads(x) for x in lines if "sem_seg/mIoU" in x][-1]


def test_folder_dataset_trains_and_evaluates_with_two_processes(user_root, tmp_path):
    out = tmp_path / "out"
    argv = [
        "--config-file",
        CONFIG,
        "--num-gpus",
        "2",
        "--dist-url",
        f"tcp://127.0.0.1:{free_port()}",
    ]
    argv += TINY_CPU + [
        "DATASETS.FOLDER.ROOT",
        str(user_root),
        "DATASETS.FOLDER.IGNORE_LABEL",
        str(VOID),
        "OUTPUT_DIR",
        str(out),
    ]
    _run(argv, ROOT)
    log = (out / "log.txt").read_text()
    assert "World size: 2" in log
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["MODEL"]["SEM_SEG_HEAD"]["NUM_CLASSES"] == len(CLASSES)  # from classes.txt
    metrics = _final_metrics(out)  # the final evaluation on user_data_val, with the class names
    for name in CLASSES:
        assert f"sem_seg/IoU-{name}" in metrics, sorted(metrics)
    assert 0 <= metrics["sem_seg/mIoU"] <= 100
    ckpt = torch.load(out / "model_final.pth", weights_only=True)
    assert ckpt["model"]["sem_seg_head.predictor.means"].shape[0] == len(CLASSES)


REGISTRATION_MODULE = """
import os
from detectron2.data import DatasetCatalog, MetadataCatalog

ROOT = os.environ["MY_DATA"]

def _dicts(split):
    folder = os.path.join(ROOT, split)
    return [{"file_name": os.path.join(folder, "images", f), "sem_seg_file_name": os.path.join(folder, "labels", f),
             "label_remap": {%d: 255}} for f in sorted(os.listdir(os.path.join(folder, "images")))]

for split in ("train", "val"):
    DatasetCatalog.register("mine_" + split, lambda s=split: _dicts(s))
    MetadataCatalog.get("mine_" + split).set(stuff_classes=%r, ignore_label=255, label_remap={%d: 255})
""" % (VOID, CLASSES, VOID)


def test_register_module_adds_the_users_datasets(user_root, tmp_path):
    module = tmp_path / "my_datasets.py"
    module.write_text(REGISTRATION_MODULE)
    out = tmp_path / "out"
    argv = (
        ["--register", str(module), "--config-file", CONFIG]
        + TINY_CPU
        + [
            "DATASETS.FOLDER.NAME",
            "",
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
            str(len(CLASSES)),
            "DATASETS.TRAIN",
            "('mine_train',)",
            "DATASETS.TEST",
            "('mine_val',)",
            "OUTPUT_DIR",
            str(out),
        ]
    )
    os.environ["MY_DATA"] = str(user_root)
    try:
        _run(argv, ROOT)
    finally:
        del os.environ["MY_DATA"]
    metrics = _final_metrics(out)
    assert all(f"sem_seg/IoU-{name}" in metrics for name in CLASSES), sorted(metrics)
