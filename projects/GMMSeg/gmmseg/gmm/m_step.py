"""The release's M-step: a Gaussian's mean and std from the sufficient statistics of its rows."""

import torch
import torch.nn.functional as F

__all__ = ["gaussian_m_step"]


def gaussian_m_step(count: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor, variance_floor: float):
    """The release's M-step from sufficient statistics of G groups: count (G,), sum (G, D), sum
    of squares (G, D), float64. Mean = L2-normalised sum; std per dimension = sqrt(mean over the
    rows of (x - mean)^2 + floor), about that normalised mean. Groups with count 0 give NaN."""
    n = count[:, None]
    mean = F.normalize(s1, dim=-1)
    var = s2 / n - 2 * mean * s1 / n + mean.pow(2)
    return mean, (var.clamp_min(0) + variance_floor).sqrt()
