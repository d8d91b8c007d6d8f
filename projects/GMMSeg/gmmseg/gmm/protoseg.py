"""ProtoSegPredictor: nonparametric prototype classifier (Zhou et al., CVPR 2022), GMMSeg's predecessor.

    embeddings (N, C_in) --Linear--> (N, D) --LayerNorm--> --L2 normalise--> e
    prototype similarities   cos(e, p_ck) = e . p_ck  (prototypes unit-norm)   (N, K, P)
    class scores             max over the class's P prototypes                 (N, K)   "log_likelihood"
    logits                   LayerNorm over the K classes                      (N, K)   "logits"

It is GMMSeg with identity covariances and no density: the prototypes are buffers (no gradient
reaches them) that move only by their EM-like update, run by the same trainer hook as the GMM:
- training forward (labels given): within-class online clustering of the batch's labelled
  embeddings by Sinkhorn-Knopp with equipartition (`sinkhorn_assign`, per class, on the cosine
  similarities to the class's prototypes); the pixel-prototype losses use that assignment; the
  assigned embeddings' per-prototype sums (optionally of correctly classified pixels only, as the
  release) are accumulated locally;
- `flush()` (every iteration): the local sums of all ranks are all-reduced into buffers, so every
  rank holds the same totals (and checkpoints carry them);
- `em_update()` (every MODEL.GMM.UPDATE_INTERVAL iterations; 1 = the release's per-iteration
  update): for each prototype that received pixels, p <- normalise(m p + (1 - m) normalise(sum)).
  Every rank computes the same update from the same totals.

Losses (training; the segmentation cross-entropy on "logits" belongs to the head):
    loss_ppc = w_ppc * CE(cos(e, all K*P prototypes) / temperature, target = class * P + assigned)
    loss_ppd = w_ppd * mean (1 - cos(e, assigned prototype))^2
over the labelled (non-ignored) embeddings.

Anomaly score: "log_likelihood" is the class score max_p cos(e, p_cp) (N, K). It is not a
normalised density; under a von Mises-Fisher mixture with one shared concentration kappa,
log p(e | c) ~ kappa * max_p cos(e, p_cp) + const (hard max), an increasing function of it, so
the head's "-max_c log_likelihood" = -(best cosine over all prototypes) ranks pixels as that
density would. The anomaly metrics (AUROC / AP / FPR95) depend only on the ranking.

Differences from the release, all documented choices: the sums can span UPDATE_INTERVAL
iterations; ranks' sums are all-reduced before one update instead of averaging the prototypes each
rank updated; `sinkhorn_assign` divides each class's similarities by their max |value| (<= 1)
before the temperature epsilon, so the effective epsilon is <= epsilon.
"""

import logging

import torch
from torch.nn import functional as F

from .assignment import sinkhorn_assign
from .distributed import all_reduce_sum
from .em_module import EMModule

__all__ = ["ProtoSegPredictor"]

logger = logging.getLogger(__name__)


