"""Choosing which embeddings of a batch go into the memory: the release's rule, made rank-local.

The release keeps, per (class, component) group, at most k rows of the *whole* gathered batch
(all ranks' rows in rank order, then pixel order): all of them when the group has n <= k rows,
else the rows at positions torch.linspace(0, n - 1, k) cast to int64, which equals
floor(j (n - 1) / (k - 1)) for j = 0..k-1 (checked against torch.linspace in the tests).

Here every rank knows its own rows and, after one small all-gather of per-group counts, its
offset within each group of the gathered batch and the group's total; it then picks exactly the
rows of its own that the release would pick. Only the picked rows travel: at most k per group
in total, whatever the number of ranks.
"""
from typing import Optional

import torch

__all__ = ["linspace_positions", "release_selection", "selection_sizes"]


def linspace_positions(n: int, k: int) -> torch.Tensor:
    """The positions the release keeps of a group of n rows: int64 (min(n, k),)."""
    if n <= k:
        return torch.arange(n)
    if k == 1:
        return torch.zeros(1, dtype=torch.long)
    return torch.arange(k) * (n - 1) // (k - 1)


def release_selection(groups: torch.Tensor, num_groups: int, per_group: int,
                      offsets: Optional[torch.Tensor] = None, totals: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Indices of the rows of `groups` that the release's selection keeps.

    groups: (N,) long in [0, num_groups), this rank's rows in their order.
    offsets, totals: (num_groups,) long: this rank's first position within each group of the
        gathered batch, and the group's row count there. Default: this rank alone (0, own counts).
    Returns (S,) long indices into `groups`, increasing. No Python loop over groups.
    """
    if groups.numel() == 0 or per_group <= 0:
        return groups.new_zeros((0,))
    counts = torch.bincount(groups, minlength=num_groups)
    offsets = torch.zeros_like(counts) if offsets is None else offsets.to(counts)
    totals = counts if totals is None else totals.to(counts)
    # position of each row within its group of the gathered batch
    order = torch.argsort(groups, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank_in_group = torch.empty_like(groups)
    rank_in_group[order] = torch.arange(groups.numel(), device=groups.device) - starts[groups[order]]
    p, n = offsets[groups] + rank_in_group, totals[groups]
    if per_group == 1:
        keep = p == 0
    else:
        k1 = per_group - 1
        # the only j whose position floor(j (n-1) / k1) can equal p: the smallest with j (n-1) / k1 >= p
        j = (p * k1 + (n - 2)) // (n - 1).clamp_min(1)
        keep = (n <= per_group) | ((j * (n - 1)) // k1 == p)
    return keep.nonzero().squeeze(1)


def selection_sizes(counts_per_rank: torch.Tensor, per_group: int) -> torch.Tensor:
    """How many rows each rank contributes to the release's selection.

    counts_per_rank: (W, G) long, rank r's row count in group g (ranks' rows gathered in order).
    Returns (W,) long: the size of release_selection(...) on each rank, computed on any rank
    without communication (so the gather of the selected rows needs no count exchange).
    """
    totals = counts_per_rank.sum(0)  # (G,)
    hi = torch.cumsum(counts_per_rank, 0)
    lo = hi - counts_per_rank
    if per_group <= 0:
        return torch.zeros_like(counts_per_rank[:, 0])
    k1 = max(per_group - 1, 1)
    n1 = (totals - 1).clamp_min(1)

    def kept_before(x):  # number of kept positions < x: j with floor(j (n-1) / k1) < x
        if per_group == 1:
            return (x > 0).long()
        return ((x * k1 + n1 - 1) // n1).clamp(0, per_group)

    picked = torch.where(totals <= per_group, counts_per_rank, kept_before(hi) - kept_before(lo))
    return picked.sum(1)
