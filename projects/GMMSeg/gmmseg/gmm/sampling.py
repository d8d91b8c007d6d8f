"""Choosing which embeddings of a batch go into the memory."""
import torch

__all__ = ["evenly_spaced_per_group"]


def evenly_spaced_per_group(groups: torch.Tensor, num_groups: int, per_group: int) -> torch.Tensor:
    """Indices of at most `per_group` rows of each group, evenly spaced in the original order.

    groups: (N,) long in [0, num_groups). A group with n <= per_group rows keeps them all; a larger
    one keeps the rows of rank floor(j * n / per_group), j = 0..per_group-1 (the release's choice).
    Returns a (K,) long tensor of row indices, sorted by group then by position. No Python loop.
    """
    if groups.numel() == 0 or per_group <= 0:
        return groups.new_zeros((0,))
    order = torch.argsort(groups, stable=True)
    counts = torch.bincount(groups, minlength=num_groups)
    starts = torch.cumsum(counts, 0) - counts
    j = torch.arange(per_group, device=groups.device)
    take = torch.minimum(counts, torch.full_like(counts, per_group))
    ranks = torch.where(
        counts[:, None] > per_group,
        (j[None] * counts[:, None]) // per_group,
        j[None].expand(num_groups, -1),
    )
    valid = j[None] < take[:, None]
    positions = (starts[:, None] + ranks)[valid]
    return order[positions]