class ProtoSegPredictor(EMModule):
    class_score_ingredient = "similarity"  # cosines, not densities: the "prototype" anomaly score

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        embed_dim: int = 64,
        num_prototypes: int = 10,
        momentum: float = 0.999,
        temperature: float = 0.1,
        ppc_weight: float = 0.01,
        ppd_weight: float = 0.001,
        sinkhorn_iters: int = 3,
        sinkhorn_epsilon: float = 0.05,
        update_correct_only: bool = True,
        ignore_value: int = 255,
        seed: int = 0,
    ):
        if num_prototypes < 1:
            raise ValueError(f"num_prototypes must be >= 1, got {num_prototypes}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        super().__init__(in_channels, num_classes, embed_dim, ignore_value)
        self.num_prototypes = num_prototypes
        self.momentum, self.temperature = momentum, temperature
        self.ppc_weight, self.ppd_weight = ppc_weight, ppd_weight
        self.sinkhorn_iters, self.sinkhorn_epsilon = sinkhorn_iters, sinkhorn_epsilon
        self.update_correct_only = update_correct_only

        g = torch.Generator().manual_seed(seed)
        protos = F.normalize(
            torch.randn(num_classes, num_prototypes, embed_dim, generator=g), dim=-1
        )
        self.register_buffer("prototypes", protos)
        groups = num_classes * num_prototypes
        # totals since the last update, identical on every rank after flush()
        self.register_buffer("sum_embeddings", torch.zeros(groups, embed_dim, dtype=torch.float64))
        self.register_buffer("count_embeddings", torch.zeros(groups, dtype=torch.float64))
        self.register_buffer("num_em_updates", torch.zeros((), dtype=torch.long))
        self._local_sum = None  # this rank's sums since the last flush(), (groups, D + 1) float64

    # ------------------------------------------------------------------ forward (EMModule.forward)
    def similarities(self, e: torch.Tensor) -> torch.Tensor:
        """e: (N, D) unit-norm -> cosine similarities to every prototype (N, K, P), float32."""
        k, p, d = self.prototypes.shape
        with torch.autocast(device_type=e.device.type, enabled=False):
            sims = e.float() @ self.prototypes.reshape(k * p, d).t().float()
        return sims.view(-1, k, p)

    component_scores = similarities  # class scores: the best cosine of the class's prototypes

    # ------------------------------------------------------------------ clustering + losses
    def assign(self, sims: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Within-class equipartition clustering: sims (N, K, P), classes y (N,) -> prototype (N,)."""
        p = self.num_prototypes
        own = sims.detach().gather(1, y.view(-1, 1, 1).expand(-1, 1, p)).squeeze(1)  # (N, P)
        plan = sinkhorn_assign(
            own, y, self.num_classes, num_iters=self.sinkhorn_iters, epsilon=self.sinkhorn_epsilon
        )
        return plan.argmax(1)

    def learn(self, e, sims, logits, labels):
        """Within-class clustering, the pixel-prototype losses ("loss_ppc", "loss_ppd"; a weight 0
        drops its entry), and the assigned embeddings' sums accumulated for the update."""
        k, p = self.num_classes, self.num_prototypes
        valid = labels != self.ignore_value
        y = labels[valid]
        sims_v = sims[valid].reshape(-1, k * p)
        assignment = self.assign(sims[valid], y)
        target = y * p + assignment
        losses = {}
        if y.numel():
            if self.ppc_weight > 0:
                losses["loss_ppc"] = self.ppc_weight * F.cross_entropy(
                    sims_v / self.temperature, target
                )
            if self.ppd_weight > 0:
                own = sims_v.gather(1, target[:, None]).squeeze(1)
                losses["loss_ppd"] = self.ppd_weight * (1 - own).pow(2).mean()
        else:  # keep the graph connected so DDP sees every parameter used
            zero = sims.sum() * 0.0
            losses.update(
                {
                    name: zero
                    for name, w in (("loss_ppc", self.ppc_weight), ("loss_ppd", self.ppd_weight))
                    if w > 0
                }
            )
        self._accumulate(e[valid].detach(), y, target, logits[valid].detach())
        return losses

    @torch.no_grad()
    def _accumulate(self, e, y, groups, logits):
        keep = torch.isfinite(e).all(1)
        if not bool(keep.all()):
            logger.warning(
                "ProtoSegPredictor: %d non-finite embeddings left out of the prototype update",
                int((~keep).sum()),
            )
        if self.update_correct_only:
            keep &= logits.argmax(1) == y
        rows = torch.cat([torch.ones_like(e[keep, :1]), e[keep]], dim=1).double()
        if self._local_sum is None:
            self._local_sum = rows.new_zeros(
                (self.num_classes * self.num_prototypes, self.embed_dim + 1)
            )
        self._local_sum.index_add_(0, groups[keep], rows)

    # ------------------------------------------------------------------ the hook's interface
    @torch.no_grad()
    def flush(self):
        """All-reduce every rank's sums since the last flush and add them to the buffers.

        Collective: every rank must call it at the same step (the trainer hook does), also a rank
        whose batch had no labelled pixel. Returns the number of embeddings added (all ranks).
        """
        local = self._local_sum
        self._local_sum = None
        if local is None:
            local = self.sum_embeddings.new_zeros(
                (self.num_classes * self.num_prototypes, self.embed_dim + 1)
            )
        local = local.to(self.sum_embeddings.device)
        local = all_reduce_sum(local)  # the same reduced tensor on every rank
        self.count_embeddings += local[:, 0]
        self.sum_embeddings += local[:, 1:]
        return int(local[:, 0].sum())

    @torch.no_grad()
    def em_update(self):
        """Momentum update of every prototype that received embeddings since the last update."""
        self.flush()
        upd = self.count_embeddings > 0
        if bool(upd.any()):
            k, p, d = self.prototypes.shape
            new = F.normalize(self.sum_embeddings[upd], dim=-1).float()  # = normalised mean
            protos = self.prototypes.view(k * p, d)
            protos[upd] = F.normalize(
                self.momentum * protos[upd] + (1 - self.momentum) * new, dim=-1
            )
            self.num_em_updates += 1
        self.sum_embeddings.zero_()
        self.count_embeddings.zero_()

    def tensor_dims(self):
        dims = super().tensor_dims()
        dims.update(
            {
                "prototypes": ("classes", "components", "embed_dim"),
                "sum_embeddings": ("groups", "embed_dim"),
                "count_embeddings": ("groups",),
            }
        )
        return dims

    def extra_repr(self):
        return (
            f"classes={self.num_classes}, prototypes={self.num_prototypes}, dim={self.embed_dim}, "
            f"momentum={self.momentum}, temperature={self.temperature}"
        )
