"""Bad data without hangs, at the trainer level.

- A corrupt (truncated) image stops the training data loader with an error naming the file, with
  and without loader worker processes.
- Two processes train with the project's Trainer (DDP on CPU, GLOO); rank 1's label maps are
  valid only on rows that the stride-4 feature grid never samples, so the GMM sees an all-ignore
  batch on rank 1 at every iteration while rank 0 has data (the image-level cross-entropy stays
  defined). The EM collectives go through (a 2-minute process-group timeout turns a hang into a
  failure), and both ranks end with the same GMM state while only rank 0 contributed rows.
"""

import json
import os
from datetime import timedelta

import numpy as np
import pytest
import torch
from _common import free_port
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "demo", "fpn_r18_gmm.yaml")
TRAIN_NAME = "test_bad_data_train"


def _cfg(opts):
    from detectron2.config import get_cfg

    from gmmseg import add_gmmseg_config

    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(opts)
    return cfg


def _register(name, dicts):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from gmmseg.data.demo import DEMO_CLASSES

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(
        stuff_classes=list(DEMO_CLASSES), ignore_label=255, evaluator_type="sem_seg"
    )


# ------------------------------------------------------------------------- corrupt image
@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_stops_the_loader_naming_the_file(tmp_path, demo_datasets_root, workers):
    from gmmseg.data.demo import load_demo_split
    from gmmseg.engine import Trainer

    dicts = [dict(d) for d in load_demo_split("train", demo_datasets_root)[:2]]
    bad = tmp_path / "truncated.png"
    data = open(dicts[1]["file_name"], "rb").read()
    bad.write_bytes(data[: len(data) // 2])
    dicts[1]["file_name"] = str(bad)
    _register("test_corrupt_image_train", dicts)
    cfg = _cfg(
        [
            "DATASETS.TRAIN",
            ("test_corrupt_image_train",),
            "SOLVER.IMS_PER_BATCH",
            2,
            "DATALOADER.NUM_WORKERS",
            workers,
            "SEED",
            0,
        ]
    )
    loader = Trainer.build_train_loader(cfg)
    with pytest.raises(Exception) as info:
        for _ in range(3):  # a batch of 2 out of 2 images: the first one holds the bad file
            next(iter(loader))
    assert str(bad) in str(info.value)


# ------------------------------------------------------------------------- all-ignore rank
def _rank_main(demo_datasets_root, rank1_labels, out_dir):
    import torch.distributed as dist
    from detectron2.utils import comm

    from gmmseg.data.demo import load_demo_split
    from gmmseg.engine import Trainer, em_state_digest

    torch.set_num_threads(1)
    rank = comm.get_rank()
    dicts = [dict(d) for d in load_demo_split("train", demo_datasets_root)[:8]]
    if rank == 1:
        for d in dicts:
            d["sem_seg_file_name"] = os.path.join(
                rank1_labels, os.path.basename(d["sem_seg_file_name"])
            )
    _register(TRAIN_NAME, dicts)  # same name, different data on each rank
    cfg = _cfg(
        [
            "DATASETS.TRAIN",
            (TRAIN_NAME,),
            "DATASETS.TEST",
            (),
            "SOLVER.IMS_PER_BATCH",
            2,
            "INPUT.MIN_SIZE_TRAIN",
            (96,),
            "SOLVER.MAX_ITER",
            4,
            "SOLVER.WARMUP_ITERS",
            1,
            "SOLVER.CHECKPOINT_PERIOD",
            2,
            "MODEL.GMM.MEMORY_SIZE",
            30,
            "MODEL.GMM.UPDATE_INTERVAL",
            2,
            "MODEL.GMM.PUSH_ROWS",
            "all",
            "DATALOADER.NUM_WORKERS",
            0,
            "SEED",
            5,
            "OUTPUT_DIR",
            out_dir,
        ]
    )
    torch.manual_seed(5 + rank)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    predictor = trainer.model.module.sem_seg_head.predictor
    rows, flush = [], predictor.flush

    def counting_flush():  # rows this rank set aside, before they are gathered
        rows.append(sum(int(p.shape[0]) for p in predictor._pending))
        return flush()

    predictor.flush = counting_flush
    trainer.train()
    params = torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()])
    result = {
        "rows": rows,
        "gmm": em_state_digest([predictor]),
        "params_finite": bool(torch.isfinite(params).all()),
        "params": float(params.double().sum()),
        "updates": int(predictor.num_em_updates),
        "gmm_finite": all(bool(torch.isfinite(b.float()).all()) for b in predictor.buffers()),
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    dist.barrier()


def test_all_ignore_rank_does_not_hang_and_ranks_agree(tmp_path, demo_datasets_root, monkeypatch):
    from detectron2.engine import launch

    from gmmseg.data.demo import load_demo_split

    labels = tmp_path / "rank1_labels"
    labels.mkdir()
    for d in load_demo_split("train", demo_datasets_root)[:8]:
        lab = np.array(Image.open(d["sem_seg_file_name"]))
        rows = np.arange(lab.shape[0]) % 4 != 2  # the stride-4 grid samples rows 0, 4, 8, ...
        lab[rows] = 255
        Image.fromarray(lab).save(labels / os.path.basename(d["sem_seg_file_name"]))
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    launch(
        _rank_main,
        2,
        dist_url=f"tcp://127.0.0.1:{free_port()}",
        args=(demo_datasets_root, str(labels), str(out)),
        timeout=timedelta(minutes=2),
    )
    r0 = json.loads((out / "rank0.json").read_text())
    r1 = json.loads((out / "rank1.json").read_text())
    assert r1["rows"] == [0, 0, 0, 0]  # the GMM never had a valid pixel on rank 1
    assert all(n > 0 for n in r0["rows"])
    assert r0["gmm"] == r1["gmm"]  # identical means, stds, bank, pointers, counters
    assert r0["updates"] == r1["updates"] == 2
    assert r0["params"] == r1["params"]  # DDP kept the weights identical
    assert r0["params_finite"] and r1["params_finite"] and r0["gmm_finite"] and r1["gmm_finite"]
