"""EMModule: what every classifier head whose class parameters move by EM shares, and how to find one.

Both heads of the project (GMMPredictor: Gaussians per class; ProtoSegPredictor: prototypes per
class) have the same shape:

    embeddings (N, C_in) --projection--> (N, D) --LayerNorm--> --L2 normalise--> e   (float32)
    component scores    (N, K, M)    Gaussian log-likelihoods, or cosines to prototypes
    class scores        max_m        (N, K)   "log_likelihood"
    logits              LayerNorm over the K classes   (N, K)   "logits"

and the same life: a labelled forward (training) checks the labels, computes the head's losses and
sets aside what its EM needs; `flush()` (every iteration) gathers what every rank set aside;
`em_update()` (every MODEL.GMM.UPDATE_INTERVAL iterations) moves the class parameters. The
parameters and all EM state live in buffers, identical on every rank.

Everything outside the head talks to it through this class only: the trainer's hook
(engine/em_hook.py: flush, em_update, replicated_em_state), DDP's setup (engine/trainer.py:
memory_buffer_names, check_trainable), the checkpointer (checkpoint.py: checkpoint_shapes,
gather_for_checkpoint, tensor_dims), Mask2Former (which gives a generative head its query labels)
and the studies. `named_em_modules(model)` finds the heads in any model (per-pixel or Mask2Former,
wrapped in DDP or not).

A head with a feature memory keeps it in the submodule `memory` (memory.py, sharded_memory.py, or
inference_memory.py for a head built for inference); the memory's buffers are its EM state that is
never broadcast and is checkpointed in the full layout.
"""

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["EMModule", "named_em_modules", "em_modules"]

Dims = Tuple[Optional[str], ...]


