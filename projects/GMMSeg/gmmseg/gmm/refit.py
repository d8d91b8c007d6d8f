"""Refit a trained GMMPredictor's Gaussians to a set of labelled embeddings, EM run to convergence.

During training the means move by momentum (release: 0.999 every 5 iterations), so after a short
schedule they still hold much of their random start (after 1,000 iterations 0.999^200 = 82%).
`refit_gmm` runs the same EM as training (E-step: the predictor's assignment, Sinkhorn by
default, over all rows of a class at once; M-step: `gaussian_m_step`, the release's rule) without
momentum, for a number of rounds, starting from the predictor's current means. The network is not
touched: only `means` and `stds` change, so closed-set logits (through the class LayerNorm) and
anomaly scores are those of the same features under converged Gaussians.
"""

import torch

from .assignment import ASSIGNERS
from .m_step import gaussian_m_step

__all__ = ["refit_gmm"]


def _own_class_scores(predictor, e, y, chunk):
    """(N, M) component log-likelihoods of every row under its own class, in chunks of rows."""
    m = predictor.num_components
    out = []
    for a in range(0, len(e), chunk):
        comp = predictor.component_log_likelihood(e[a : a + chunk])  # (n, K, M)
        out.append(comp.gather(1, y[a : a + chunk].view(-1, 1, 1).expand(-1, 1, m)).squeeze(1))
    return torch.cat(out)


@torch.no_grad()
def refit_gmm(
    predictor,
    e: torch.Tensor,
    y: torch.Tensor,
    rounds: int = 10,
    variance_floor: float = None,
    chunk: int = 65536,
):
    """Set `predictor.means` / `predictor.stds` by `rounds` hard-assignment EM rounds on rows e
    (N, D) (embeddings, i.e. `predictor.embed` outputs) of classes y (N,), from the current means.

    A component that receives no row in a round keeps its parameters; a class with no row is not
    touched. variance_floor: default the predictor's. Returns the mean log-likelihood of the rows
    under their own class (max over its components) before the first round and after each round.
    """
    if rounds < 1:
        raise ValueError(f"refit_gmm: rounds must be >= 1, got {rounds}")
    if predictor.learn_by_gradient:
        raise ValueError(
            "refit_gmm: this predictor learns its Gaussians by gradient (no EM to run)"
        )
    if e.ndim != 2 or e.shape[1] != predictor.embed_dim or y.shape != e.shape[:1]:
        raise ValueError(
            f"refit_gmm: expected rows (N, {predictor.embed_dim}) and classes (N,), "
            f"got {tuple(e.shape)} and {tuple(y.shape)}"
        )
    k, m, d = predictor.means.shape
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
        raise ValueError(
            f"refit_gmm: class ids must be in 0..{k - 1}, got {int(y.min())}..{int(y.max())}"
        )
    floor = predictor.variance_floor if variance_floor is None else float(variance_floor)
    e = e.to(predictor.means)
    ed = e.double()
    own = _own_class_scores(predictor, e, y, chunk)
    history = [float(own.amax(1).mean())]
    for _ in range(rounds):
        plan = ASSIGNERS[predictor.em_algorithm](
            own, y, k, num_iters=predictor.sinkhorn_iters, epsilon=predictor.sinkhorn_epsilon
        )
        groups = y * m + plan.argmax(1)
        count = torch.zeros(k * m, dtype=torch.float64, device=e.device).index_add_(
            0, groups, torch.ones_like(groups, dtype=torch.float64)
        )
        s1 = torch.zeros(k * m, d, dtype=torch.float64, device=e.device).index_add_(0, groups, ed)
        s2 = torch.zeros(k * m, d, dtype=torch.float64, device=e.device).index_add_(
            0, groups, ed * ed
        )
        fed = count > 0
        mean, std = gaussian_m_step(count[fed], s1[fed], s2[fed], floor)
        predictor.means.view(k * m, d)[fed] = mean.to(predictor.means)
        predictor.stds.view(k * m, d)[fed] = std.to(predictor.stds)
        own = _own_class_scores(predictor, e, y, chunk)  # the next round's E-step reads it too
        history.append(float(own.amax(1).mean()))
    return history
