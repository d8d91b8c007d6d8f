"""The one collective the EM needs: every rank gets every rank's rows, in rank order.

Uses torch.distributed directly (no detectron2), and is a no-op in a single process.
"""
import torch
import torch.distributed as dist

__all__ = ["world_size", "all_gather_rows"]


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate x (N_r, F) from all ranks r = 0..W-1 (N_r may differ, may be 0).

    Two collectives: the row counts, then the rows padded to the largest count. Every rank must
    call it, also with zero rows, so that a rank with an all-ignore batch never hangs the others.
    """
    w = world_size()
    if w == 1:
        return x
    # GLOO and NCCL both handle this; the payload stays on x's device.
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(w)]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    padded = x.new_zeros((max(sizes), x.shape[1]))
    padded[: x.shape[0]] = x
    out = [torch.zeros_like(padded) for _ in range(w)]
    dist.all_gather(out, padded)
    return torch.cat([o[:s] for o, s in zip(out, sizes)], dim=0)
