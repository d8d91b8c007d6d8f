import torch

from gmmseg.gmm import FeatureMemory, linspace_positions, release_selection, selection_sizes


def test_wraparound_keeps_newest_in_order():
    mem = FeatureMemory(num_groups=3, capacity=5, dim=2, init="empty")
    for step in range(4):  # 4 pushes of 3 rows into group 1 -> 12 rows, capacity 5
        rows = torch.arange(step * 3, step * 3 + 3).float()[:, None].repeat(1, 2)
        mem.push(torch.ones(3, dtype=torch.long), rows)
    assert int(mem.filled[1]) == 5 and int(mem.filled[0]) == 0
    assert mem.newest(1, 5)[:, 0].tolist() == [7, 8, 9, 10, 11]
    # a single push larger than the capacity keeps its newest rows
    mem.push(torch.full((8,), 2), torch.arange(8).float()[:, None].repeat(1, 2))
    assert mem.newest(2, 5)[:, 0].tolist() == [3, 4, 5, 6, 7]


def test_running_statistics_equal_recomputation_exactly():
    """Fixed-point (int64) statistics: add-the-new, subtract-the-overwritten never drifts."""
    torch.manual_seed(0)
    mem = FeatureMemory(num_groups=4, capacity=7, dim=3, init="random")
    for _ in range(10):
        g = torch.randint(0, 4, (9,))
        mem.push(g, torch.randn(9, 3))
    for running, exact in zip(mem.local_statistics(), mem.statistics_from_bank()):
        assert torch.equal(running, exact)
    # and they are the float64 statistics of the bank up to the rounding to 2^-32 per value
    count, s1, s2 = mem.statistics()
    bank = mem.bank.double()
    assert count.tolist() == [7.0] * 4
    assert torch.allclose(s1, bank.sum(1), rtol=0, atol=7 * 2.0**-33)
    assert torch.allclose(s2, bank.pow(2).sum(1), rtol=0, atol=7 * 2.0**-33)


def test_empty_init_counts_only_written_entries():
    mem = FeatureMemory(num_groups=2, capacity=10, dim=2, init="empty")
    mem.push(torch.tensor([0, 0]), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    count, s1, _ = mem.statistics()
    assert count.tolist() == [2, 0]
    assert s1[0].tolist() == [4.0, 6.0]


def test_batch_only_memory_resets():
    mem = FeatureMemory(num_groups=2, capacity=0, dim=2)
    mem.push(torch.tensor([1]), torch.tensor([[1.0, 1.0]]))
    assert mem.statistics()[0].tolist() == [0, 1]
    mem.reset_batch_statistics()
    assert mem.statistics()[0].tolist() == [0, 0]


def test_linspace_positions_are_torch_linspace_cast_to_int64():
    for n in list(range(1, 60)) + [997, 31999, 32000, 123457]:
        for k in (1, 2, 5, 20):
            want = torch.linspace(0, n - 1, k, dtype=torch.int64) if n > k else torch.arange(n)
            assert linspace_positions(n, k).tolist() == want.tolist(), (n, k)


def test_release_selection_hand_computed():
    # group 0: 10 rows, keep linspace(0, 9, 4) = 0, 3, 6, 9; group 1: 2 rows, both;
    # group 2: 5 rows, linspace(0, 4, 4) = 0, 1.33, 2.67, 4 -> 0, 1, 2, 4
    groups = torch.tensor([0] * 10 + [1] * 2 + [2] * 5)
    perm = torch.randperm(len(groups), generator=torch.Generator().manual_seed(0))
    groups = groups[perm]
    idx = release_selection(groups, 4, 4)
    assert idx.tolist() == sorted(idx.tolist())
    for g, ranks in ((0, [0, 3, 6, 9]), (1, [0, 1]), (2, [0, 1, 2, 4]), (3, [])):
        rows_g = (groups == g).nonzero().squeeze(1)
        assert idx[groups[idx] == g].tolist() == rows_g[ranks].tolist()


def test_release_selection_split_over_ranks_equals_whole_batch():
    gen = torch.Generator().manual_seed(1)
    whole = torch.randint(0, 6, (300,), generator=gen)
    cuts = [0, 70, 71, 190, 300]  # 4 ranks, one with a single row
    parts = [whole[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    counts = torch.stack([torch.bincount(p, minlength=6) for p in parts])
    offsets = torch.cumsum(counts, 0) - counts
    for k in (1, 7, 20, 60):
        picked = [
            release_selection(p, 6, k, offsets[r], counts.sum(0)) + cuts[r]
            for r, p in enumerate(parts)
        ]
        assert torch.cat(picked).tolist() == release_selection(whole, 6, k).tolist()
        assert selection_sizes(counts, k).tolist() == [len(p) for p in picked]


def test_release_selection_with_a_quota_per_group():
    # quotas 0, 1, 3, 20 for groups 0..3: group g keeps linspace_positions(n_g, k_g) of its rows,
    # whole batch or split over ranks (the "correct_first" push rule selects this way)
    gen = torch.Generator().manual_seed(2)
    whole = torch.randint(0, 4, (200,), generator=gen)
    quota = torch.tensor([0, 1, 3, 20])
    idx = release_selection(whole, 4, quota)
    for g in range(4):
        rows_g = (whole == g).nonzero().squeeze(1)
        want = rows_g[linspace_positions(len(rows_g), int(quota[g]))] if quota[g] else rows_g[:0]
        assert idx[whole[idx] == g].tolist() == want.tolist(), g
    cuts = [0, 50, 51, 120, 200]
    parts = [whole[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    counts = torch.stack([torch.bincount(p, minlength=4) for p in parts])
    offsets = torch.cumsum(counts, 0) - counts
    picked = [
        release_selection(p, 4, quota, offsets[r], counts.sum(0)) + cuts[r]
        for r, p in enumerate(parts)
    ]
    assert torch.cat(picked).tolist() == idx.tolist()
    assert selection_sizes(counts, quota).tolist() == [len(p) for p in picked]
    # an int quota and the same quota for every group select the same rows
    assert (
        release_selection(whole, 4, torch.full((4,), 7)).tolist()
        == release_selection(whole, 4, 7).tolist()
    )
