"""Exact resume: a training run killed with SIGKILL after a checkpoint and restarted with
`tools/train_net.py --resume` ends with the same weights, optimizer state and GMM state (means,
stds, memory bank, pointers, counters) as an uninterrupted run of the same length.

Deterministic settings (docs/DISTRIBUTED.md): CPU, a fixed SEED, DATALOADER.NUM_WORKERS 0, one
thread per process, batches in sampler order (all demo images have one aspect ratio).

Run as a script, this file is the "killed" run: tools/train_net.py with one more hook that
SIGKILLs the process after a given iteration (after that iteration's checkpoint was written).
"""

import os
import signal
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(ROOT, "tools", "train_net.py")
CONFIG = os.path.join(ROOT, "configs", "demo", "fpn_r18_gmm.yaml")
MAX_ITER, CHECKPOINT_PERIOD, KILL_AFTER = (
    10,
    4,
    5,
)  # checkpoint after iteration 3 and 7; killed after 5
TINY = [
    "SOLVER.IMS_PER_BATCH",
    "2",
    "INPUT.MIN_SIZE_TRAIN",
    "(48,)",
    "SOLVER.MAX_ITER",
    str(MAX_ITER),
    "SOLVER.WARMUP_ITERS",
    "2",
    "SOLVER.CHECKPOINT_PERIOD",
    str(CHECKPOINT_PERIOD),
    "MODEL.GMM.MEMORY_SIZE",
    "40",
    "MODEL.GMM.UPDATE_INTERVAL",
    "3",
    "MODEL.GMM.PUSH_ROWS",
    "all",
    "DATASETS.TEST",
    "()",
    "DATALOADER.NUM_WORKERS",
    "0",
    "SEED",
    "7",
]


