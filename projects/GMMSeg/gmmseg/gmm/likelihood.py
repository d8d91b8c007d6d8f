"""Diagonal-Gaussian log-likelihoods as one matrix product.

For an embedding x (D,) and a Gaussian with mean mu and per-dimension std s:

    log N(x) = -D/2 log(2 pi) - sum_d log s_d - 1/2 sum_d (x_d - mu_d)^2 / s_d^2
             = [x^2, x, 1] . [-1/2 s^-2, mu s^-2, c]      with c = -D/2 log 2pi - sum log s - 1/2 sum mu^2 s^-2

so the whole N x G table (G = classes * components) is two GEMMs of (N, D) by (D, G) plus a
constant row; nothing of size N x G x D is ever built. Everything runs in float32, also under autocast.
"""

import math

import torch

__all__ = ["gaussian_log_likelihood", "naive_gaussian_log_likelihood", "likelihood_weights"]


def likelihood_weights(means: torch.Tensor, stds: torch.Tensor) -> torch.Tensor:
    """Pack G diagonal Gaussians into the (2D+1, G) matrix of the one-GEMM form.

    means, stds: (G, D). Returns float32 (2D+1, G).
    """
    means = means.float()
    inv_var = stds.float().pow(-2)
    d = means.shape[-1]
    const = (
        -0.5 * d * math.log(2 * math.pi)
        - stds.float().log().sum(-1)
        - 0.5 * (means.pow(2) * inv_var).sum(-1)
    )
    return torch.cat([-0.5 * inv_var, means * inv_var, const[:, None]], dim=1).t().contiguous()


def gaussian_log_likelihood(
    x: torch.Tensor, means: torch.Tensor, stds: torch.Tensor
) -> torch.Tensor:
    """log N(x_n; mu_g, diag(s_g^2)) for every embedding and every Gaussian.

    x: (N, D); means, stds: (G, D). Returns float32 (N, G). Differentiable w.r.t. all inputs.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        weights = likelihood_weights(means, stds)
        d = x.shape[-1]
        # const + x @ (mu s^-2) + x^2 @ (-1/2 s^-2): two GEMMs accumulating into one output
        # (about 2x faster than one GEMM on the concatenation [x^2, x], which must be written out)
        out = torch.addmm(weights[2 * d], x, weights[d : 2 * d])
        return (
            out.addmm_(x * x, weights[:d]) if not out.requires_grad else out + (x * x) @ weights[:d]
        )


def naive_gaussian_log_likelihood(
    x: torch.Tensor, means: torch.Tensor, stds: torch.Tensor
) -> torch.Tensor:
    """Reference by broadcasting (N, G, D): the release's form. For tests and benchmarks only."""
    x, means, stds = x.double(), means.double(), stds.double()
    z = (x[:, None, :] - means[None]) / stds[None]
    d = x.shape[-1]
    return -0.5 * d * math.log(2 * math.pi) - stds.log().sum(-1)[None] - 0.5 * z.pow(2).sum(-1)
