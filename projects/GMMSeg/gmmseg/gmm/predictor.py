"""GMMPredictor: a generative classifier head, one Gaussian mixture per class.

    embeddings (N, C_in) --projection--> (N, D) --LayerNorm--> --L2 normalise--> e
    component log-likelihoods  log N(e; mu_cm, diag s_cm^2)         (N, K, M)
    class scores               max_m (winner takes all)             (N, K)   "log_likelihood"
    logits                     LayerNorm over the K classes         (N, K)   "logits"

Means and stds are buffers: no gradient reaches them. They move only by EM:
- training forward (labels given): E-step on the batch (Sinkhorn or vanilla, per class),
  component-level auxiliary loss, and a few embeddings per (class, component) set aside;
- `flush()` (every iteration, from the trainer hook): of the rows set aside by all ranks, the
  release's selection (at most `pushes_per_step` per (class, component) from the whole gathered
  batch, sampling.py) is gathered and pushed into the FeatureMemory in rank order, so every
  rank's bank is identical and the rows per step do not depend on the number of ranks;
- `em_update()` (every UPDATE_INTERVAL iterations): M-step with momentum from the bank's
  exact sufficient statistics (summed over ranks when the memory is sharded), for the
  components chosen by `update_components`:
  "present_classes" (the release): every component of every class present in the ground truth
  of this iteration (all ranks), whatever it received; "received_rows": the components that
  received rows since the last M-step.

Which labelled embeddings are candidates for the memory (`push_rows`):
  "correct" (the release): only pixels the head classifies correctly. A class the head never
  classifies correctly never receives a real row; with the release's random memory its Gaussians
  are then fitted to the random initial rows, stay broad, and the class can stay locked out for
  good (all-class CamVid: bicyclist, pedestrian; docs/GMM_SETTINGS.md);
  "all": every labelled pixel;
  "correct_first": per (class, component), correct pixels first (the release's selection of them),
  topped up to `pushes_per_step` with the group's misclassified pixels (the same selection rule
  over those, with the quota the correct ones left). Equal to "correct" for every group with at
  least `pushes_per_step` correct pixels in the gathered batch; a class present in the labels gets
  rows before the head predicts it.

Coverage counters (buffers, summed over ranks, identical everywhere): `rows_pushed` (G,) real rows
ever pushed per (class, component) (min(rows_pushed, MEMORY_SIZE) of its memory rows are real, the
rest still the initialisation); `training_pixels` (3, K): labelled, correctly classified and
predicted pixels per class over all training batches (at the feature grid). `coverage()` reads them.

Memory layout (`memory_layout`): "replicated", "sharded", "none" (inference: no bank) or "auto"
(memory_layout.py, the one place that reads it).
`memory_device`: where the bank is allocated and filled (the model's device, MODEL.DEVICE), so
that a GPU run never holds a whole bank in host memory.

Option not in the paper: `nll_loss_weight` w > 0 adds w * mean over labelled pixels of
-log p(x | y) (the class score of the pixel's own class) to the losses: a training signal on the
absolute density, which the paper's losses (class LayerNorm + CE, softmax over components) do not
see. It moves the embeddings (never the means and stds) towards their class's components.

Ablation switches (paper Tables 4 and 5a; defaults = the release, whose path they leave untouched):
- `em_loops` L > 1: each `em_update()` alternates L M-steps with L - 1 re-assignments (E-steps)
  of the embeddings set aside since the previous update (the "batch" of the update window),
  see `_extra_em_loops`. The E-step in forward counts as the first one, so L = 1 is the release.
- `learn_by_gradient` (discriminative GMMSeg): means and stds are nn.Parameters trained by the
  losses' gradients; no memory, `flush()` / `em_update()` do nothing.
"""

import logging

import torch
from torch import nn
from torch.nn import functional as F

from ..scores.table import log_marginal
from .assignment import ASSIGNERS
from .coverage import class_coverage
from .distributed import all_gather_rows, all_gather_stacked, rank
from .em_module import EMModule
from .fixed_point import from_fixed_point, group_sums
from .likelihood import gaussian_log_likelihood
from .m_step import gaussian_m_step
from .memory_layout import build_memory, resolve_memory_layout
from .sampling import release_selection, selection_sizes

__all__ = ["GMMPredictor", "PUSH_RULES"]

PUSH_RULES = ("correct", "all", "correct_first")

# rows set aside carry their (class, component) id in a float32 column: exact below 2^24
_MAX_GROUPS = 1 << 24

logger = logging.getLogger(__name__)


