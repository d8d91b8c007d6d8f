"""Two CPU processes (GLOO) train a GMMPredictor on different data: the EM state must stay
bitwise identical on both ranks, also when one rank's batch is entirely ignore pixels."""

import hashlib
import os

import torch
from _common import run_ranks

from gmmseg.gmm import GMMPredictor, linspace_positions


def _em_state_digest(p):
    h = hashlib.sha256()
    for name, buf in sorted(p.named_buffers()):
        h.update(name.encode())
        h.update(buf.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _worker(rank, result_dir):
    torch.manual_seed(0)  # same initial weights on both ranks
    p = GMMPredictor(
        12,
        4,
        embed_dim=8,
        num_components=3,
        memory_size=40,
        pushes_per_step=5,
        push_rows="all",
        memory_init="random",
    )
    p.train()
    gen = torch.Generator().manual_seed(100 + rank)  # different data per rank
    digests = []
    for step in range(6):
        x = torch.randn(200, 12, generator=gen)
        labels = torch.randint(0, 4, (200,), generator=gen)
        if rank == 1 and step in (2, 3):
            labels[:] = 255  # an all-ignore batch on one rank only
        p(x, labels)
        if step == 0:  # this rank's candidate rows [group, embedding], before the selection
            torch.save(torch.cat(p._pending), os.path.join(result_dir, f"candidates{rank}.pt"))
        if step % 2 == 1:
            p.em_update()
        else:
            p.flush()
        digests.append(_em_state_digest(p))
        if step == 0:
            torch.save(p.memory.state_dict(), os.path.join(result_dir, f"memory{rank}.pt"))
    moved = int(p.num_em_updates)
    with open(os.path.join(result_dir, f"rank{rank}.txt"), "w") as f:
        f.write("\n".join(digests) + f"\n{moved}\n{int(p.memory.ptr.sum())}")


def test_two_ranks_keep_identical_gmm_state(tmp_path):
    run_ranks(_worker, 2, (str(tmp_path),))
    r0 = (tmp_path / "rank0.txt").read_text().split("\n")
    r1 = (tmp_path / "rank1.txt").read_text().split("\n")
    assert r0 == r1
    assert int(r0[-2]) == 3  # three M-steps ran
    assert len(set(r0[:6])) == 6  # and the state changed at every step


def test_memory_holds_the_release_selection_of_both_ranks_rows(tmp_path):
    run_ranks(_worker, 2, (str(tmp_path),))
    # the gathered batch: rank 0's candidates, then rank 1's; per group the release keeps the
    # rows at linspace(0, n - 1, 5) of that whole sequence, in order
    rows = torch.cat([torch.load(tmp_path / f"candidates{r}.pt") for r in range(2)])
    groups = rows[:, 0].long()
    mem = torch.load(tmp_path / "memory0.pt")
    assert torch.equal(mem["bank"], torch.load(tmp_path / "memory1.pt")["bank"])
    from_rank = torch.cat(
        [torch.full((len(torch.load(tmp_path / f"candidates{r}.pt")),), r) for r in range(2)]
    )
    both = set()
    for g in range(12):
        mine = (groups == g).nonzero().squeeze(1)
        picked = mine[linspace_positions(len(mine), 5)]
        both |= set(from_rank[picked].tolist())
        n = len(picked)
        # random init: the first n slots of the ring were overwritten by the picked rows
        assert int(mem["ptr"][g]) == n % 40
        assert torch.equal(mem["bank"][g, :n], rows[picked, 1:]), g
    assert both == {0, 1}  # rows of both ranks entered the memory
