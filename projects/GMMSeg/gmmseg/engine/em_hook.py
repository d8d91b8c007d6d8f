"""EMHook: runs the EM of every generative predictor in the model, outside back-propagation,
and checks that every rank holds the same EM state."""

import hashlib
import logging

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

from ..gmm import em_modules
from ..gmm.coverage import coverage_warnings

__all__ = [
    "EMHook",
    "em_modules",
    "em_state_digest",
    "verify_em_state_across_ranks",
    "warn_never_updated",
    "warn_locked_out",
]

logger = logging.getLogger(__name__)


def _tensor_chunks(t: torch.Tensor, chunk_bytes: int = 1 << 26):
    """The raw bytes of a tensor (any dtype, incl. bfloat16 and bool) in pieces of at most
    `chunk_bytes`: no copy of a CPU tensor, and a GPU bank is never copied to the host at once."""
    flat = t.detach().contiguous().reshape(-1)
    step = max(1, chunk_bytes // max(flat.element_size(), 1))
    for i in range(0, flat.numel(), step):
        yield flat[i : i + step].cpu().view(torch.uint8).numpy()


def em_state_digest(modules, include_bank: bool = True) -> str:
    """SHA-256 over the EM state that every rank must hold identically (name, dtype, shape,
    bytes): means, stds, counters, memory pointers and statistics, and, with `include_bank`,
    the memory contents (large: 6 GB for ADE20K defaults, ~6 s to hash at ~1 GB/s).

    A sharded memory contributes its ring pointers and the totals of its statistics over the
    ranks, and, with `include_bank`, the digests of all shards in rank order: its shards differ by
    design. Then this is a collective (every rank calls it at the same point)."""
    h = hashlib.sha256()
    for i, m in enumerate(modules):
        for name, buf in m.replicated_em_state(include_bank):
            h.update(f"{i}.{name}:{buf.dtype}:{tuple(buf.shape)};".encode())
            for piece in _tensor_chunks(buf):
                h.update(piece)
    return h.hexdigest()


def verify_em_state_across_ranks(modules, include_bank: bool = True, when: str = "") -> str:
    """All-gather the EM state digest of every rank; raise RuntimeError if they differ.

    Collective when several processes run: every rank must call it at the same point.
    Returns the digest.
    """
    digest = em_state_digest(modules, include_bank)
    world = comm.get_world_size()
    digests = comm.all_gather(digest) if world > 1 else [digest]
    if len(set(digests)) != 1:
        raise RuntimeError(
            f"EM state differs across ranks {when}: "
            + ", ".join(f"rank {r}: {d[:16]}" for r, d in enumerate(digests))
            + ". Every rank must run the same flush()/em_update() calls on the same gathered rows."
        )
    what = "incl. memory bank" if include_bank else "without the memory bank"
    logger.info(
        "EM state %s: sha256 %s (%s)%s",
        when,
        digest[:16],
        what,
        f", identical on all {world} ranks" if world > 1 else "",
    )
    return digest


def warn_never_updated(modules, it: int) -> list:
    """Log a warning naming the classes whose Gaussians no M-step has moved yet (index i of a
    model's K classes; K = "no object" in Mask2Former) once M-steps have run; return them per module."""
    found = []
    for i, m in enumerate(modules):
        never = m.never_updated_classes()
        found.append(never)
        if never and int(getattr(m, "num_em_updates", 0)) > 0:
            logger.warning(
                "EM module %d after iteration %d: %d M-steps, but classes %s have never been updated (their "
                "Gaussians are still random). With MODEL.GMM.MEMORY_INIT 'empty' and PUSH_ROWS 'correct' a "
                "class the head never classifies correctly never receives data; MODEL.GMM.PUSH_ROWS "
                "'correct_first' or 'all' lets it in (docs/GMM_SETTINGS.md). Classes absent from the "
                "training data are expected here.",
                i,
                it,
                int(m.num_em_updates),
                never,
            )
    return found


def warn_locked_out(modules, it: int, previous=None, class_names=None) -> list:
    """Log a warning for every class that a head's EM does not learn (gmm/coverage.py): labelled in
    the training data but with (nearly) no real memory rows, or (nearly) never classified correctly
    on the training batches since `previous` (the list this function returned last time, or None:
    since the start). Returns the heads' coverage now, to pass as `previous` next time."""
    now = []
    for i, m in enumerate(modules):
        cov = m.coverage()
        now.append(cov)
        if cov is None:
            continue
        before = previous[i] if previous is not None and i < len(previous) else None
        problems = coverage_warnings(cov, cov.since(before))
        if problems:
            name = (
                (lambda c: f"{c} ({class_names[c]})")
                if class_names and len(class_names) >= len(cov.labelled)
                else str
            )
            if getattr(m, "push_rows", None) == "correct":
                hint = (
                    "A class the head never classifies correctly gets no real memory rows with MODEL.GMM.PUSH_ROWS "
                    "'correct' (the release), and its Gaussians stay fitted to the random initial rows: it can "
                    "stay locked out for good. MODEL.GMM.PUSH_ROWS 'correct_first' gives every labelled class rows"
                )
            else:
                hint = (
                    "Every labelled class receives memory rows with this MODEL.GMM.PUSH_ROWS; early in training "
                    "a class can still be learning. If a warning repeats at later checkpoints the class is not "
                    "being learnt"
                )
            logger.warning(
                "EM module %d after iteration %d: classes the GMM is not learning:\n%s\n%s (docs/GMM_SETTINGS.md).",
                i,
                it,
                "\n".join(f"  class {name(c)}: {why}" for c, why in problems),
                hint,
            )
    return now


class EMHook(HookBase):
    """After every iteration: `flush()` (gather the embeddings set aside by every rank and push
    them into the memory). At iterations start, start + period, start + 2 * period, ... (the
    release: start 0, i.e. `counter % period == 0` with the counter from 0): `em_update()` (the
    M-step, after this iteration's push).

    Both are collectives when several processes train, and every rank calls them at the same
    iterations, so every rank's GMM stays identical. Register it before the checkpointer, so a
    checkpoint always holds the memory with this iteration's pushes (nothing is pending then).

    Verification: every `verify_period` iterations (0: never) the digests of the EM state
    without the bank (means, stds, counters, pointers, statistics of the bank, summed over the
    shards of a sharded memory) are compared across ranks; after the last iteration of a run
    that finished, the full state including the bank (a replicated bank whole; a sharded one as
    the digests of all shards, after each rank checked its shard against its statistics) is
    compared. A difference raises RuntimeError. Single-process runs log the
    digest (compare runs, e.g. an interrupted-and-resumed one with an uninterrupted one).

    Coverage: after iteration `early_check` (0: never), every `verify_period` iterations and at
    the end, a warning names the classes the EM is not learning (warn_locked_out, warn_never_updated).
    """

    def __init__(
        self,
        period: int,
        verify_period: int = 0,
        verify_at_end: bool = True,
        start: int = 0,
        early_check: int = 0,
        class_names=None,
    ):
        if period < 1:
            raise ValueError(f"MODEL.GMM.UPDATE_INTERVAL must be >= 1, got {period}")
        if start < 0:
            raise ValueError(f"MODEL.GMM.UPDATE_START must be >= 0, got {start}")
        self.period, self.start = period, start
        self.verify_period = verify_period
        self.verify_at_end = verify_at_end
        self.early_check, self.class_names = early_check, class_names
        self._modules = None
        self._coverage = None  # the heads' coverage at the previous check

    def before_train(self):
        self._modules = em_modules(self.trainer.model)
        if self._modules:
            logger.info(
                "EMHook: %d EM module(s), M-step every %d iterations",
                len(self._modules),
                self.period,
            )

    def after_step(self):
        it = self.trainer.iter
        update = it >= self.start and (it - self.start) % self.period == 0  # release: start 0
        for m in self._modules:
            if update:
                m.em_update()  # flushes first
            else:
                m.flush()
        if not self._modules:
            return
        if self.verify_period > 0 and (it + 1) % self.verify_period == 0:
            verify_em_state_across_ranks(
                self._modules, include_bank=False, when=f"after iteration {it}"
            )
            self._check_coverage(it)
        elif it + 1 == self.early_check:
            self._check_coverage(it)

    def _check_coverage(self, it):
        if comm.is_main_process():  # the counters are identical on every rank: one log is enough
            warn_never_updated(self._modules, it)
            self._coverage = warn_locked_out(self._modules, it, self._coverage, self.class_names)

    def after_train(self):
        # Only after a run that finished (detectron2 sets iter = max_iter then): after an
        # exception on one rank, a collective here would wait for ranks that never come.
        finished = getattr(self.trainer, "iter", None) == getattr(self.trainer, "max_iter", -1)
        if self._modules and finished:
            self._check_coverage(self.trainer.iter - 1)
        if self._modules and self.verify_at_end and finished:
            verify_em_state_across_ranks(
                self._modules,
                include_bank=True,
                when=f"at the end of training (iteration {self.trainer.iter - 1})",
            )
