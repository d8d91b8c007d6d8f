"""The two-rank GMM run shared by the GLOO test (tests/test_gmm_sharded_memory.py) and the NCCL
one (tests/test_gpu.py): each rank feeds its own data to a GMMPredictor with a sharded memory and
to one with a replicated memory (push every step, M-step every second step), compares the EM
state digests after every step, gathers the sharded bank for a checkpoint, and saves (on the CPU)
what `check_two_ranks` checks."""

import os

import torch
import torch.distributed as dist

from gmmseg.engine import em_state_digest
from gmmseg.gmm import MEMORY_STATE_NAMES, GMMPredictor, ShardedFeatureMemory

STEPS = 7


def predictor(layout, device="cpu"):
    torch.manual_seed(0)  # same projection weights on every rank and in both layouts
    return (
        GMMPredictor(
            12,
            4,
            embed_dim=8,
            num_components=3,
            memory_size=40,
            pushes_per_step=5,
            push_rows="all",
            memory_init="random",
            memory_layout=layout,
        )
        .to(device)
        .train()
    )


def m_step_of_every_component(p):
    p._present_gathered = torch.ones(p.num_classes, dtype=torch.bool)
    p.em_update()
    return {"means": p.means.cpu().clone(), "stds": p.stds.cpu().clone()}


def _cpu_state(p):
    return {k: v.cpu().clone() for k, v in p.state_dict().items()}


def train_two_ranks(rank, out):
    """Rank r's run on the process group's device (cuda:r under NCCL, else the CPU); saves
    two_ranks_<r>.pt in `out`."""
    device = f"cuda:{rank}" if dist.get_backend() == "nccl" else "cpu"
    sharded, replicated = predictor("sharded", device), predictor("replicated", device)
    assert isinstance(sharded.memory, ShardedFeatureMemory) and sharded.memory.num_shards == 2
    gen = torch.Generator().manual_seed(100 + rank)
    digests = []
    for step in range(STEPS):
        x, labels = torch.randn(150, 12, generator=gen), torch.randint(0, 4, (150,), generator=gen)
        for p in (sharded, replicated):
            p(x.to(device), labels.to(device))
            p.em_update() if step % 2 == 1 else p.flush()
        digests.append(
            [em_state_digest([p]) for p in (sharded, replicated)]
        )  # collective for the shards
    sharded.memory.gather_for_checkpoint()  # collective; rank 0 keeps the full state
    result = {
        "sharded": _cpu_state(sharded),
        "replicated": _cpu_state(replicated),
        "digests": digests,
        "bank_bytes": (sharded.memory.bank.nbytes, replicated.memory.bank.nbytes),
    }
    sharded.memory.release_checkpoint()
    result["next_m_step"] = {
        "sharded": m_step_of_every_component(sharded),
        "replicated": m_step_of_every_component(replicated),
    }
    torch.save(result, os.path.join(out, f"two_ranks_{rank}.pt"))


def check_two_ranks(out):
    """Assert what the two ranks of `train_two_ranks` saved in `out`: equal EM digests on both
    ranks after every step (and a new one at every step); the checkpoint gathered from the
    shards, bitwise the replicated memory; the same means and stds in both layouts and on both
    ranks, now and after one more M-step. Returns rank 0's M-step of the replicated layout."""
    ranks = [
        torch.load(os.path.join(out, f"two_ranks_{r}.pt"), weights_only=True) for r in range(2)
    ]
    assert ranks[0]["digests"] == ranks[1]["digests"]
    for layout in range(2):
        assert (
            len({d[layout] for d in ranks[0]["digests"]}) == STEPS
        )  # the state moved at every step
    sh, rep = ranks[0]["sharded"], ranks[0]["replicated"]
    prefix = "memory."
    for name in MEMORY_STATE_NAMES:  # the gathered shards are the replicated memory, bitwise
        assert torch.equal(sh[prefix + name], rep[prefix + name]), name
    for name in ("means", "stds", "updates_per_component", "num_em_updates"):
        assert torch.equal(sh[name], rep[name]), name
        assert torch.equal(ranks[1]["replicated"][name], rep[name])
    assert int(rep["num_em_updates"]) == 3
    assert ranks[0]["bank_bytes"] == (rep[prefix + "bank"].nbytes // 2, rep[prefix + "bank"].nbytes)
    reference = ranks[0]["next_m_step"]["replicated"]
    for r in range(2):
        for layout in ("sharded", "replicated"):
            for k in ("means", "stds"):
                assert torch.equal(ranks[r]["next_m_step"][layout][k], reference[k])
    return reference
