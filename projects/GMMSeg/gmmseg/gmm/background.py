"""BackgroundDensity: one class-agnostic Gaussian mixture of all known embeddings.

The reference density of the "likelihood_ratio" anomaly score (gmmseg/scores/table.py): the GMM's
class likelihood relative to how likely the embedding is under any known class at all (Relative
Mahalanobis, Ren et al. 2021, with a mixture of B diagonal Gaussians instead of one Gaussian, so
that the background follows the several clusters of the known embeddings). Fitted after training on
embeddings of labelled training pixels (tools/fit_scores.py, with scikit-learn's GaussianMixture);
never trained, never in a checkpoint (its buffers are not persistent): the fit file holds it.
"""

from typing import Dict

import torch
from torch import nn

from .likelihood import gaussian_log_likelihood

__all__ = ["BackgroundDensity"]


class BackgroundDensity(nn.Module):
    def __init__(self, weights: torch.Tensor, means: torch.Tensor, stds: torch.Tensor):
        super().__init__()
        weights, means, stds = (
            torch.as_tensor(t, dtype=torch.float32) for t in (weights, means, stds)
        )
        b = weights.numel()
        if means.shape != stds.shape or means.dim() != 2 or means.shape[0] != b:
            raise ValueError(
                f"background density: weights ({b},), means and stds (B, D) expected, got "
                f"{tuple(weights.shape)}, {tuple(means.shape)}, {tuple(stds.shape)}"
            )
        if not bool((weights > 0).all()) or not bool((stds > 0).all()):
            raise ValueError("background density: weights and stds must be > 0")
        self.register_buffer("log_weights", (weights / weights.sum()).log(), persistent=False)
        self.register_buffer("means", means, persistent=False)
        self.register_buffer("stds", stds, persistent=False)

    @classmethod
    def from_dict(cls, d: Dict) -> "BackgroundDensity":
        return cls(torch.tensor(d["weights"]), torch.tensor(d["means"]), torch.tensor(d["stds"]))

    def to_dict(self) -> Dict:
        return {
            "weights": self.log_weights.exp().tolist(),
            "means": self.means.tolist(),
            "stds": self.stds.tolist(),
        }

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """e: (N, D) -> (N,) log p_background(e)."""
        ll = gaussian_log_likelihood(e, self.means, self.stds)  # (N, B)
        return torch.logsumexp(ll + self.log_weights, dim=1)

    def extra_repr(self):
        return f"components={self.means.shape[0]}, dim={self.means.shape[1]}"