def _env(demo_datasets_root):
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        DETECTRON2_DATASETS=str(demo_datasets_root),
        PYTHONWARNINGS="ignore",
    )
    env.pop("LOCAL_RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _start(args, out_dir, demo_datasets_root, kill_after=None):
    cmd = [sys.executable, __file__ if kill_after is not None else TRAIN_NET]
    if kill_after is not None:
        cmd += ["--kill-after-iter", str(kill_after)]
    cmd += ["--config-file", CONFIG] + args + TINY + ["OUTPUT_DIR", str(out_dir)]
    log = open(str(out_dir) + ".stdout", "w")
    return subprocess.Popen(
        cmd, cwd=ROOT, env=_env(demo_datasets_root), stdout=log, stderr=subprocess.STDOUT
    ), log


def _wait(proc_log, timeout=300):
    proc, log = proc_log
    try:
        rc = proc.wait(timeout=timeout)
    finally:
        log.close()
    return rc


def _tail(out_dir):
    with open(str(out_dir) + ".stdout") as f:
        return f.read()[-4000:]


def assert_same_trainer_state(ref, res):
    """Equal nested trainer states (optimizer, scheduler, resume state): every leaf, by path."""
    flat_ref, flat_res = _flatten(ref), _flatten(res)
    assert flat_ref.keys() == flat_res.keys()
    for k in flat_ref:
        a_, b_ = flat_ref[k], flat_res[k]
        same = torch.equal(a_, b_) if isinstance(a_, torch.Tensor) else a_ == b_
        assert same, f"trainer state {k} differs: {a_} vs {b_}"


def _flatten(obj, prefix=""):
    """{path: leaf} of nested dicts/lists/tuples."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}/{k}"))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}/{i}"))
        return out
    return {prefix: obj}


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, demo_datasets_root):
    full, killed = tmp_path / "full", tmp_path / "killed"
    # the uninterrupted run and the run that is killed are independent: run them side by side
    a = _start([], full, demo_datasets_root)
    b = _start([], killed, demo_datasets_root, kill_after=KILL_AFTER)
    rc_b, rc_a = _wait(b), _wait(a)
    assert rc_a == 0, _tail(full)
    assert rc_b == -signal.SIGKILL, _tail(killed)
    assert (killed / "model_0000003.pth").is_file() and not (killed / "model_0000007.pth").exists()
    assert (killed / "last_checkpoint").read_text().strip() == "model_0000003.pth"

    rc_c = _wait(_start(["--resume"], killed, demo_datasets_root))
    assert rc_c == 0, _tail(killed)
    log = (killed / "log.txt").read_text()
    assert "Resuming at iteration 4: the sampler skips the first 8 images" in log

    ref = torch.load(full / "model_final.pth", weights_only=True)
    res = torch.load(killed / "model_final.pth", weights_only=True)
    assert ref["iteration"] == res["iteration"] == MAX_ITER - 1
    model_ref, model_res = ref.pop("model"), res.pop("model")
    assert model_ref.keys() == model_res.keys()
    gmm_keys = [
        k for k in model_ref if ".predictor." in k and k.split(".")[-1] not in ("weight", "bias")
    ]
    assert {
        "sem_seg_head.predictor.means",
        "sem_seg_head.predictor.stds",
        "sem_seg_head.predictor.memory.bank",
        "sem_seg_head.predictor.memory.ptr",
        "sem_seg_head.predictor.num_em_updates",
    } <= set(gmm_keys)
    different = [k for k in model_ref if not torch.equal(model_ref[k], model_res[k])]
    assert not different, f"tensors that differ after resume: {different}"
    assert int(model_res["sem_seg_head.predictor.num_em_updates"]) == len(
        range(0, MAX_ITER, 3)
    )  # M-steps at iterations 0, 3, 6, 9
    # the optimizer (momentum buffers), LR scheduler and the resume state match as well
    assert_same_trainer_state(ref["trainer"], res["trainer"])


def test_resume_state_restores_random_seeds_and_hook_order(
    demo_datasets_root, monkeypatch, tmp_path
):
    """With SEED -1 the run seed and the sampler seed are random: the checkpoint carries them, so
    a resumed run continues the same streams. The EM hook runs before the checkpointer."""
    from detectron2.config import get_cfg
    from detectron2.engine import hooks

    from gmmseg import add_gmmseg_config
    from gmmseg.engine import EMHook, IterationSeedHook, Trainer

    monkeypatch.setenv("DETECTRON2_DATASETS", str(demo_datasets_root))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = get_cfg()
        add_gmmseg_config(cfg)
        cfg.merge_from_file(CONFIG)
        cfg.merge_from_list(TINY[:-2] + ["SEED", "-1", "OUTPUT_DIR", str(tmp_path)])
        first, second = Trainer(cfg), Trainer(cfg)
    finally:
        torch.set_num_threads(n)
    kinds = [type(h) for h in first._hooks]
    assert kinds[0] is IterationSeedHook
    assert (
        kinds.index(EMHook)
        < kinds.index(hooks.PeriodicCheckpointer)
        < kinds.index(hooks.PeriodicWriter)
    )
    state = first.state_dict()["gmmseg"]
    assert (
        state["run_seed"] != second._run_seed
        and state["sampler_seed"] != second._resumable_sampler.seed
    )
    second.load_state_dict(first.state_dict())
    assert second._run_seed == state["run_seed"] and second._hooks[0].run_seed == state["run_seed"]
    assert second._resumable_sampler.seed == state["sampler_seed"]


# --------------------------------------------------------------------------- the killed run
def _killed_run(argv):
    """tools/train_net.py with a hook that SIGKILLs this process after iteration N."""
    n = int(argv[argv.index("--kill-after-iter") + 1])
    i = argv.index("--kill-after-iter")
    argv = argv[:i] + argv[i + 2 :]
    from _scripts import load_script
    from detectron2.engine import HookBase

    from gmmseg.engine import Trainer

    class _Kill(HookBase):
        def after_step(self):  # the last hook: the checkpointer already ran for this iteration
            if self.trainer.iter == n:
                os.kill(os.getpid(), signal.SIGKILL)

    build_hooks = Trainer.build_hooks
    Trainer.build_hooks = lambda self: build_hooks(self) + [_Kill()]
    load_script("tools/train_net.py").cli(argv)


if __name__ == "__main__":
    _killed_run(sys.argv[1:])
