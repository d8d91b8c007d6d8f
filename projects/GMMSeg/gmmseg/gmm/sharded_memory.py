"""The feature memory spread over the W ranks of a process group: each rank holds 1/W of it.

Every rank is given the same pushed rows in the same order (GMMPredictor.flush all-gathers
them), so every rank can follow the whole ring (pointers and fill levels, identical on all
ranks) and keep only its own slots: global slot s of a group lives on rank s % W, local column
s // W. No communication on push. The union of the shards holds exactly the rows a replicated
memory would hold (same selection, same eviction order, same capacity per group).

Each rank keeps the exact (int64 fixed-point) statistics of its own rows; the M-step reads their
sum over ranks, one all-reduce of the chosen groups' (count, sum, sum of squares): at most
G x (2D + 1) int64 values per M-step. Integer sums are exact, so the totals, and the means and
stds computed from them, are bitwise identical on every rank and equal to the replicated
memory's for any W.

Checkpoints hold the full layout (memory.py): `gather_for_checkpoint()` (a collective, every rank
calls it before the checkpointer saves) assembles the whole bank on the saving rank, slice by
slice, and the statistics' totals; `model.state_dict()` then contains them until
`release_checkpoint()`. Without that step a sharded memory contributes only its ring pointers to
a state dict (its shard alone is no checkpoint). Loading takes this rank's slots from the full
bank: a checkpoint saved by any number of ranks loads into any other (re-sharding).
"""

import hashlib

import torch
import torch.distributed as dist

from .distributed import all_gather_stacked, all_reduce_sum, rank, world_size
from .memory import FeatureMemory

__all__ = ["ShardedFeatureMemory"]


class ShardedFeatureMemory(FeatureMemory):
    """FeatureMemory whose rows are spread over the ranks (module docstring).

    shard_rank, num_shards: default the current process group's rank and size. Per-rank bank:
    G x ceil(capacity / W) x D entries (one unused column on the ranks that hold one slot fewer).
    """

    layout = "sharded"

    def __init__(
        self,
        num_groups: int,
        capacity: int,
        dim: int,
        init: str = "empty",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
        shard_rank: int = None,
        num_shards: int = None,
        device=None,
    ):
        self.num_shards = world_size() if num_shards is None else int(num_shards)
        self.shard_rank = rank() if shard_rank is None else int(shard_rank)
        if not 0 <= self.shard_rank < self.num_shards:
            raise ValueError(
                f"ShardedFeatureMemory: shard_rank {self.shard_rank} not in 0..{self.num_shards - 1}"
            )
        if capacity <= 0:
            raise ValueError(
                "ShardedFeatureMemory needs a bank (MODEL.GMM.MEMORY_SIZE > 0); a memory of "
                "capacity 0 holds no rows to spread, use the replicated FeatureMemory"
            )
        super().__init__(
            num_groups, capacity, dim, init=init, dtype=dtype, seed=seed, device=device
        )
        self._checkpoint_state = None

    # ------------------------------------------------------------------ statistics
    def _reduced(self, groups):
        """Totals over the ranks of the chosen groups' statistics (one all-reduce, int64: exact)."""
        count, s1, s2 = self.local_statistics()
        if self.num_shards == 1:
            return super()._reduced(groups)
        idx = (
            torch.arange(self.num_groups, device=count.device)
            if groups is None
            else groups.to(count.device).nonzero().squeeze(1)
        )
        packed = torch.cat([count[idx, None], s1[idx], s2[idx]], dim=1)
        if packed.numel():
            packed = all_reduce_sum(packed)
        d = self.dim
        total = (torch.zeros_like(count), torch.zeros_like(s1), torch.zeros_like(s2))
        total[0][idx], total[1][idx], total[2][idx] = (
            packed[:, 0],
            packed[:, 1 : 1 + d],
            packed[:, 1 + d :],
        )
        return total

    def replicated_state(self, include_bank: bool = True):
        """Ring pointers and the totals of the statistics (a collective); with `include_bank` also
        the SHA-256 of every rank's shard, in rank order (the same list on every rank: it
        fingerprints the whole bank, for comparing runs), after checking that this shard's running
        statistics equal those of its rows (RuntimeError otherwise)."""
        count, s1, s2 = self._reduced(None)
        out = [
            ("filled", self.filled),
            ("ptr", self.ptr),
            ("total_count", count),
            ("total_sum", s1),
            ("total_sumsq", s2),
        ]
        if include_bank:
            for running, exact in zip(self.local_statistics(), self.statistics_from_bank()):
                if not torch.equal(running, exact):
                    raise RuntimeError(
                        f"ShardedFeatureMemory, rank {self.shard_rank}: the running statistics "
                        f"differ from those of the rows the shard holds"
                    )
            h = hashlib.sha256()
            for a, b in self._group_slices():  # never the whole shard on the host at once
                h.update(
                    self.bank[a:b].detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy()
                )
            mine = torch.tensor(list(h.digest()), dtype=torch.uint8, device=self.bank.device)
            out.append(("shard_digests", all_gather_stacked(mine)))
        return out

    # ------------------------------------------------------------------ checkpoints
    @torch.no_grad()
    def gather_for_checkpoint(self, dst: int = 0):
        """Collective: assemble the full-layout state on rank `dst` (CPU), slice by slice, and keep
        it for `state_dict()` until `release_checkpoint()`. Other ranks keep nothing."""
        count, s1, s2 = self._reduced(None)
        me = self.shard_rank
        full = (
            torch.empty(self.num_groups, self.capacity, self.dim, dtype=self.bank.dtype)
            if me == dst
            else None
        )
        for a, b in self._group_slices():
            part = self.bank[a:b].contiguous()
            if self.num_shards == 1:
                parts = [part]
            else:
                parts = (
                    [torch.empty_like(part) for _ in range(self.num_shards)] if me == dst else None
                )
                dist.gather(part, parts, dst=dst)
            if me == dst:
                for r, piece in enumerate(parts):
                    held = torch.arange(r, max(self.capacity, r), self.num_shards)
                    full[a:b, held] = piece[:, : held.numel()].cpu()
        if me == dst:
            self._checkpoint_state = {
                "bank": full,
                "stat_count": count.cpu(),
                "stat_sum": s1.cpu(),
                "stat_sumsq": s2.cpu(),
            }

    def release_checkpoint(self):
        self._checkpoint_state = None

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(
            destination, prefix, keep_vars
        )  # ptr, filled (the persistent buffers)
        state = self._checkpoint_state
        if state is None and self.num_shards == 1:  # one shard is the whole memory
            state = {
                "bank": self.bank,
                "stat_count": self.stat_count,
                "stat_sum": self.stat_sum,
                "stat_sumsq": self.stat_sumsq,
            }
        if state is not None:
            for name, value in state.items():
                destination[prefix + name] = value if keep_vars else value.detach()
