"""Exact sufficient statistics: sums of embeddings kept as int64 fixed-point numbers.

Every value entering a sum is rounded once to a multiple of 2^-FRACTION_BITS (x and x^2 of a
float32 / bfloat16 / float16 entry are exact in float64, so the rounding is the only error, at
most 2^-33 = 1.2e-10 per value). Integer sums are exact and associative, which makes the running
statistics of the feature memory

- a pure function of the rows the memory holds, whatever the order of pushes and evictions (no
  drift over 160k iterations of add-the-new, subtract-the-overwritten);
- the same whether the rows live on one rank or are spread over W ranks and summed by an
  all-reduce in any order: bitwise identical on every rank, for every W, on every backend
  (also on GPUs, where float index_add_ adds in a non-deterministic order).

Range: a group of `capacity` rows sums at most capacity * max|x|^2 * 2^32, which must stay below
2^62; `value_bound(capacity)` is the largest |x| allowed (183 for 32,000 rows; the GMM's
embeddings are unit vectors).
"""

import math

import torch

__all__ = ["FRACTION_BITS", "to_fixed_point", "from_fixed_point", "value_bound", "group_sums"]

FRACTION_BITS = 32
_SCALE = float(2**FRACTION_BITS)
_LIMIT_BITS = 62  # headroom below int64's 63 bits


def to_fixed_point(x: torch.Tensor) -> torch.Tensor:
    """float64 values -> int64, rounded to the nearest multiple of 2^-FRACTION_BITS."""
    return torch.round(x * _SCALE).long()


def from_fixed_point(q: torch.Tensor) -> torch.Tensor:
    """int64 fixed-point values -> float64 (exact below 2^53 / 2^FRACTION_BITS = 2^21 in magnitude)."""
    return q.double() / _SCALE


def value_bound(capacity: int) -> float:
    """Largest |x| whose squares, `capacity` of them, cannot overflow the fixed-point sums."""
    return math.sqrt(2.0 ** (_LIMIT_BITS - FRACTION_BITS) / max(int(capacity), 1))


def group_sums(groups: torch.Tensor, x: torch.Tensor, num_groups: int):
    """Count (G,) int64, sum (G, D) and sum of squares (G, D) int64 fixed point of the rows x (N, D)
    per group `groups` (N,): exact, so bitwise the same for any order of the rows."""
    xd = x.double()
    count = torch.bincount(groups, minlength=num_groups)
    s1 = torch.zeros(num_groups, x.shape[1], dtype=torch.long, device=x.device)
    s2 = torch.zeros_like(s1)
    return (
        count,
        s1.index_add_(0, groups, to_fixed_point(xd)),
        s2.index_add_(0, groups, to_fixed_point(xd * xd)),
    )
