"""E-steps: which component of its own class each labelled embedding belongs to.

Both functions take the per-component log-likelihoods of each embedding *under its own class*
(N, M) plus the class of each embedding (N,), and handle all classes at once: sums over the
embeddings of one class are segment reductions (index_add / scatter_reduce), never a Python loop.

The segment sums are order-independent: every term is rounded to int64 fixed point
(fixed_point.py) and added as an integer, so the result is bitwise the same whatever the order of
the rows and whatever order a GPU's atomics add them in (float index_add_ on CUDA is not; ranks
re-running an E-step on the same rows, em_loops > 1, would drift apart in the last bits).
"""

import torch

from .fixed_point import from_fixed_point, to_fixed_point

__all__ = [
    "sinkhorn_assign",
    "vanilla_assign",
    "segment_logsumexp",
    "equipartition_error",
    "ASSIGNERS",
]


def segment_logsumexp(
    values: torch.Tensor, segments: torch.Tensor, num_segments: int
) -> torch.Tensor:
    """log sum exp of the rows of `values` (N, M) within each segment: returns (num_segments, M).

    Empty segments give -inf. Bitwise independent of the order of the rows: the maximum is
    order-free, and the terms exp(v - max) in [0, 1] are summed in int64 fixed point (absolute
    error 2^-33 per term; the sum is >= 1, as the maximum's term is 1).
    """
    m = values.shape[1]
    idx = segments[:, None].expand(-1, m)
    seg_max = values.new_full((num_segments, m), float("-inf"))
    seg_max = seg_max.scatter_reduce(0, idx, values, reduce="amax", include_self=True)
    safe_max = torch.where(torch.isfinite(seg_max), seg_max, torch.zeros_like(seg_max))
    terms = to_fixed_point((values - safe_max[segments]).exp().double())
    sums = torch.zeros((num_segments, m), dtype=torch.long, device=values.device).index_add_(
        0, segments, terms
    )
    return from_fixed_point(sums).to(values.dtype).log() + safe_max


def sinkhorn_assign(
    log_likelihood: torch.Tensor,
    classes: torch.Tensor,
    num_classes: int,
    num_iters: int = 3,
    epsilon: float = 0.05,
) -> torch.Tensor:
    """Equipartition (Sinkhorn-Knopp) assignment of each embedding to a component of its class.

    Solves, per class c, the entropic transport between the N_c embeddings (mass 1 each) and the
    M components (mass N_c / M each) with score = log-likelihood, in the log domain.

    log_likelihood: (N, M) scores of each embedding for the components of its own class.
    classes: (N,) long in [0, num_classes).
    Returns the transport plan's log (N, M); argmax(-1) is the hard assignment.
    """
    n, m = log_likelihood.shape
    if n == 0:
        return log_likelihood.new_zeros((0, m))
    scores = log_likelihood.detach().float()
    # The release scales each class's scores by their max |value| before dividing by epsilon;
    # it makes epsilon a relative temperature, independent of D and of the stds.
    scale = scores.new_zeros(num_classes).scatter_reduce(
        0, classes, scores.abs().amax(1), reduce="amax", include_self=True
    )
    log_q = scores / scale[classes].clamp_min(1e-12)[:, None] / epsilon
    counts = torch.bincount(classes, minlength=num_classes).to(log_q)
    for _ in range(num_iters):
        # columns: every component of class c receives N_c / M of the mass
        col = segment_logsumexp(log_q, classes, num_classes)
        log_q = log_q - col[classes] + (counts[classes] / m).log()[:, None]
        # rows: every embedding gives mass 1
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True)
    return log_q


def vanilla_assign(
    log_likelihood: torch.Tensor, classes: torch.Tensor = None, num_classes: int = 0, **_
) -> torch.Tensor:
    """Plain EM responsibilities (uniform mixing weights): log softmax over the components.

    Same signature as sinkhorn_assign; returns log responsibilities (N, M).
    """
    return torch.log_softmax(log_likelihood.detach().float(), dim=1)


def equipartition_error(log_plan: torch.Tensor, classes: torch.Tensor, num_classes: int) -> float:
    """Largest relative deviation of component masses from N_c / M (diagnostics and tests)."""
    m = log_plan.shape[1]
    mass = log_plan.new_zeros((num_classes, m)).index_add_(0, classes, log_plan.exp())
    counts = torch.bincount(classes, minlength=num_classes).to(mass)
    present = counts > 0
    target = (counts / m)[:, None]
    return (
        float(((mass - target).abs() / target.clamp_min(1e-12))[present].max())
        if present.any()
        else 0.0
    )


ASSIGNERS = {"sinkhorn": sinkhorn_assign, "vanilla": vanilla_assign}
