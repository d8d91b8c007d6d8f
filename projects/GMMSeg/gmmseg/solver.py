"""build_optimizer(cfg, model): SGD or AdamW with the per-parameter rules of the paper's recipes.

detectron2's own build_optimizer only makes SGD. Here:
    SOLVER.OPTIMIZER          "SGD" (momentum SOLVER.MOMENTUM, SOLVER.NESTEROV) | "ADAMW" (SOLVER.BETAS)
    SOLVER.BASE_LR, WEIGHT_DECAY
    SOLVER.BACKBONE_MULTIPLIER lr of the parameters under `backbone.` = BASE_LR * this
                               (SegFormer's recipe, head lr x10, is BASE_LR 6e-4 with 0.1)
    SOLVER.WEIGHT_DECAY_NORM   weight decay of normalisation layers (BN, GN, LN, ...; 0 for AdamW)
    SOLVER.WEIGHT_DECAY_EMBED  weight decay of position embeddings and relative position bias tables
    SOLVER.WEIGHT_DECAY_BIAS, BIAS_LR_FACTOR  as in detectron2
    SOLVER.CLIP_GRADIENTS      as in detectron2
The GMM's means and stds are buffers, never optimised. Use it from a DefaultTrainer subclass:

    @classmethod
    def build_optimizer(cls, cfg, model):
        return gmmseg.solver.build_optimizer(cfg, model)
"""
import torch
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping

__all__ = ["build_optimizer", "EMBEDDING_PARAM_NAMES"]

# parameter names (the last component) treated as embeddings: SOLVER.WEIGHT_DECAY_EMBED
EMBEDDING_PARAM_NAMES = ("absolute_pos_embed", "pos_embed", "relative_position_bias_table",
                         "relative_position_bias", "cls_token", "query_embed", "level_embed")


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer of cfg.SOLVER for `model` (see the module docstring)."""
    s = cfg.SOLVER
    name = s.OPTIMIZER.upper()
    multiplier = s.BACKBONE_MULTIPLIER
    params = get_default_optimizer_params(
        model,
        base_lr=s.BASE_LR,
        weight_decay=s.WEIGHT_DECAY,
        weight_decay_norm=s.WEIGHT_DECAY_NORM,
        bias_lr_factor=s.BIAS_LR_FACTOR,
        weight_decay_bias=s.WEIGHT_DECAY_BIAS,
        lr_factor_func=(lambda n: multiplier if n.startswith(("backbone.", "module.backbone.")) else 1.0)
        if multiplier != 1.0 else None,
        overrides={k: {"weight_decay": s.WEIGHT_DECAY_EMBED} for k in EMBEDDING_PARAM_NAMES},
    )
    if name == "SGD":
        optimizer = torch.optim.SGD(params, lr=s.BASE_LR, momentum=s.MOMENTUM, nesterov=s.NESTEROV,
                                    weight_decay=s.WEIGHT_DECAY)
    elif name == "ADAMW":
        optimizer = torch.optim.AdamW(params, lr=s.BASE_LR, betas=tuple(s.BETAS), weight_decay=s.WEIGHT_DECAY)
    else:
        raise ValueError(f"SOLVER.OPTIMIZER={s.OPTIMIZER!r}; expected 'SGD' or 'ADAMW'")
    return maybe_add_gradient_clipping(cfg, optimizer)
