"""--resume (and MODEL.WEIGHTS) memory-map the checkpoint: a training model copies its tensors,
the GMM bank slice by slice, from the mapped file instead of from a copy of the whole file read
into every rank's host memory first.

Measured in a fresh process (a long-lived one reuses freed heap): the anonymous resident memory
(RssAnon: what cannot be dropped under pressure; mapped file pages are page cache) at the moment
the checkpointer has the checkpoint in hand, before it copies anything into the model. With the
whole file read that grows by the bank (154 MB here); mapped, by far less.
"""

import multiprocessing
import os

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "demo", "fpn_r18_gmm.yaml")
BANK = (30, 20000, 64)  # 6 classes x 5 components x 20,000 x 64 float32: 154 MB
BANK_KEY = "sem_seg_head.predictor.memory.bank"


def _model():
    from detectron2.config import get_cfg

    from gmmseg import add_gmmseg_config
    from gmmseg.engine import Trainer

    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(["MODEL.GMM.MEMORY_SIZE", str(BANK[1]), "MODEL.GMM.MEMORY_INIT", "empty"])
    return Trainer.build_model(cfg)


def _anon_bytes():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))


def _measure(path, out):
    from gmmseg.checkpoint import GMMSegCheckpointer

    model = _model()
    bank = model.sem_seg_head.predictor.memory.bank
    bank.fill_(0.0)  # the model's own bank is resident before loading, as in a running trainer
    seen = {}
    load_model = GMMSegCheckpointer._load_model

    def in_hand(self, checkpoint):  # the whole checkpoint is loaded, nothing copied yet
        seen["grown"] = _anon_bytes() - seen["before"]
        return load_model(self, checkpoint)

    GMMSegCheckpointer._load_model = in_hand
    seen["before"] = _anon_bytes()
    GMMSegCheckpointer(model).load(path)
    saved = torch.load(path, weights_only=True, mmap=True)["model"][BANK_KEY]
    seen["bank_loaded"] = torch.equal(bank, saved)
    torch.save(seen, out)


def test_training_model_loads_a_checkpoint_without_reading_it_into_host_memory(tmp_path):
    model = _model()
    state = model.state_dict()
    assert state[BANK_KEY].shape == BANK
    state[BANK_KEY].normal_(generator=torch.Generator().manual_seed(0))  # real pages, not zeros
    state["sem_seg_head.predictor.memory.filled"].fill_(BANK[1])
    path = tmp_path / "model_0000009.pth"
    torch.save({"model": state, "iteration": 9}, path)
    del model, state
    out = tmp_path / "measured.pt"
    child = multiprocessing.get_context("spawn").Process(
        target=_measure, args=(str(path), str(out))
    )
    child.start()
    child.join()
    assert child.exitcode == 0
    r = torch.load(out, weights_only=True)
    assert r["bank_loaded"]
    bank_bytes = BANK[0] * BANK[1] * BANK[2] * 4
    assert r["grown"] < bank_bytes / 4, (
        f"{r['grown'] / 1e6:.0f} MB of host memory held by the loaded checkpoint"
    )


def test_a_legacy_format_checkpoint_still_loads(tmp_path):
    from gmmseg.checkpoint import load_state_dict_safely

    path = tmp_path / "legacy.pth"
    torch.save({"model": {"w": torch.arange(3.0)}}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(load_state_dict_safely(str(path))["w"], torch.arange(3.0))
