"""EM with em_loops > 1 re-runs an E-step and sums the window's rows on every rank; on GPUs float
index_add_ adds in whatever order its atomics come, so those sums must not depend on the order
of the rows at all, bitwise (else ranks drift apart and the EM state check stops training).
On the CPU a permutation of the rows stands for another order of addition."""

import torch

from gmmseg.gmm import GMMPredictor, segment_logsumexp, sinkhorn_assign
from gmmseg.gmm.fixed_point import group_sums


def _rows(n=3000, m=5, k=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(n, m, generator=g) * 3.0
    segments = torch.randint(0, k, (n,), generator=g)
    return values, segments, torch.randperm(n, generator=g)


def test_segment_logsumexp_is_bitwise_independent_of_row_order():
    v, seg, perm = _rows()
    a = segment_logsumexp(v, seg, 7)
    b = segment_logsumexp(v[perm], seg[perm], 7)
    assert torch.equal(a, b)
    # and still the log-sum-exp
    for s in range(7):
        assert torch.allclose(
            a[s], torch.logsumexp(v[seg == s].double(), 0).float(), rtol=0, atol=1e-5
        )


def test_sinkhorn_plan_is_bitwise_independent_of_row_order():
    v, seg, perm = _rows()
    plan = sinkhorn_assign(v, seg, 7, num_iters=3)
    plan_perm = sinkhorn_assign(v[perm], seg[perm], 7, num_iters=3)
    assert torch.equal(plan[perm], plan_perm)


def test_group_sums_are_exact_and_order_free():
    groups = torch.tensor([2, 0, 2, 2])
    x = torch.tensor([[0.5, -1.0], [0.25, 0.0], [1.5, 2.0], [-0.125, 3.0]])
    count, s1, s2 = group_sums(groups, x, 3)
    scale = 2.0**32
    assert count.tolist() == [1, 0, 3]
    assert (s1.double() / scale).tolist() == [[0.25, 0.0], [0.0, 0.0], [1.875, 4.0]]
    assert (s2.double() / scale).tolist() == [[0.0625, 0.0], [0.0, 0.0], [2.515625, 14.0]]
    v, seg, perm = _rows()
    for a, b in zip(group_sums(seg, v, 7), group_sums(seg[perm], v[perm], 7)):
        assert torch.equal(a, b)


def _em_loops_state(perm):
    """Means and stds after one em_update with em_loops = 3, the window's rows in order `perm` (a
    bank large enough to keep every row: what it holds does not depend on their order)."""
    torch.manual_seed(0)
    p = GMMPredictor(
        8,
        3,
        embed_dim=8,
        num_components=2,
        memory_size=1000,
        pushes_per_step=1000,
        push_rows="all",
        memory_init="empty",
        mean_momentum=0.5,
        em_loops=3,
    ).train()
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(600, 8, generator=g), torch.randint(0, 3, (600,), generator=g)
    p(x, y)
    p.flush()
    p._window = [torch.cat(p._window)[perm]]
    p.em_update()
    return p.means.clone(), p.stds.clone()


def test_em_loops_update_is_bitwise_independent_of_the_window_row_order():
    n = 600
    ident = torch.arange(n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(5))
    a, b = _em_loops_state(ident), _em_loops_state(perm)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
