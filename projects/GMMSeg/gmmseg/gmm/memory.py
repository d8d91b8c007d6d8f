"""External feature bank: one FIFO ring buffer per (class, component), as one tensor.

The bank also keeps the sufficient statistics of what it holds (count, sum, sum of squares per
group), updated on every push by adding what comes in and subtracting what is overwritten. They
are int64 fixed-point numbers (fixed_point.py): exact, so they always equal a recomputation from
the bank, and sums of them do not depend on the order of addition. The M-step then costs
O(groups * D) instead of reading the whole bank (778 MB for Cityscapes defaults).

`FeatureMemory` is the replicated layout (every rank holds every row). The ring bookkeeping is
written for rows spread over `num_shards` ranks: global slot s of a group lives on rank
s % num_shards, in local column s // num_shards. Here num_shards is 1; `ShardedFeatureMemory`
(sharded_memory.py) uses the same code with W > 1.

Checkpoints always hold the full layout: `bank` (G, capacity, D), `ptr`, `filled` and the
statistics of the whole bank. Loading takes the slots this memory holds from the full bank and
recomputes their statistics (exact), so a checkpoint loads into any layout and any W.
"""

import functools
import math

import torch
from torch import nn

from .fixed_point import from_fixed_point, to_fixed_point, value_bound

__all__ = ["FeatureMemory", "MEMORY_STATE_NAMES", "MEMORY_ENTRY_DIMS"]

# the entries of a memory in a checkpoint (full layout, whatever the layout that saved it)
MEMORY_STATE_NAMES = ("bank", "ptr", "filled", "stat_count", "stat_sum", "stat_sumsq")
# the meaning of each dimension of those entries (G = classes x components groups)
MEMORY_ENTRY_DIMS = {
    "bank": ("groups", "memory_size", "embed_dim"),
    "ptr": ("groups",),
    "filled": ("groups",),
    "stat_count": ("groups",),
    "stat_sum": ("groups", "embed_dim"),
    "stat_sumsq": ("groups", "embed_dim"),
}


