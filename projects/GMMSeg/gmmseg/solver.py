"""build_optimizer(cfg, model): SGD or AdamW with the per-parameter rules of the paper's recipes.

detectron2's own build_optimizer only makes SGD. Here:
    SOLVER.OPTIMIZER          "SGD" (momentum SOLVER.MOMENTUM, SOLVER.NESTEROV) | "ADAMW" (SOLVER.BETAS)
    SOLVER.BASE_LR, WEIGHT_DECAY
    SOLVER.BACKBONE_MULTIPLIER lr of the parameters under `backbone.` = BASE_LR * this
                               (SegFormer's recipe, head lr x10, is BASE_LR 6e-4 with 0.1)
    SOLVER.WEIGHT_DECAY_NORM   weight decay of normalisation layers (BN, GN, LN, ...; 0 for AdamW)
    SOLVER.WEIGHT_DECAY_EMBED  weight decay of nn.Embedding weights (Mask2Former's queries and level
                               embeddings), position embeddings and relative position bias tables
    SOLVER.WEIGHT_DECAY_BIAS, BIAS_LR_FACTOR  as in detectron2
    SOLVER.CLIP_GRADIENTS      detectron2's per-parameter "value" / "norm", or CLIP_TYPE "full_model":
                               one global-norm clip over all parameters (Mask2Former's recipe)
The GMM's means and stds are buffers, never optimised. Use it from a DefaultTrainer subclass:

    @classmethod
    def build_optimizer(cls, cfg, model):
        return gmmseg.solver.build_optimizer(cfg, model)
"""

import itertools

import torch
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from torch import nn

__all__ = ["build_optimizer", "EMBEDDING_PARAM_NAMES"]

# parameter names (the last component) treated as embeddings: SOLVER.WEIGHT_DECAY_EMBED
EMBEDDING_PARAM_NAMES = (
    "absolute_pos_embed",
    "pos_embed",
    "relative_position_bias_table",
    "relative_position_bias",
    "cls_token",
    "query_embed",
    "level_embed",
)


def _embedding_weights_apart(groups, weight_decay_embed: float):
    """Move nn.Embedding weights (which `overrides` cannot name: they are all called `weight`)
    into groups of their own with weight decay `weight_decay_embed`."""
    out = []
    for g in groups:
        emb = [p for p in g["params"] if getattr(p, "_gmmseg_embedding", False)]
        rest = [p for p in g["params"] if not getattr(p, "_gmmseg_embedding", False)]
        if rest:
            out.append({**g, "params": rest})
        if emb:
            out.append({**g, "params": emb, "weight_decay": weight_decay_embed})
    return out


def _with_full_model_clipping(optimizer_cls, clip_value: float, norm_type: float):
    """A subclass of `optimizer_cls` that clips the global gradient norm of all its parameters
    before each step (detectron2's clipping is per parameter)."""

    class FullModelGradientClip(optimizer_cls):
        def step(self, closure=None):
            torch.nn.utils.clip_grad_norm_(
                itertools.chain(*[g["params"] for g in self.param_groups]), clip_value, norm_type
            )
            return super().step(closure=closure)

    FullModelGradientClip.__name__ = optimizer_cls.__name__ + "FullModelGradientClip"
    return FullModelGradientClip


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer of cfg.SOLVER for `model` (see the module docstring)."""
    s = cfg.SOLVER
    name = s.OPTIMIZER.upper()
    multiplier = s.BACKBONE_MULTIPLIER
    embedding_weights = [m.weight for m in model.modules() if isinstance(m, nn.Embedding)]
    for p in embedding_weights:
        p._gmmseg_embedding = True
    try:
        params = get_default_optimizer_params(
            model,
            base_lr=s.BASE_LR,
            weight_decay=s.WEIGHT_DECAY,
            weight_decay_norm=s.WEIGHT_DECAY_NORM,
            bias_lr_factor=s.BIAS_LR_FACTOR,
            weight_decay_bias=s.WEIGHT_DECAY_BIAS,
            lr_factor_func=(
                lambda n: multiplier if n.startswith(("backbone.", "module.backbone.")) else 1.0
            )
            if multiplier != 1.0
            else None,
            overrides={k: {"weight_decay": s.WEIGHT_DECAY_EMBED} for k in EMBEDDING_PARAM_NAMES},
        )
        params = _embedding_weights_apart(params, s.WEIGHT_DECAY_EMBED)
    finally:
        for p in embedding_weights:
            del p._gmmseg_embedding
    if name == "SGD":
        cls, kwargs = torch.optim.SGD, {"momentum": s.MOMENTUM, "nesterov": s.NESTEROV}
    elif name == "ADAMW":
        cls, kwargs = torch.optim.AdamW, {"betas": tuple(s.BETAS)}
    else:
        raise ValueError(f"SOLVER.OPTIMIZER={s.OPTIMIZER!r}; expected 'SGD' or 'ADAMW'")
    clip = s.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        cls = _with_full_model_clipping(cls, clip.CLIP_VALUE, clip.NORM_TYPE)
        return cls(params, lr=s.BASE_LR, weight_decay=s.WEIGHT_DECAY, foreach=True, **kwargs)
    # foreach: multi-tensor updates (torch otherwise picks the per-tensor loop on CPU)
    return maybe_add_gradient_clipping(
        cfg, cls(params, lr=s.BASE_LR, weight_decay=s.WEIGHT_DECAY, foreach=True, **kwargs)
    )
