"""Inference without the GMM memory bank.

- A model built for inference (gmmseg.inference_config: MODEL.GMM.MEMORY_LAYOUT "none", what
  --eval-only and the inference tools use) has no bank, and loading a checkpoint does not read
  the checkpoint's bank: the process's resident memory grows by the weights and far less than
  the bank (the file is memory-mapped and the bank's pages are never touched), while a plain
  torch.load grows by all of it.
- tools/strip_checkpoint.py writes a copy without the memory, the optimizer and the resume state,
  which the inference model loads with the same means, stds and weights.
"""

import os

import torch
from _scripts import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "demo", "fpn_r18_gmm.yaml")
BANK = (30, 20000, 64)  # 6 classes x 5 components, 20,000 entries: 154 MB in float32


def _cfg(*opts):
    from detectron2.config import get_cfg

    from gmmseg import add_gmmseg_config

    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(
        ["MODEL.GMM.MEMORY_SIZE", str(BANK[1]), "MODEL.GMM.MEMORY_INIT", "empty", *opts]
    )
    return cfg


def _rss_bytes():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def _checkpoint(tmp_path):
    """A training checkpoint of the demo model with a 154 MB bank (and trainer state)."""
    from gmmseg.engine import Trainer

    model = Trainer.build_model(_cfg())
    state = model.state_dict()
    assert state["sem_seg_head.predictor.memory.bank"].shape == BANK
    state["sem_seg_head.predictor.memory.bank"].normal_()  # real pages, not zeros
    with torch.no_grad():
        model.sem_seg_head.predictor.means.mul_(-1)  # something to recognise
    state["sem_seg_head.predictor.means"] = model.sem_seg_head.predictor.means.clone()
    path = tmp_path / "model_final.pth"
    torch.save({"model": state, "trainer": {"optimizer": {"state": {}}}, "iteration": 41}, path)
    del model, state
    return path


def _measure_loading(path, out):
    """In a fresh process (a long-lived one reuses freed heap, so its resident memory need not grow
    when memory is read): resident memory growth when the inference model loads `path`, and when a
    plain torch.load reads it all (the control: the measurement sees a bank that is read)."""
    from gmmseg import inference_config
    from gmmseg.checkpoint import GMMSegCheckpointer
    from gmmseg.engine import Trainer
    from gmmseg.gmm import InferenceMemory

    model = Trainer.build_model(inference_config(_cfg()))
    result = {
        "inference_memory": isinstance(model.sem_seg_head.predictor.memory, InferenceMemory),
        "memory_buffers": [n for n, _ in model.named_buffers() if ".memory." in n],
    }
    before = _rss_bytes()
    GMMSegCheckpointer(model).load(path)
    result["grown"] = _rss_bytes() - before
    saved = torch.load(path, weights_only=True, mmap=True)["model"]
    result["same_means"] = torch.equal(
        model.sem_seg_head.predictor.means, saved["sem_seg_head.predictor.means"]
    )
    del saved
    before = _rss_bytes()
    everything = torch.load(path, weights_only=True)
    result["control_grown"] = _rss_bytes() - before
    del everything
    torch.save(result, out)


def test_inference_model_neither_allocates_nor_reads_the_bank(tmp_path):
    import multiprocessing

    path = _checkpoint(tmp_path)
    bank_bytes = BANK[0] * BANK[1] * BANK[2] * 4
    out = tmp_path / "measured.pt"
    child = multiprocessing.get_context("spawn").Process(
        target=_measure_loading, args=(str(path), str(out))
    )
    child.start()
    child.join()
    assert child.exitcode == 0
    r = torch.load(out, weights_only=True)
    assert r["inference_memory"] and not r["memory_buffers"] and r["same_means"]
    # the weights' pages are read (and stay mapped); of the bank's, none
    rest = os.path.getsize(path) - bank_bytes
    assert r["grown"] < rest + bank_bytes / 4, (
        f"loading for inference grew the process by {r['grown'] / 1e6:.0f} MB "
        f"(weights and the rest: {rest / 1e6:.0f} MB)"
    )
    assert r["control_grown"] > bank_bytes * 0.8


def test_strip_checkpoint_keeps_what_inference_needs(tmp_path, capsys):

    from gmmseg import inference_config
    from gmmseg.checkpoint import GMMSegCheckpointer
    from gmmseg.engine import Trainer

    strip_checkpoint = load_script("tools/strip_checkpoint.py")

    path = _checkpoint(tmp_path)
    r = strip_checkpoint.main([str(path)])
    out = tmp_path / "model_final_inference.pth"
    assert f"-> {out}" in capsys.readouterr().out
    stripped = torch.load(out, weights_only=True)
    assert set(stripped) == {"model", "iteration"} and stripped["iteration"] == 41
    assert sorted(r["dropped"]) == sorted(
        f"sem_seg_head.predictor.memory.{n}"
        for n in ("bank", "ptr", "filled", "stat_count", "stat_sum", "stat_sumsq")
    )
    assert not any(".memory." in k for k in stripped["model"])
    assert r["src_bytes"] - r["dst_bytes"] >= BANK[0] * BANK[1] * BANK[2] * 4
    full = torch.load(path, weights_only=True, mmap=True)["model"]
    for k, v in stripped["model"].items():
        assert torch.equal(v, full[k]), k

    model = Trainer.build_model(inference_config(_cfg()))
    GMMSegCheckpointer(model).load(str(out))
    assert torch.equal(model.sem_seg_head.predictor.means, full["sem_seg_head.predictor.means"])
