"""The sharded feature memory: each of W ranks holds every W-th slot of every ring.

- In one process, W shards (simulated ranks) given the same pushes as one replicated memory hold
  exactly its rows (same slots, same eviction order) and their statistics sum, bitwise, to its
  statistics; a full-layout state loads into any number of shards.
- With GLOO processes, a GMMPredictor with a sharded memory and one with a replicated memory,
  fed the same data on 2 ranks, end with bitwise equal means and stds and with the same EM
  digests on both ranks after every step; the checkpoint state gathered from the shards equals
  the replicated memory's (tests/_gmm_two_ranks.py, which tests/test_gpu.py runs with NCCL);
  that checkpoint loaded by 3 ranks (and by 1) gives bitwise the same M-step as the 2-rank run.
"""

import os

import pytest
import torch
from _common import run_ranks
from _gmm_two_ranks import check_two_ranks, m_step_of_every_component, predictor, train_two_ranks

from gmmseg.gmm import MEMORY_STATE_NAMES, FeatureMemory, ShardedFeatureMemory

G, L, D = 5, 7, 3


def _pushes(steps=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        n = int(torch.randint(0, 25, (1,), generator=gen))
        yield torch.randint(0, G, (n,), generator=gen), torch.randn(n, D, generator=gen)


@pytest.mark.parametrize("init", ["random", "empty"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("w", [1, 2, 3, 9])  # 9 > capacity 7: two shards hold no slot at all
def test_shards_hold_the_replicated_rows_and_statistics(init, dtype, w):
    ref = FeatureMemory(G, L, D, init=init, dtype=dtype, seed=3)
    shards = [
        ShardedFeatureMemory(G, L, D, init=init, dtype=dtype, seed=3, shard_rank=r, num_shards=w)
        for r in range(w)
    ]
    assert all(s.bank.shape == (G, -(-L // w), D) for s in shards)  # bank / W per rank
    for groups, x in _pushes():
        ref.push(groups, x)
        for s in shards:
            s.push(groups, x)  # every rank is given every row, keeps its own slots
        for s in shards:
            assert torch.equal(s.ptr, ref.ptr) and torch.equal(s.filled, ref.filled)
            held = s.held_slots()
            assert held.tolist() == list(range(s.shard_rank, L, w))
            assert torch.equal(s.bank[:, : held.numel()], ref.bank[:, held])
            for running, exact in zip(s.local_statistics(), s.statistics_from_bank()):
                assert torch.equal(running, exact)
        for total, whole in zip(
            zip(*[s.local_statistics() for s in shards]), ref.local_statistics()
        ):
            assert torch.equal(sum(total), whole)  # int64: exact, in any order


def test_full_state_loads_into_any_number_of_shards():
    ref = FeatureMemory(G, L, D, init="random", seed=5)
    for groups, x in _pushes(seed=1):
        ref.push(groups, x)
    state = ref.state_dict()
    assert set(state) == set(MEMORY_STATE_NAMES) and state["bank"].shape == (G, L, D)
    for w in (1, 2, 4):
        shards = [
            ShardedFeatureMemory(G, L, D, init="empty", shard_rank=r, num_shards=w)
            for r in range(w)
        ]
        for s in shards:
            s.load_state_dict(state)
            assert torch.equal(s.bank[:, : s.held_slots().numel()], ref.bank[:, s.held_slots()])
        for total, whole in zip(
            zip(*[s.local_statistics() for s in shards]), ref.local_statistics()
        ):
            assert torch.equal(sum(total), whole)
    # and back: a replicated memory loads the state (statistics recomputed: the same, exactly)
    again = FeatureMemory(G, L, D, init="empty")
    again.load_state_dict(state)
    for a, b in zip(again.local_statistics(), ref.local_statistics()):
        assert torch.equal(a, b)


def test_a_shard_alone_is_not_a_checkpoint():
    s = ShardedFeatureMemory(G, L, D, init="random", shard_rank=1, num_shards=2)
    assert set(s.state_dict()) == {"ptr", "filled"}  # the bank only after gather_for_checkpoint()
    assert s.checkpoint_shapes()["bank"] == (G, L, D)


# --------------------------------------------------------------------------- several processes
def _resume(rank, out, world):
    """Load rank 0's checkpoint of the 2-rank run into `world` ranks, run the same M-step."""
    p = predictor("sharded" if world > 1 else "replicated")
    state = torch.load(os.path.join(out, "two_ranks_0.pt"), weights_only=True)["sharded"]
    p.load_state_dict(state)
    torch.save(m_step_of_every_component(p), os.path.join(out, f"resumed_{world}_{rank}.pt"))


def test_sharded_equals_replicated_on_two_ranks_and_reshards_to_three_and_one(tmp_path):
    out = str(tmp_path)
    run_ranks(train_two_ranks, 2, (out,))  # GLOO; tests/test_gpu.py runs the same with NCCL
    reference = check_two_ranks(out)

    # resume the 2-rank checkpoint with 3 ranks (re-sharded) and with 1 (replicated)
    run_ranks(_resume, 3, (out, 3))
    _resume(0, out, 1)
    for world, ranks_ in ((3, range(3)), (1, [0])):
        for r in ranks_:
            got = torch.load(tmp_path / f"resumed_{world}_{r}.pt", weights_only=True)
            for k in ("means", "stds"):
                assert torch.equal(got[k], reference[k]), (world, r, k)
