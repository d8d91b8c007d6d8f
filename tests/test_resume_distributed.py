"""Exact resume of a 2-process run whose GMM memory is sharded (MODEL.GMM.MEMORY_LAYOUT "auto"):
both processes are SIGKILLed after a checkpoint, `--resume` with 2 processes continues, and the
run ends with the same weights, optimizer state and GMM state (means, stds, the whole bank
gathered from both shards, pointers, counters) as an uninterrupted 2-process run, and with the
same EM digest (which covers every shard).

The processes are started as torchrun would (RANK / WORLD_SIZE / MASTER_* in the environment),
so that each is a `tests/test_resume.py --kill-after-iter N` process with the killing hook. Same
deterministic settings as the single-process test (tests/test_resume.py).
"""

import os
import re
import signal
import subprocess
import sys

import torch
from _common import free_port
from test_resume import (
    CONFIG,
    KILL_AFTER,
    MAX_ITER,
    ROOT,
    TINY,
    TRAIN_NET,
    assert_same_trainer_state,
)

KILLABLE = os.path.join(ROOT, "tests", "test_resume.py")


def _start_ranks(args, out_dir, demo_datasets_root, kill_after=None):
    port, procs = free_port(), []
    for rank in range(2):
        env = dict(
            os.environ,
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            PYTHONWARNINGS="ignore",
            DETECTRON2_DATASETS=str(demo_datasets_root),
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        cmd = (
            [sys.executable, KILLABLE, "--kill-after-iter", str(kill_after)]
            if kill_after is not None
            else [sys.executable, TRAIN_NET]
        )
        cmd += ["--config-file", CONFIG] + args + TINY + ["OUTPUT_DIR", str(out_dir)]
        log = open(f"{out_dir}.rank{rank}.stdout", "w")
        procs.append(
            (subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log)
        )
    return procs


def _wait(procs, timeout=1800):  # generous: a hang guard on a loaded 2-core machine
    codes = []
    for proc, log in procs:
        try:
            codes.append(proc.wait(timeout=timeout))
        finally:
            log.close()
    return codes


def _tail(out_dir):
    return "\n".join(open(f"{out_dir}.rank{r}.stdout").read()[-3000:] for r in range(2))


def _end_digest(out_dir):
    found = re.findall(
        r"EM state at the end of training \(iteration \d+\): sha256 (\w+) \(incl\. memory bank\), "
        r"identical on all 2 ranks",
        (out_dir / "log.txt").read_text(),
    )
    assert found, "no end-of-training EM digest in the log"
    return found[-1]


def test_two_process_sigkill_then_resume_equals_uninterrupted_run(tmp_path, demo_datasets_root):
    full, killed = tmp_path / "full", tmp_path / "killed"
    a = _start_ranks([], full, demo_datasets_root)
    b = _start_ranks([], killed, demo_datasets_root, kill_after=KILL_AFTER)
    rc_b, rc_a = _wait(b), _wait(a)
    assert rc_a == [0, 0], _tail(full)
    assert rc_b == [-signal.SIGKILL] * 2, _tail(killed)
    assert (killed / "last_checkpoint").read_text().strip() == "model_0000003.pth"
    assert not (killed / "model_0000007.pth").exists()
    log = (full / "log.txt").read_text()
    assert "ShardedFeatureMemory(" in log and "shard 0 of 2" in log  # "auto" sharded the bank

    rc_c = _wait(_start_ranks(["--resume"], killed, demo_datasets_root))
    assert rc_c == [0, 0], _tail(killed)
    assert (
        "Resuming at iteration 4: the sampler skips the first 4 images"
        in (killed / "log.txt").read_text()
    )
    assert _end_digest(killed) == _end_digest(full)  # means, stds, statistics and every shard

    ref = torch.load(full / "model_final.pth", weights_only=True)
    res = torch.load(killed / "model_final.pth", weights_only=True)
    assert ref["iteration"] == res["iteration"] == MAX_ITER - 1
    model_ref, model_res = ref.pop("model"), res.pop("model")
    assert model_ref.keys() == model_res.keys()
    bank = model_ref["sem_seg_head.predictor.memory.bank"]
    assert bank.shape == (
        6 * 5,
        40,
        64,
    )  # the checkpoint holds the whole bank, gathered from both ranks
    different = [k for k in model_ref if not torch.equal(model_ref[k], model_res[k])]
    assert not different, f"tensors that differ after resume: {different}"
    assert_same_trainer_state(ref["trainer"], res["trainer"])