class EMModule(nn.Module):
    """Base class of the EM-trained heads (module docstring). Subclasses implement
    `component_scores`, `learn`, `flush` and `em_update`."""

    # what the class scores ("log_likelihood" of forward's output) are, as an ingredient of the
    # anomaly score table (gmmseg/scores): GMM log-likelihoods, or ProtoSeg's "similarity"
    class_score_ingredient = "log_likelihood"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        embed_dim: int,
        ignore_value: int,
        projection: nn.Module = None,
    ):
        super().__init__()
        self.num_classes, self.embed_dim, self.ignore_value = num_classes, embed_dim, ignore_value
        # (N, C_in) -> (N, D); the release's 1x1 conv + SyncBN + ReLU is built by the detectron2 glue
        self.projection = (
            projection if projection is not None else nn.Linear(in_channels, embed_dim)
        )
        self.embed_norm = nn.LayerNorm(embed_dim)
        self.class_norm = nn.LayerNorm(num_classes)

    # ------------------------------------------------------------------ forward
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C_in) -> unit-norm embeddings (N, D), float32: under autocast only the projection
        runs in low precision, the normalisation (and all that follows) in float32."""
        z = self.projection(x)
        with torch.autocast(device_type=z.device.type, enabled=False):
            return F.normalize(self.embed_norm(z.float()), dim=-1)

    def component_scores(self, e: torch.Tensor) -> torch.Tensor:
        """e: (N, D) unit-norm -> (N, K, M) float32 scores of every component of every class."""
        raise NotImplementedError

    def learn(self, e, scores, logits, labels) -> Dict[str, torch.Tensor]:
        """A labelled training forward: the head's own (weighted) losses; sets aside what EM needs."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, labels: torch.Tensor = None):
        """x: (N, C_in); labels: (N,) long class ids or ignore_value, training only.

        Returns a dict: "logits" (N, K), "log_likelihood" (N, K) class scores (for anomaly
        scores), and, in training with labels, "losses" (the head's own, already weighted)."""
        e = self.embed(x)
        scores = self.component_scores(e)
        class_scores = scores.amax(-1)
        logits = self.class_norm(class_scores)
        out = {"logits": logits, "log_likelihood": class_scores}
        if self.training and labels is not None:
            self.check_labels(labels)
            out["losses"] = self.learn(e, scores, logits, labels)
        elif not self.training:
            out.update(self.inference_ingredients(e, scores))
        return out

    def inference_ingredients(
        self, e: torch.Tensor, scores: torch.Tensor
    ) -> Dict[str, torch.Tensor]:
        """More per-pixel ingredients of the anomaly score table from the embeddings (N, D) and the
        component scores (N, K, M) at inference: {name: (N,)} (none by default)."""
        return {}

    def check_labels(self, labels: torch.Tensor):
        bad = (labels != self.ignore_value) & ((labels < 0) | (labels >= self.num_classes))
        if bad.any():
            raise ValueError(
                f"{type(self).__name__} got label value {int(labels[bad][0])}; expected class ids "
                f"0..{self.num_classes - 1} or the ignore value {self.ignore_value}"
            )

    # ------------------------------------------------------------------ EM (collectives)
    def flush(self) -> int:
        """Gather what every rank set aside since the last flush; returns the rows taken (all ranks)."""
        raise NotImplementedError

    def em_update(self):
        """Flush, then move the class parameters (identically on every rank)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ what EM has learned
    def never_updated_classes(self) -> List[int]:
        """Classes whose class parameters no EM update has moved yet (none by default)."""
        return []

    def coverage(self):
        """Per-class real memory rows and training pixels (gmm/coverage.ClassCoverage), or None
        for a head that does not count them."""
        return None

    # ------------------------------------------------------------------ state
    def feature_memory(self) -> Optional[nn.Module]:
        """The head's feature memory (submodule `memory`), or None."""
        return self._modules.get("memory")

    def replicated_em_state(self, include_bank: bool = True) -> List[Tuple[str, torch.Tensor]]:
        """[(name, tensor)] that must be bitwise identical on every rank: the head's buffers and its
        memory's replicated part (a collective for a sharded memory; see its replicated_state)."""
        memory = self.feature_memory()
        own = [(n, b) for n, b in sorted(self.named_buffers()) if not n.startswith("memory.")]
        if memory is None:
            return own
        return own + [("memory." + n, b) for n, b in memory.replicated_state(include_bank)]

    def memory_buffer_names(self) -> List[str]:
        """Names (relative to this module) of the memory's buffers: state never broadcast by DDP."""
        memory = self.feature_memory()
        return [] if memory is None else [f"memory.{n}" for n, _ in memory.named_buffers()]

    def check_trainable(self):
        """Raise if this head cannot train (a GMM built for inference, without memory bank)."""
        memory = self.feature_memory()
        if memory is not None:
            memory.check_trainable()

    def checkpoint_shapes(self) -> Dict[str, Tuple[int, ...]]:
        """{name: shape} of the checkpoint entries that the module's state_dict() does not show as
        they are saved (a sharded memory's full layout)."""
        memory = self.feature_memory()
        return (
            {}
            if memory is None
            else {f"memory.{k}": s for k, s in memory.checkpoint_shapes().items()}
        )

    def gather_for_checkpoint(self):
        """Collective: a sharded memory assembles its full layout for the saving rank."""
        memory = self.feature_memory()
        if memory is not None:
            memory.gather_for_checkpoint()

    def release_checkpoint(self):
        memory = self.feature_memory()
        if memory is not None:
            memory.release_checkpoint()

    def tensor_dims(self) -> Dict[str, Dims]:
        """{tensor name: the name of each dimension} ("classes", "components", "groups" = classes x
        components, "embed_dim", "memory_size"; None: not a size the head's settings fix), so that a
        checkpoint of another shape can be explained by the setting that differs."""
        dims = {
            "class_norm.weight": ("classes",),
            "class_norm.bias": ("classes",),
            "embed_norm.weight": ("embed_dim",),
            "embed_norm.bias": ("embed_dim",),
        }
        # the projection's output features: the first dimension of its tensors of that size
        for name, t in list(self.projection.named_parameters()) + list(
            self.projection.named_buffers()
        ):
            if t.dim() >= 1 and t.shape[0] == self.embed_dim:
                dims["projection." + name] = ("embed_dim",) + (None,) * (t.dim() - 1)
        memory = self.feature_memory()
        if memory is not None:
            dims.update({f"memory.{k}": v for k, v in memory.entry_dims().items()})
        return dims


def named_em_modules(model: nn.Module) -> List[Tuple[str, EMModule]]:
    """[(qualified name, module)] of every EMModule in `model` (DDP-wrapped or not), in a fixed order."""
    model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return [(n, m) for n, m in model.named_modules() if isinstance(m, EMModule)]


def em_modules(model: nn.Module) -> List[EMModule]:
    """Every EMModule in `model`, in a fixed order (what the trainer's EM hook drives)."""
    return [m for _, m in named_em_modules(model)]
