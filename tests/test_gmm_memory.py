import torch

from gmmseg.gmm import FeatureMemory, evenly_spaced_per_group


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


def test_running_statistics_equal_recomputation():
    torch.manual_seed(0)
    mem = FeatureMemory(num_groups=4, capacity=7, dim=3, init="random")
    for _ in range(10):
        g = torch.randint(0, 4, (9,))
        mem.push(g, torch.randn(9, 3))
    count, s1, s2 = [t.clone() for t in mem.statistics()]
    mem._recompute_statistics()
    assert torch.allclose(count, mem.stat_count)
    assert torch.allclose(s1, mem.stat_sum, atol=1e-9)
    assert torch.allclose(s2, mem.stat_sumsq, atol=1e-9)


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


def test_evenly_spaced_selection():
    groups = torch.tensor([0] * 10 + [1] * 2 + [2] * 5)
    groups = groups[torch.randperm(len(groups))]
    idx = evenly_spaced_per_group(groups, 4, 4)
    picked = groups[idx]
    assert torch.bincount(picked, minlength=4).tolist() == [4, 2, 4, 0]
    # within group 0 the picks are the rows of rank 0, 2, 5, 7 among that group's rows
    rows0 = (groups == 0).nonzero().squeeze(1)
    assert idx[picked == 0].tolist() == rows0[[0, 2, 5, 7]].tolist()
