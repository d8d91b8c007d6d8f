"""The collectives the EM needs: every rank gets every rank's rows, in rank order; and the
sum over ranks of a sharded memory's statistics.

Uses torch.distributed directly (no detectron2); every function is a no-op in a single process.
"""

import torch
import torch.distributed as dist

__all__ = ["world_size", "rank", "all_gather_rows", "all_gather_stacked", "all_reduce_sum"]


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def all_gather_stacked(x: torch.Tensor) -> torch.Tensor:
    """x (same shape on every rank) -> (W, *x.shape), rank r's x at index r. One collective."""
    w = world_size()
    if w == 1:
        return x[None]
    out = [torch.empty_like(x) for _ in range(w)]
    dist.all_gather(out, x.contiguous())
    return torch.stack(out)


def all_gather_rows(x: torch.Tensor, sizes=None) -> torch.Tensor:
    """Concatenate x (N_r, F) from all ranks r = 0..W-1 (N_r may differ, may be 0).

    Two collectives: the row counts (skipped when every rank's N_r is given as `sizes`), then the
    rows padded to the largest count. Every rank must call it, also with zero rows, so that a rank
    with an all-ignore batch never hangs the others.
    """
    w = world_size()
    if w == 1:
        return x
    # GLOO and NCCL both handle this; the payload stays on x's device.
    if sizes is None:
        n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
        sizes = all_gather_stacked(n)[:, 0]
    sizes = [int(s) for s in sizes]
    padded = x.new_zeros((max(sizes), x.shape[1]))
    padded[: x.shape[0]] = x
    out = [torch.zeros_like(padded) for _ in range(w)]
    dist.all_gather(out, padded)
    return torch.cat([o[:s] for o, s in zip(out, sizes)], dim=0)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of x over all ranks (a new tensor). One collective. For integer
    tensors the result is exact, hence the same on every rank whatever the reduction order."""
    out = x.clone()
    if world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out
