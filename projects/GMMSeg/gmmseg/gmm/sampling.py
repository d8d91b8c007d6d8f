"""Choosing which embeddings of a batch go into the memory: the release's rule, made rank-local.

The release keeps, per (class, component) group, at most k rows of the *whole* gathered batch
(all ranks' rows in rank order, then pixel order): all of them when the group has n <= k rows,
else the rows at positions torch.linspace(0, n - 1, k) cast to int64, which equals
floor(j (n - 1) / (k - 1)) for j = 0..k-1 (checked against torch.linspace in the tests).

Here every rank knows its own rows and, after one small all-gather of per-group counts, its
offset within each group of the gathered batch and the group's total; it then picks exactly the
rows of its own that the release would pick. Only the picked rows travel: at most k per group
in total, whatever the number of ranks.

k may also differ per group (a (G,) tensor of quotas): the "correct_first" push rule
(predictor.py) selects a group's misclassified rows with the quota its correct rows left over.
"""

from typing import Optional, Union

import torch

__all__ = ["linspace_positions", "release_selection", "selection_sizes"]


def linspace_positions(n: int, k: int) -> torch.Tensor:
    """The positions the release keeps of a group of n rows: int64 (min(n, k),)."""
    if n <= k:
        return torch.arange(n)
    if k == 1:
        return torch.zeros(1, dtype=torch.long)
    return torch.arange(k) * (n - 1) // (k - 1)


Quota = Union[int, torch.Tensor]


def _quota(per_group: Quota, like: torch.Tensor) -> torch.Tensor:
    """per_group as a long tensor broadcastable against `like` (G,) or (W, G)."""
    return torch.as_tensor(per_group, dtype=torch.long, device=like.device).clamp_min(0)


def release_selection(
    groups: torch.Tensor,
    num_groups: int,
    per_group: Quota,
    offsets: Optional[torch.Tensor] = None,
    totals: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Indices of the rows of `groups` that the release's selection keeps.

    groups: (N,) long in [0, num_groups), this rank's rows in their order.
    per_group: k, an int (the release) or a (num_groups,) long tensor of quotas per group.
    offsets, totals: (num_groups,) long: this rank's first position within each group of the
        gathered batch, and the group's row count there. Default: this rank alone (0, own counts).
    Returns (S,) long indices into `groups`, increasing. No Python loop over groups.
    """
    if groups.numel() == 0:
        return groups.new_zeros((0,))
    counts = torch.bincount(groups, minlength=num_groups)
    offsets = torch.zeros_like(counts) if offsets is None else offsets.to(counts)
    totals = counts if totals is None else totals.to(counts)
    # position of each row within its group of the gathered batch
    order = torch.argsort(groups, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank_in_group = torch.empty_like(groups)
    rank_in_group[order] = (
        torch.arange(groups.numel(), device=groups.device) - starts[groups[order]]
    )
    p, n = offsets[groups] + rank_in_group, totals[groups]
    k = _quota(per_group, counts).expand(num_groups)[groups]
    k1 = (k - 1).clamp_min(1)
    # the only j whose position floor(j (n-1) / k1) can equal p: the smallest with j (n-1) / k1 >= p
    j = (p * k1 + (n - 2)) // (n - 1).clamp_min(1)
    spread = torch.where(k == 1, p == 0, (j * (n - 1)) // k1 == p)
    keep = (k > 0) & ((n <= k) | spread)
    return keep.nonzero().squeeze(1)


def selection_sizes(counts_per_rank: torch.Tensor, per_group: Quota) -> torch.Tensor:
    """How many rows each rank contributes to the release's selection.

    counts_per_rank: (W, G) long, rank r's row count in group g (ranks' rows gathered in order).
    per_group: k, an int or a (G,) long tensor of quotas (as in release_selection).
    Returns (W,) long: the size of release_selection(...) on each rank, computed on any rank
    without communication (so the gather of the selected rows needs no count exchange).
    """
    totals = counts_per_rank.sum(0)  # (G,)
    hi = torch.cumsum(counts_per_rank, 0)
    lo = hi - counts_per_rank
    k = _quota(per_group, totals).expand_as(totals)
    k1 = (k - 1).clamp_min(1)
    n1 = (totals - 1).clamp_min(1)

    def kept_before(x):  # number of kept positions < x: j with floor(j (n-1) / k1) < x
        spread = torch.minimum((x * k1 + n1 - 1) // n1, k).clamp_min(0)
        return torch.where(k == 1, (x > 0).long(), spread)

    picked = torch.where(totals <= k, counts_per_rank, kept_before(hi) - kept_before(lo))
    return torch.where(k > 0, picked, 0).sum(1)
