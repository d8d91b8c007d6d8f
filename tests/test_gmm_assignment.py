import numpy as np
import pytest
import torch

from gmmseg.gmm import equipartition_error, segment_logsumexp, sinkhorn_assign, vanilla_assign


def test_segment_logsumexp_matches_loop():
    v = torch.randn(50, 4) * 30
    seg = torch.randint(0, 5, (50,))
    seg[seg == 3] = 4  # segment 3 empty
    out = segment_logsumexp(v, seg, 5)
    for s in range(5):
        if (seg == s).any():
            assert torch.allclose(out[s], torch.logsumexp(v[seg == s], 0), atol=1e-5)
        else:
            assert torch.isinf(out[s]).all()


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
def test_sinkhorn_marginals_hold_at_any_scale(scale):
    n, m, k = 600, 5, 4
    scores = torch.randn(n, m) * scale - 50 * scale
    classes = torch.randint(0, k, (n,))
    plan = sinkhorn_assign(scores, classes, k, num_iters=50, epsilon=0.05)
    assert torch.isfinite(plan).all()
    assert torch.allclose(plan.exp().sum(1), torch.ones(n), atol=1e-4)  # rows: mass 1
    assert equipartition_error(plan, classes, k) < 0.05  # columns: N_c / M each


def test_sinkhorn_balances_a_skewed_assignment():
    # every pixel prefers component 0 a little: the greedy (vanilla) argmax puts all in 0,
    # the equipartition assignment spreads them over all components
    n, m = 400, 4
    scores = torch.randn(n, m) * 0.01
    scores[:, 0] += 0.05
    classes = torch.zeros(n, dtype=torch.long)
    hard_vanilla = vanilla_assign(scores, classes, 1).argmax(1)
    hard_sk = sinkhorn_assign(scores, classes, 1, num_iters=3).argmax(1)
    assert torch.bincount(hard_vanilla, minlength=m)[0] == n
    counts = torch.bincount(hard_sk, minlength=m)
    assert counts.min() > n / m * 0.5


def test_recovers_well_separated_mixture():
    # two classes, three well separated clusters each; the E-step must group each cluster
    torch.manual_seed(1)
    d = 8
    centers = torch.eye(d)[:6] * 5
    x, cls, cluster = [], [], []
    for c in range(6):
        x.append(centers[c] + 0.1 * torch.randn(100, d))
        cls.append(torch.full((100,), c // 3))
        cluster.append(torch.full((100,), c))
    x, cls, cluster = torch.cat(x), torch.cat(cls), torch.cat(cluster)
    # components initialised at the cluster centres in a permuted order
    perm = torch.tensor([2, 0, 1])
    comp_means = torch.stack([centers[:3][perm], centers[3:][perm]])  # (2, 3, d)
    ll = -0.5 * ((x[:, None] - comp_means[cls]) ** 2).sum(-1)  # (N, M) under own class
    assign = sinkhorn_assign(ll, cls, 2, num_iters=3).argmax(1)
    for c in range(6):
        a = assign[cluster == c]
        assert (a == a[0]).all(), "a cluster was split"
        assert int(perm[a[0]]) == c % 3


def _sinkhorn_reference(scores, iters, eps=0.05):
    """The release's recipe written out with numpy: scale by max |score|, exp(. / eps), then
    `iters` rounds of (each component gets 1/M of the mass, each pixel 1/N); rows sum to 1."""
    s = scores / np.abs(scores).max()
    q = np.exp(s / eps)
    q = q / q.sum()
    n, m = q.shape
    for _ in range(iters):
        q = q / q.sum(0, keepdims=True) / m
        q = q / q.sum(1, keepdims=True) / n
    return q * n


def test_sinkhorn_plan_is_three_rounds_of_the_release_recipe():
    scores = np.array([[-1.0, -1.3], [-1.1, -1.2], [-0.9, -1.6], [-1.0, -1.05]])
    got = sinkhorn_assign(
        torch.tensor(scores), torch.zeros(4, dtype=torch.long), 1, num_iters=3
    ).exp()
    want = _sinkhorn_reference(scores, 3)
    assert np.allclose(got.numpy(), want, atol=1e-5)
    # the example tells the rounds apart: two rounds give another plan
    assert np.abs(_sinkhorn_reference(scores, 2) - want).max() > 1e-2


def test_sinkhorn_scales_each_class_by_its_own_maximum():
    """Two classes whose scores differ 100x, each a symmetric 2 x 2 block [[a, b], [b, a]]: the
    block is already balanced, so the plan is the row softmax of score / max|score of the class|
    / epsilon. Class 0 (-1, -2) and class 1 (-100, -200) both become (-0.5, -1) / 0.05 =
    (-10, -20): each pixel keeps sigmoid(10) = 0.9999546 on its best component. One maximum
    over the batch (200) would leave class 0 at (-0.1, -0.2) / 0.05: sigmoid(0.1) = 0.525."""
    scores = torch.tensor([[-1.0, -2.0], [-100.0, -200.0], [-2.0, -1.0], [-200.0, -100.0]])
    classes = torch.tensor([0, 1, 0, 1])
    plan = sinkhorn_assign(scores, classes, 2, num_iters=3, epsilon=0.05).exp()
    hi, lo = 1 / (1 + np.exp(-10.0)), 1 / (1 + np.exp(10.0))
    want = torch.tensor([[hi, lo], [hi, lo], [lo, hi], [lo, hi]], dtype=torch.float32)
    assert torch.allclose(plan, want, atol=1e-6)
    # a class's plan does not depend on the other class's scale
    alone = sinkhorn_assign(scores[[0, 2]], torch.zeros(2, dtype=torch.long), 1, num_iters=3).exp()
    assert torch.allclose(plan[[0, 2]], alone, atol=1e-7)