class FeatureMemory(nn.Module):
    """G = num_classes * num_components ring buffers of `capacity` embeddings of size `dim`.

    capacity == 0 means "no bank": the statistics then accumulate the pushes since the last
    `reset_batch_statistics()` (the paper's batch-only ablation).

    init: "random" fills every slot with random unit vectors that count as data (the release);
          "empty" starts with no data, the statistics count only written entries.
    device: where the buffers are allocated (default: the CPU). The random bank is drawn on the
          CPU (one generator stream, the same values on every device) slice by slice, each slice
          copied to the device: the host never holds more than a slice, not the whole bank.
    """

    layout = "replicated"

    def __init__(
        self,
        num_groups: int,
        capacity: int,
        dim: int,
        init: str = "empty",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
        device=None,
    ):
        super().__init__()
        if init not in ("random", "empty"):
            raise ValueError(f"FeatureMemory init must be 'random' or 'empty', got {init!r}")
        self.num_groups, self.capacity, self.dim, self.init = num_groups, capacity, dim, init
        if not hasattr(self, "num_shards"):
            self.num_shards, self.shard_rank = 1, 0
        columns = -(-capacity // self.num_shards)  # ceil: the same shape on every rank
        persistent = self.num_shards == 1  # a shard's local tensors are not checkpoint entries
        zeros = functools.partial(torch.zeros, device=device)
        self.register_buffer(
            "bank", zeros(num_groups, columns, dim, dtype=dtype), persistent=persistent
        )
        self.register_buffer("ptr", zeros(num_groups, dtype=torch.long))
        self.register_buffer("filled", zeros(num_groups, dtype=torch.long))
        # int64 fixed point (count: plain integers); this rank's rows only when sharded
        self.register_buffer(
            "stat_count", zeros(num_groups, dtype=torch.long), persistent=persistent
        )
        self.register_buffer(
            "stat_sum", zeros(num_groups, dim, dtype=torch.long), persistent=persistent
        )
        self.register_buffer(
            "stat_sumsq", zeros(num_groups, dim, dtype=torch.long), persistent=persistent
        )
        if init == "random" and capacity > 0:
            self._fill_random(seed)
            self.filled.fill_(capacity)
            self._recompute_statistics()

    # ------------------------------------------------------------------ which slots live here
    def held_slots(self, device=None) -> torch.Tensor:
        """Global ring slots held by this memory, in local column order: (columns held,) long, on
        `device` (default: the bank's)."""
        return torch.arange(
            self.shard_rank,
            max(self.capacity, self.shard_rank),
            self.num_shards,
            device=self.bank.device if device is None else device,
        )

    def _store_full_slice(self, a: int, b: int, full: torch.Tensor):
        """Keep the held slots of full-layout entries `full` (b - a, capacity, D) of groups a..b-1
        (picked where `full` is, then copied to the bank's device)."""
        held = self.held_slots(full.device)
        self.bank[a:b, : held.numel()].copy_(full[:, held].to(self.bank))

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
        """Random unit vectors, equal to normalize(randn(G, capacity, D, generator=seed)) at the
        held slots, generated on the CPU slice by slice and copied to the bank's device (every
        shard draws the whole stream: a CPU generator cannot skip ahead, and the values must not
        depend on the number of shards)."""
        gen = torch.Generator().manual_seed(seed)
        for a, b in self._group_slices():
            noise = torch.randn(b - a, self.capacity, self.dim, generator=gen)
            self._store_full_slice(a, b, nn.functional.normalize(noise, dim=-1))

    def statistics_from_bank(self):
        """Count, sum and sum of squares of the filled held entries, read from the bank (slice by
        slice), in the format of `local_statistics()`. Equal to the running statistics."""
        held = self.held_slots()
        out = [torch.zeros_like(t) for t in self.local_statistics()]
        for a, b in self._group_slices():
            valid = held[None] < self.filled[a:b, None]  # (b - a, columns held)
            data = self.bank[a:b, : held.numel()].double()
            out[0][a:b] = valid.sum(1)
            out[1][a:b] = (to_fixed_point(data) * valid[..., None]).sum(1)
            out[2][a:b] = (to_fixed_point(data.pow_(2)) * valid[..., None]).sum(1)
        return out

    def _recompute_statistics(self):
        for running, exact in zip(self.local_statistics(), self.statistics_from_bank()):
            running.copy_(exact)

    # ------------------------------------------------------------------ push
    @torch.no_grad()
    def push(self, groups: torch.Tensor, x: torch.Tensor):
        """Append embeddings x (N, D) to the queues `groups` (N,), oldest overwritten first.

        Rows are appended in their order: within one group a later row is newer. Deterministic.
        Every shard is given the same rows and keeps those that land in its slots.
        """
        if x.shape[0] == 0:
            return
        x = x.to(self.bank.dtype)
        self._check_range(x)
        xd = x.double()  # the statistics count what the bank stores (after any rounding)
        if self.capacity == 0:
            self._add_stats(groups, xd, 1)
            return
        order = torch.argsort(groups, stable=True)
        groups, x, xd = groups[order], x[order], xd[order]
        counts = torch.bincount(groups, minlength=self.num_groups)
        starts = torch.cumsum(counts, 0) - counts
        seq = torch.arange(groups.shape[0], device=groups.device) - starts[groups]
        # only the newest `capacity` rows of a group survive this push
        dropped = (counts[groups] - self.capacity).clamp_min(0)
        keep = seq >= dropped
        groups, x, xd, seq = groups[keep], x[keep], xd[keep], (seq - dropped)[keep]
        slots = (self.ptr[groups] + seq) % self.capacity
        mine = slots % self.num_shards == self.shard_rank
        groups, x, xd, slots = groups[mine], x[mine], xd[mine], slots[mine]
        columns = slots // self.num_shards
        overwritten = slots < self.filled[groups]
        old = self.bank[groups[overwritten], columns[overwritten]].double()
        self._add_stats(groups[overwritten], old, -1)
        self._add_stats(groups, xd, 1)
        self.bank[groups, columns] = x
        n_new = counts.clamp_max(self.capacity)
        self.ptr.copy_((self.ptr + n_new) % self.capacity)
        self.filled.copy_((self.filled + n_new).clamp_max(self.capacity))

    def _check_range(self, x):
        bound = value_bound(self.capacity if self.capacity > 0 else 1 << 20)
        if x.numel() and float(x.abs().max()) > bound:
            raise ValueError(
                f"FeatureMemory.push: a value of magnitude {float(x.abs().max()):.3g} exceeds "
                f"{bound:.3g}, the range of the exact fixed-point statistics for capacity "
                f"{self.capacity} (gmm/fixed_point.py); the GMM pushes unit vectors"
            )
        if self.capacity == 0 and int(self.stat_count.max()) > (1 << 20):
            raise ValueError(
                "FeatureMemory with capacity 0: more than 2^20 rows in a group since the last "
                "reset_batch_statistics(); reset it at every M-step"
            )

    def _add_stats(self, groups, xd, sign: int):
        self.stat_count.index_add_(0, groups, torch.full_like(groups, sign))
        self.stat_sum.index_add_(0, groups, to_fixed_point(xd) * sign)
        self.stat_sumsq.index_add_(0, groups, to_fixed_point(xd * xd) * sign)

    # ------------------------------------------------------------------ statistics
    def local_statistics(self):
        """(count (G,), sum (G, D), sum of squares (G, D)) of the rows held here, exact int64
        (count) and int64 fixed point (sums)."""
        return self.stat_count, self.stat_sum, self.stat_sumsq

    def statistics(self, groups: torch.Tensor = None):
        """(count (G,), sum (G, D), sum of squares (G, D)) of the whole memory, float64.

        groups: optional (G,) bool, the groups wanted (the others read 0). For a sharded memory
        this is a collective and the mask must be the same on every rank.
        """
        count, s1, s2 = self._reduced(groups)
        return count.double(), from_fixed_point(s1), from_fixed_point(s2)

    def _reduced(self, groups):
        count, s1, s2 = self.local_statistics()
        if groups is None:
            return count, s1, s2
        keep = groups.to(count.device)
        return count * keep, s1 * keep[:, None], s2 * keep[:, None]

    def reset_batch_statistics(self):
        """For capacity 0 only: forget the pushes since the last M-step."""
        if self.capacity == 0:
            self.stat_count.zero_()
            self.stat_sum.zero_()
            self.stat_sumsq.zero_()

    def replicated_state(self, include_bank: bool = True):
        """[(name, tensor)] that must be bitwise identical on every rank (for the EM digest)."""
        return [(n, b) for n, b in sorted(self.named_buffers()) if include_bank or n != "bank"]

    def check_trainable(self):
        """A memory with a bank can train (InferenceMemory cannot)."""

    # ------------------------------------------------------------------ checkpoints
    @staticmethod
    def entry_dims():
        """{entry name: the meaning of each dimension} of this memory's checkpoint entries."""
        return dict(MEMORY_ENTRY_DIMS)

    def gather_for_checkpoint(self):
        """Nothing to gather: a replicated memory's state_dict() is its full layout (see
        ShardedFeatureMemory)."""

    def release_checkpoint(self):
        pass

    def checkpoint_shapes(self):
        """{name: shape} of this memory's checkpoint entries (the full layout)."""
        g, d = self.num_groups, self.dim
        return {
            "bank": (g, self.capacity, d),
            "ptr": (g,),
            "filled": (g,),
            "stat_count": (g,),
            "stat_sum": (g, d),
            "stat_sumsq": (g, d),
        }

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        """Load a full-layout memory (saved by any layout, any W, any bank precision): the held
        slots of its bank, its ring pointers, and the statistics recomputed from the held entries
        (exact: they equal the running ones). A bank of capacity 0 has no entries: its batch
        statistics are loaded as saved (float64 ones, from before fixed point, converted)."""
        names = {n: prefix + n for n in MEMORY_STATE_NAMES}
        missing = [k for k in names.values() if k not in state_dict]
        if missing:
            missing_keys.extend(missing)
            return
        shapes = self.checkpoint_shapes()
        wrong = [
            f"size mismatch for {names[n]}: copying a param with shape {tuple(state_dict[names[n]].shape)} "
            f"from checkpoint, the shape in current model is {shapes[n]}."
            for n in MEMORY_STATE_NAMES
            if tuple(state_dict[names[n]].shape) != shapes[n]
        ]
        if wrong:
            error_msgs.extend(wrong)
            return
        with torch.no_grad():
            self.ptr.copy_(state_dict[names["ptr"]])
            self.filled.copy_(state_dict[names["filled"]])
            if self.capacity == 0:
                for n in ("stat_count", "stat_sum", "stat_sumsq"):
                    saved = state_dict[names[n]]
                    fixed = (
                        saved
                        if not saved.is_floating_point()
                        else (
                            saved.round().long()
                            if n == "stat_count"
                            else to_fixed_point(saved.double())
                        )
                    )
                    getattr(self, n).copy_(fixed)
                return
            bank = state_dict[names["bank"]]
            for a, b in self._group_slices():  # slice by slice: a memory-mapped bank is read once
                self._store_full_slice(a, b, bank[a:b])
            self._recompute_statistics()

    def newest(self, group: int, n: int) -> torch.Tensor:
        """The n newest entries of one group, newest last (for tests and inspection; replicated only)."""
        if self.num_shards != 1:
            raise RuntimeError("FeatureMemory.newest: a shard holds only every W-th entry")
        n = min(n, int(self.filled[group]))
        idx = (self.ptr[group] - n + torch.arange(n, device=self.bank.device)) % self.capacity
        return self.bank[group, idx]

    def extra_repr(self):
        shard = f", shard {self.shard_rank} of {self.num_shards}" if self.num_shards > 1 else ""
        return (
            f"groups={self.num_groups}, capacity={self.capacity}, dim={self.dim}, init={self.init}, "
            f"dtype={self.bank.dtype}, layout={self.layout}{shard}"
        )
