"""What makes `--resume` continue a run exactly: a sampler that skips what was consumed, and
random number generators seeded per iteration.

detectron2 saves the model, the optimizer, the LR scheduler and the iteration, but two things
restart from their beginning when a killed run is resumed:

- the sampler's index stream (TrainingSampler, RepeatFactorTrainingSampler, the project's
  ClassBalancedSampler ...): the resumed run would see the images of iterations 0, 1, ... again.
  `ResumableSampler` wraps the sampler and skips the `start_iter * images-per-rank` indices the
  first run consumed; the trainer also checkpoints the sampler's seed (drawn at random when
  cfg.SEED < 0), so the stream is the same one;
- the random state of Python, NumPy and torch (augmentation, dropout, ...), which detectron2 seeds
  once at start-up. `IterationSeedHook` seeds them before every iteration from
  (run seed, rank, iteration), so iteration i draws the same random numbers whether or not the
  run was interrupted. The run seed is cfg.SEED, or one shared random seed when cfg.SEED < 0, and
  it is checkpointed too.

Exact (bitwise) when the data are loaded in the training process (DATALOADER.NUM_WORKERS 0) and
batches are formed in sampler order (all images of a batch in one aspect-ratio group, e.g. fixed
crops, or DATALOADER.ASPECT_RATIO_GROUPING False). With loader workers the resumed run sees the
right images but their augmentations come from the workers' own generators.
"""

import itertools
import logging
import random

import numpy as np
import torch
from detectron2.engine import HookBase
from detectron2.utils import comm
from torch.utils.data import Sampler

__all__ = [
    "ResumableSampler",
    "IterationSeedHook",
    "iteration_seed",
    "seed_everything",
    "shared_run_seed",
    "consumed_per_rank",
]

logger = logging.getLogger(__name__)


class ResumableSampler(Sampler):
    """Yields the indices of `sampler` after skipping the first `start` of them.

    Set `start` before the data loader's iterator is created (the trainer does it in
    `resume_or_load`, before the first iteration). `sampler` is the per-rank stream (detectron2's
    samplers shard by rank themselves), so `start` counts this rank's images.
    """

    def __init__(self, sampler):
        self.sampler = sampler
        self.start = 0

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.start, None)

    @property
    def seed(self):
        """The wrapped sampler's shuffling seed (all detectron2 samplers keep it in `_seed`)."""
        return getattr(self.sampler, "_seed", None)

    @seed.setter
    def seed(self, value):
        if value is not None and hasattr(self.sampler, "_seed"):
            self.sampler._seed = int(value)


def iteration_seed(run_seed: int, rank: int, iteration: int) -> int:
    """A 31-bit seed that depends only on (run seed, rank, iteration)."""
    ss = np.random.SeedSequence([int(run_seed) & 0xFFFFFFFF, int(rank), int(iteration)])
    return int(ss.generate_state(1, dtype=np.uint32)[0] >> 1)


def seed_everything(seed: int):
    """Seed Python's `random`, NumPy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class IterationSeedHook(HookBase):
    """Before every iteration: seed all generators from (run_seed, rank, iteration).

    Register it first, so it runs before the data of the iteration are loaded and augmented.
    """

    def __init__(self, run_seed: int):
        self.run_seed = int(run_seed)

    def before_step(self):
        seed_everything(iteration_seed(self.run_seed, comm.get_rank(), self.trainer.iter))


def shared_run_seed(cfg_seed: int) -> int:
    """cfg.SEED if >= 0, else one random seed shared by all ranks (a collective)."""
    if cfg_seed >= 0:
        return int(cfg_seed)
    return int(comm.shared_random_seed())


def consumed_per_rank(start_iter: int, total_batch_size: int, world_size: int) -> int:
    """Images of this rank's stream used by iterations 0 .. start_iter - 1."""
    return int(start_iter) * (int(total_batch_size) // int(world_size))
