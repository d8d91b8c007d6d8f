"""External feature bank: one FIFO ring buffer per (class, component), as one tensor.

The bank also keeps the running sufficient statistics of what it holds (count, sum, sum of
squares per group, in float64), updated on every push by adding what comes in and subtracting
what is overwritten. The M-step then costs O(groups * D) instead of reading the whole bank
(which is 778 MB for Cityscapes defaults). All state lives in buffers, so checkpoints,
`.to(device)` and DDP broadcast carry it.
"""
import math

import torch
from torch import nn

__all__ = ["FeatureMemory"]


class FeatureMemory(nn.Module):
    """G = num_classes * num_components ring buffers of `capacity` embeddings of size `dim`.

    capacity == 0 means "no bank": the statistics then accumulate the pushes since the last
    `take_statistics(reset=True)` (the paper's batch-only ablation).

    init: "random" fills every slot with random unit vectors that count as data (the release);
          "empty" starts with no data, the statistics count only written entries.
    """

    def __init__(self, num_groups: int, capacity: int, dim: int, init: str = "empty",
                 dtype: torch.dtype = torch.float32, seed: int = 0):
        super().__init__()
        if init not in ("random", "empty"):
            raise ValueError(f"FeatureMemory init must be 'random' or 'empty', got {init!r}")
        self.num_groups, self.capacity, self.dim, self.init = num_groups, capacity, dim, init
        self.register_buffer("bank", torch.zeros(num_groups, capacity, dim, dtype=dtype))
        self.register_buffer("ptr", torch.zeros(num_groups, dtype=torch.long))
        self.register_buffer("filled", torch.zeros(num_groups, dtype=torch.long))
        self.register_buffer("stat_count", torch.zeros(num_groups, dtype=torch.float64))
        self.register_buffer("stat_sum", torch.zeros(num_groups, dim, dtype=torch.float64))
        self.register_buffer("stat_sumsq", torch.zeros(num_groups, dim, dtype=torch.float64))
        if init == "random" and capacity > 0:
            self._fill_random(seed)
            self.filled.fill_(capacity)
            self._recompute_statistics()

    # Work in slices of groups of about this many elements: a bank of ADE20K defaults holds
    # 1.5e9 (6 GB in float32); whole-bank temporaries (noise, float64 copies) would need ~40 GB.
    _CHUNK_ELEMENTS = 1 << 24

    def _group_slices(self):
        per_group = max(self.capacity * self.dim, 1)
        # slices of a multiple of 16 elements draw the same normal numbers as one randn call
        # over the whole bank (torch's CPU normal_ fills blocks of 16); a final slice smaller
        # than 16 elements is merged into the one before it
        step = 16 // math.gcd(per_group, 16)
        n = max(step, (self._CHUNK_ELEMENTS // per_group) // step * step)
        bounds = list(range(0, self.num_groups, n)) + [self.num_groups]
        if len(bounds) > 2 and (bounds[-1] - bounds[-2]) * per_group < 16:
            del bounds[-2]
        return list(zip(bounds[:-1], bounds[1:]))

    def _fill_random(self, seed: int):
        """Random unit vectors, equal to normalize(randn(G, capacity, D, generator=seed)) but
        generated slice by slice."""
        gen = torch.Generator().manual_seed(seed)
        for a, b in self._group_slices():
            noise = torch.randn(b - a, self.capacity, self.dim, generator=gen)
            self.bank[a:b].copy_(nn.functional.normalize(noise, dim=-1))

    def _recompute_statistics(self):
        """Count, sum and sum of squares of the filled entries, from the bank (slice by slice)."""
        arange = torch.arange(self.capacity, device=self.bank.device)
        for a, b in self._group_slices():
            valid = (arange[None] < self.filled[a:b, None]).double()
            data = self.bank[a:b].double() * valid[..., None]
            self.stat_count[a:b].copy_(valid.sum(1))
            self.stat_sum[a:b].copy_(data.sum(1))
            self.stat_sumsq[a:b].copy_(data.pow_(2).sum(1))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # A bank saved in another precision (MODEL.GMM.MEMORY_DTYPE changed) is converted on
        # load; the running statistics must then describe the converted entries.
        saved = state_dict.get(prefix + "bank")
        converted = (saved is not None and saved.dtype != self.bank.dtype and saved.shape == self.bank.shape
                     and self.capacity > 0)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if converted:
            self._recompute_statistics()

    @torch.no_grad()
    def push(self, groups: torch.Tensor, x: torch.Tensor):
        """Append embeddings x (N, D) to the queues `groups` (N,), oldest overwritten first.

        Rows are appended in their order: within one group a later row is newer. Deterministic.
        """
        if x.shape[0] == 0:
            return
        x = x.to(self.bank.dtype)
        xd = x.double()  # the statistics count what the bank stores (after any rounding)
        if self.capacity == 0:
            self._add_stats(groups, xd, 1.0)
            return
        order = torch.argsort(groups, stable=True)
        groups, x, xd = groups[order], x[order], xd[order]
        counts = torch.bincount(groups, minlength=self.num_groups)
        starts = torch.cumsum(counts, 0) - counts
        seq = torch.arange(groups.shape[0], device=groups.device) - starts[groups]
        # only the newest `capacity` rows of a group survive this push
        keep = seq >= (counts[groups] - self.capacity)
        groups, x, xd, seq = groups[keep], x[keep], xd[keep], seq[keep] - (counts[groups] - self.capacity).clamp_min(0)[keep]
        slots = (self.ptr[groups] + seq) % self.capacity
        overwritten = slots < self.filled[groups]
        old = self.bank[groups[overwritten], slots[overwritten]].double()
        self._add_stats(groups[overwritten], old, -1.0)
        self._add_stats(groups, xd, 1.0)
        self.bank[groups, slots] = x
        n_new = counts.clamp_max(self.capacity)
        self.ptr.copy_((self.ptr + n_new) % self.capacity)
        self.filled.copy_((self.filled + n_new).clamp_max(self.capacity))

    def _add_stats(self, groups, xd, sign):
        self.stat_count.index_add_(0, groups, torch.full_like(groups, 1, dtype=torch.float64) * sign)
        self.stat_sum.index_add_(0, groups, xd * sign)
        self.stat_sumsq.index_add_(0, groups, xd.pow(2) * sign)

    def statistics(self):
        """(count (G,), sum (G, D), sum of squares (G, D)), float64."""
        return self.stat_count, self.stat_sum, self.stat_sumsq

    def reset_batch_statistics(self):
        """For capacity 0 only: forget the pushes since the last M-step."""
        if self.capacity == 0:
            self.stat_count.zero_()
            self.stat_sum.zero_()
            self.stat_sumsq.zero_()

    def newest(self, group: int, n: int) -> torch.Tensor:
        """The n newest entries of one group, newest last (for tests and inspection)."""
        n = min(n, int(self.filled[group]))
        idx = (self.ptr[group] - n + torch.arange(n, device=self.bank.device)) % self.capacity
        return self.bank[group, idx]

    def extra_repr(self):
        return f"groups={self.num_groups}, capacity={self.capacity}, dim={self.dim}, init={self.init}, dtype={self.bank.dtype}"
