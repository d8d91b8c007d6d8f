import torch
import torch.nn.functional as F

from gmmseg.gmm import gaussian_log_likelihood, naive_gaussian_log_likelihood


def _inputs(n=500, g=95, d=64):
    x = F.normalize(torch.randn(n, d), dim=-1)
    means = F.normalize(torch.randn(g, d), dim=-1)
    stds = 0.1 + torch.rand(g, d)  # >= 0.1
    return x, means, stds


def test_matmul_form_matches_direct_formula():
    x, means, stds = _inputs()
    fast = gaussian_log_likelihood(x, means, stds).double()
    ref = naive_gaussian_log_likelihood(x, means, stds)
    rel = ((fast - ref).abs() / ref.abs().clamp_min(1e-6)).max()
    assert rel < 1e-4, rel


def test_float32_under_autocast_and_gradient():
    x, means, stds = _inputs(64, 10, 16)
    x = x.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gaussian_log_likelihood(x, means, stds)
    assert out.dtype == torch.float32
    out.sum().backward()
    # d/dx of sum_g log N = sum_g (mu_g - x) / s_g^2
    expected = ((means[None] - x.detach()[:, None]) / stds[None].pow(2)).sum(1)
    assert torch.allclose(x.grad, expected, rtol=1e-4, atol=1e-3)


def test_peaks_at_the_mean():
    means = F.normalize(torch.randn(3, 8), dim=-1)
    stds = torch.full((3, 8), 0.2)
    ll = gaussian_log_likelihood(means, means, stds)
    assert torch.equal(ll.argmax(1), torch.arange(3))