class GMMPredictor(EMModule):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        embed_dim: int = 64,
        num_components: int = 5,
        memory_size: int = 32000,
        pushes_per_step: int = 20,
        push_rows: str = "correct",
        memory_init: str = "random",
        memory_dtype: torch.dtype = torch.float32,
        mean_momentum: float = 0.999,
        std_momentum: float = 0.0,
        momentum_warmup: bool = False,
        variance_floor: float = 0.01,
        em_algorithm: str = "sinkhorn",
        sinkhorn_iters: int = 3,
        sinkhorn_epsilon: float = 0.05,
        aux_loss_weight: float = 0.01,
        ignore_value: int = 255,
        seed: int = 0,
        em_loops: int = 1,
        learn_by_gradient: bool = False,
        update_components: str = "present_classes",
        projection: nn.Module = None,
        nll_loss_weight: float = 0.0,
        memory_layout: str = "replicated",
        memory_device=None,
    ):
        if push_rows not in PUSH_RULES:
            raise ValueError(f"push_rows must be one of {PUSH_RULES}, got {push_rows!r}")
        if em_algorithm not in ASSIGNERS:
            raise ValueError(
                f"em_algorithm must be one of {sorted(ASSIGNERS)}, got {em_algorithm!r}"
            )
        if update_components not in ("present_classes", "received_rows"):
            raise ValueError(
                f"update_components must be 'present_classes' or 'received_rows', got {update_components!r}"
            )
        resolve_memory_layout(memory_layout)  # a bad value fails before anything is built
        ids = num_classes * num_components * (2 if push_rows == "correct_first" else 1)
        if ids > _MAX_GROUPS:
            raise ValueError(
                f"num_classes * num_components (x 2 with push_rows 'correct_first') must be <= 2^24 "
                f"(group ids travel as float32), got {num_classes} * {num_components}"
            )
        if em_loops < 1:
            raise ValueError(f"em_loops must be >= 1, got {em_loops}")
        super().__init__(in_channels, num_classes, embed_dim, ignore_value, projection)
        self.em_loops, self.learn_by_gradient = em_loops, learn_by_gradient
        self.num_components = num_components
        self.pushes_per_step, self.push_rows = pushes_per_step, push_rows
        self.update_components = update_components
        self.mean_momentum, self.std_momentum, self.momentum_warmup = (
            mean_momentum,
            std_momentum,
            momentum_warmup,
        )
        self.variance_floor = variance_floor
        self.em_algorithm, self.sinkhorn_iters, self.sinkhorn_epsilon = (
            em_algorithm,
            sinkhorn_iters,
            sinkhorn_epsilon,
        )
        self.aux_loss_weight, self.nll_loss_weight = aux_loss_weight, nll_loss_weight

        g = torch.Generator().manual_seed(seed)
        means = F.normalize(
            torch.randn(num_classes, num_components, embed_dim, generator=g), dim=-1
        )
        if learn_by_gradient:
            # std = sqrt(softplus(p) + variance_floor) > 0, initialised to 1 as in the EM path
            self.means = nn.Parameter(means)
            p0 = torch.tensor(max(1.0 - variance_floor, 1e-4)).expm1().log()  # softplus^-1
            self.std_param = nn.Parameter(p0.expand(num_classes, num_components, embed_dim).clone())
            memory_size = 0  # no EM: no bank
        else:
            self.register_buffer("means", means)
            self.register_buffer("stds", torch.ones(num_classes, num_components, embed_dim))
        self.register_buffer(
            "updates_per_component", torch.zeros(num_classes * num_components, dtype=torch.long)
        )
        self.register_buffer(
            "received_data", torch.zeros(num_classes * num_components, dtype=torch.bool)
        )
        self.register_buffer("num_em_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer(
            "rows_pushed", torch.zeros(num_classes * num_components, dtype=torch.long)
        )
        self.register_buffer("training_pixels", torch.zeros(3, num_classes, dtype=torch.long))
        self.memory = build_memory(
            memory_layout,
            num_classes * num_components,
            memory_size,
            embed_dim,
            init=memory_init,
            dtype=memory_dtype,
            seed=seed + 1,
            device=memory_device,
        )
        self._pending = []  # candidate rows [group, e_1..e_D] set aside by forward, selected by flush()
        # classes in this rank's labels since the last flush(); the last entry: a labelled forward ran
        self._present = torch.zeros(num_classes + 1, dtype=torch.bool)
        self._pixels = torch.zeros(
            3, num_classes, dtype=torch.long
        )  # this rank's, since the last flush()
        # classes in the labels of all ranks at the last flush() that followed a labelled forward
        self._present_gathered = torch.zeros(num_classes, dtype=torch.bool)
        self._window = []  # em_loops > 1: gathered rows since the last M-step, pushed by em_update()
        self.background = (
            None  # a BackgroundDensity attached for inference (MODEL.ANOMALY_FIT), or None
        )

    # ------------------------------------------------------------------ forward (EMModule.forward)
    def component_log_likelihood(self, e: torch.Tensor) -> torch.Tensor:
        """e: (N, D) -> (N, K, M) float32."""
        k, m, d = self.means.shape
        ll = gaussian_log_likelihood(
            e, self.means.reshape(k * m, d), self.current_stds().reshape(k * m, d)
        )
        return ll.view(-1, k, m)

    component_scores = (
        component_log_likelihood  # class scores: max over components ("log_likelihood")
    )

    def current_stds(self) -> torch.Tensor:
        """(K, M, D) stds: the EM buffer, or (learn_by_gradient) sqrt(softplus(p) + floor)."""
        if self.learn_by_gradient:
            return (F.softplus(self.std_param) + self.variance_floor).sqrt()
        return self.stds

    # ------------------------------------------------------------------ E-step + bookkeeping
    def learn(self, e, comp_ll, logits, labels):
        """E-step of the labelled embeddings (per class), the auxiliary component-level loss (and
        the optional NLL term); sets aside rows for the memory (see flush)."""
        k, m = self.num_classes, self.num_components
        valid = labels != self.ignore_value
        y = labels[valid]
        if not self.learn_by_gradient:
            seen = torch.cat([torch.bincount(y, minlength=k) > 0, y.new_ones(1, dtype=torch.bool)])
            self._present = self._present.to(y.device) | seen
        comp_ll_v = comp_ll[valid]
        own = comp_ll_v.gather(1, y.view(-1, 1, 1).expand(-1, 1, m)).squeeze(1)  # (Nv, M)
        plan = ASSIGNERS[self.em_algorithm](
            own.detach(), y, k, num_iters=self.sinkhorn_iters, epsilon=self.sinkhorn_epsilon
        )
        assignment = plan.argmax(1)
        losses = {}
        if self.aux_loss_weight > 0:
            target = y * m + assignment
            if y.numel():
                aux = F.cross_entropy(comp_ll_v.reshape(-1, k * m), target)
            else:  # keep the graph connected so DDP sees every parameter used
                aux = comp_ll.sum() * 0.0
            losses["loss_gmm_aux"] = self.aux_loss_weight * aux
        if self.nll_loss_weight > 0:  # not in the paper: ties the absolute density to the data
            nll = -own.amax(1).mean() if y.numel() else comp_ll.sum() * 0.0
            losses["loss_gmm_nll"] = self.nll_loss_weight * nll
        if self.learn_by_gradient:  # no EM: nothing to set aside
            return losses
        self._set_aside(e[valid].detach(), y, assignment, logits[valid].detach())
        return losses

    @torch.no_grad()
    def _set_aside(self, e, y, assignment, logits):
        keep = torch.isfinite(e).all(1)
        if not bool(keep.all()):
            logger.warning(
                "GMMPredictor: %d non-finite embeddings dropped from the EM memory",
                int((~keep).sum()),
            )
        groups = y * self.num_components + assignment
        k = self.num_classes
        predicted = logits.argmax(1)
        correct = predicted == y
        pixels = torch.stack(
            [
                torch.bincount(y, minlength=k),
                torch.bincount(y[correct], minlength=k),
                torch.bincount(predicted, minlength=k),
            ]
        )
        self._pixels = self._pixels.to(pixels.device) + pixels
        if self.push_rows == "correct":
            keep &= correct
        elif self.push_rows == "correct_first":  # misclassified rows in groups G..2G-1 (see flush)
            groups = groups + (~correct).long() * (k * self.num_components)
        # float32 rows whatever the embedding's dtype (bfloat16 / float16 under autocast hold
        # integers exactly only up to 256 / 2048): ids < 2^24 are exact, checked in __init__
        self._pending.append(torch.cat([groups[keep, None].float(), e[keep].float()], dim=1))

    # ------------------------------------------------------------------ memory + M-step
    @torch.no_grad()
    def flush(self):
        """Select (the release's rule) among the rows set aside by every rank, gather the selected
        ones and push them into the memory, in rank order; note which classes all ranks saw.

        Collective: every rank must call it at the same step (the trainer hook does). Two
        collectives: per-group row counts and class presence (G + K longs per rank), then the
        selected rows (at most `pushes_per_step` per group in total).
        With em_loops > 1 the gathered rows wait in a window until em_update() (see there).
        """
        if self.learn_by_gradient:
            return 0
        g = self.num_classes * self.num_components
        # "correct_first": groups G..2G-1 hold the misclassified rows of groups 0..G-1
        ids = 2 * g if self.push_rows == "correct_first" else g
        local = (
            torch.cat(self._pending)
            if self._pending
            else self.means.new_zeros((0, self.embed_dim + 1))
        )
        local = local.float()
        self._pending = []
        groups = local[:, 0].long()
        counts = torch.bincount(groups, minlength=ids)
        present = self._present.to(counts.device).long()
        pixels = self._pixels.to(counts.device).flatten()
        self._present = torch.zeros_like(self._present)
        self._pixels = torch.zeros_like(self._pixels)
        stacked = all_gather_stacked(torch.cat([counts, pixels, present]))  # (W, ids + 3K + K + 1)
        counts_per_rank, present = (
            stacked[:, :ids],
            stacked[:, ids + pixels.numel() :].bool().any(0),
        )
        self.training_pixels += (
            stacked[:, ids : ids + pixels.numel()]
            .sum(0)
            .view_as(self.training_pixels)
            .to(self.training_pixels.device)
        )
        if present[-1]:  # a flush with no forward since the previous one keeps what that one saw
            self._present_gathered = present[:-1]
        r = rank()
        offsets, totals = counts_per_rank[:r].sum(0), counts_per_rank.sum(0)
        quota = self.pushes_per_step
        if (
            ids > g
        ):  # the misclassified rows of a group fill what its correct rows left of the quota
            quota = torch.cat([totals.new_full((g,), quota), (quota - totals[:g]).clamp_min(0)])
        idx = release_selection(groups, ids, quota, offsets, totals)
        rows = all_gather_rows(local[idx], sizes=selection_sizes(counts_per_rank, quota))
        if rows.shape[0] == 0:
            return 0
        rows[:, 0] = rows[:, 0] % g
        if self.em_loops > 1:
            self._window.append(rows)
            return rows.shape[0]
        self._push(rows[:, 0].long(), rows[:, 1:])
        return rows.shape[0]

    def _push(self, groups, e):
        self.memory.push(groups, e)
        self.received_data[groups] = True
        self.rows_pushed += torch.bincount(groups, minlength=self.rows_pushed.numel()).to(
            self.rows_pushed.device
        )

    @torch.no_grad()
    def em_update(self):
        """One M-step with momentum for the components chosen by `update_components` (only those
        whose memory holds data: with MEMORY_INIT "empty" a never-fed component keeps its values).

        Deterministic given the memory: ranks with identical memories compute identical updates.
        With em_loops = L > 1, L - 1 extra E/M alternations on the window's rows come first.
        No-op when the means and stds are learned by gradient.
        """
        if self.learn_by_gradient:
            return
        self.flush()
        if self.em_loops > 1:
            self._extra_em_loops()
        if self.update_components == "present_classes":
            chosen = self._present_gathered.to(self.received_data.device).repeat_interleave(
                self.num_components
            )
        else:
            chosen = self.received_data
        # identical on every rank: a sharded memory sums its shards' statistics of these groups
        count, s1, s2 = self.memory.statistics(chosen)
        upd = chosen & (count > 0)
        if not bool(upd.any()):
            return
        self._m_step(count, s1, s2, upd)
        self.received_data.zero_()
        self.memory.reset_batch_statistics()
        self.num_em_updates += 1

    @torch.no_grad()
    def _m_step(self, count, s1, s2, upd):
        """Momentum M-step of the components `upd` (G,) bool from sufficient statistics (G,), (G, D)."""
        k, m, d = self.means.shape
        new_mean, new_std = gaussian_m_step(count[upd], s1[upd], s2[upd], self.variance_floor)
        finite = torch.isfinite(new_mean).all(1) & torch.isfinite(new_std).all(1)
        if not bool(finite.all()):
            logger.warning(
                "GMMPredictor: M-step skipped for %d components with non-finite statistics",
                int((~finite).sum()),
            )
        idx = upd.nonzero().squeeze(1)[finite]
        new_mean, new_std = new_mean[finite].float(), new_std[finite].float()
        mm = torch.full((idx.numel(), 1), self.mean_momentum, device=idx.device)
        sm = torch.full((idx.numel(), 1), self.std_momentum, device=idx.device)
        if self.momentum_warmup:  # t-th update of a component: momentum min(m, t / (t + 1))
            t = self.updates_per_component[idx].float()[:, None]
            mm, sm = torch.minimum(mm, t / (t + 1)), torch.minimum(sm, t / (t + 1))
        means, stds = self.means.view(k * m, d), self.stds.view(k * m, d)
        means[idx] = F.normalize(mm * means[idx] + (1 - mm) * new_mean, dim=-1)
        stds[idx] = sm * stds[idx] + (1 - sm) * new_std
        self.updates_per_component[idx] += 1

    @torch.no_grad()
    def _extra_em_loops(self):
        """em_loops = L > 1: L - 1 times, M-step then E-step, on the window's rows; then push them.

        The window = the rows set aside (by all ranks) since the last M-step, with the assignment
        of the forward-time E-step. Each loop: M-step from the bank's statistics plus the window's
        rows under their current assignment (counted on top of the bank, without evicting), then a
        new E-step of the window's rows (same algorithm, per class) with the updated parameters.
        Finally the rows are pushed with their last assignment, and em_update's usual M-step is
        the L-th. The window is not checkpointed (at most UPDATE_INTERVAL - 1 iterations of rows).
        """
        rows = torch.cat(self._window) if self._window else None
        self._window = []
        if rows is None or rows.shape[0] == 0:
            return
        k, m = self.num_classes, self.num_components
        groups, e = rows[:, 0].long(), rows[:, 1:]
        y = groups // m
        stored = e.to(self.memory.bank.dtype)  # what the bank would store
        count, s1, s2 = self.memory.statistics()
        for _ in range(self.em_loops - 1):
            # the window's sums in fixed point (exact, any row order), then one float64 addition
            # to the bank's: every rank gets the same bits whatever order its atomics add in
            wc, w1, w2 = group_sums(groups, stored, k * m)
            c, t1, t2 = count + wc.double(), s1 + from_fixed_point(w1), s2 + from_fixed_point(w2)
            upd = torch.zeros_like(self.received_data)
            upd[groups] = True
            self._m_step(c, t1, t2, upd & (c > 0))
            own = (
                self.component_log_likelihood(e)
                .gather(1, y.view(-1, 1, 1).expand(-1, 1, m))
                .squeeze(1)
            )
            plan = ASSIGNERS[self.em_algorithm](
                own, y, k, num_iters=self.sinkhorn_iters, epsilon=self.sinkhorn_epsilon
            )
            groups = y * m + plan.argmax(1)
        self._push(groups, e)

    def inference_ingredients(self, e, scores):
        out = {"log_marginal": log_marginal(scores)}
        if self.background is not None:  # fitted after training (gmm/background.py)
            out["log_background"] = self.background(e)
        return out

    def coverage(self):
        """Per-class real memory rows and training pixels (gmm/coverage.py); None without EM."""
        if self.learn_by_gradient:
            return None
        memory = self.feature_memory()
        return class_coverage(
            self.rows_pushed,
            self.training_pixels,
            self.num_components,
            getattr(memory, "capacity", 0),
        )

    def never_updated_classes(self):
        """Classes none of whose components has taken part in an M-step: their Gaussians are
        still the random initialisation. With MEMORY_INIT "empty" and PUSH_ROWS "correct" a class the
        head never classifies correctly never receives a row, so it can stay here for good (the
        Mask2Former head on CamVid: docs/MASK2FORMER.md). Empty when the Gaussians are learned by
        gradient. (With MEMORY_INIT "random" such a class is updated from the random rows: coverage()
        tells that case.)"""
        if self.learn_by_gradient:
            return []
        moved = self.updates_per_component.view(self.num_classes, self.num_components).amax(1) > 0
        return (~moved).nonzero().flatten().tolist()

    def tensor_dims(self):
        dims = super().tensor_dims()
        kmd = ("classes", "components", "embed_dim")
        dims.update(
            {
                "means": kmd,
                "stds": kmd,
                "std_param": kmd,
                "rows_pushed": ("groups",),
                "training_pixels": (None, "classes"),
                "updates_per_component": ("groups",),
                "received_data": ("groups",),
            }
        )
        return dims

    def extra_repr(self):
        return (
            f"classes={self.num_classes}, components={self.num_components}, dim={self.embed_dim}, "
            f"em={self.em_algorithm}, momentum={self.mean_momentum}, update={self.update_components}"
            + (f", em_loops={self.em_loops}" if self.em_loops > 1 else "")
            + (", learn_by_gradient=True" if self.learn_by_gradient else "")
        )
