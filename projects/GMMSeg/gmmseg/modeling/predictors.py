"""Predictors: embeddings (N, C_in) -> class logits (N, K). One registry for both formulations.

A per-pixel head applies its predictor to every pixel of the decoder's feature map; Mask2Former
applies it to every query embedding. Each predictor's forward returns a dict with "logits"
(N, K) and, where it has one, "log_likelihood" (N, K) (raw class densities, for anomaly scores)
and "losses" (its own auxiliary losses, training only). The generative ones are gmm.EMModule's,
whose `flush()` and `em_update()` gmmseg.engine.EMHook calls.

The config keys of each predictor live here: the builders read them, and DIMENSION_KEYS says which
key fixes each dimension of each predictor's tensors (what a checkpoint of another shape is
explained by, checkpoint.py).
"""

from collections import OrderedDict
from typing import Dict, Optional, Tuple

import torch
from detectron2.layers import get_norm
from detectron2.utils.registry import Registry
from torch import nn

from ..gmm import GMMPredictor
from ..gmm.protoseg import ProtoSegPredictor

__all__ = [
    "PREDICTOR_REGISTRY",
    "build_predictor",
    "SoftmaxPredictor",
    "ProtoSegPredictor",
    "DIMENSION_KEYS",
    "tensor_setting_keys",
]

PREDICTOR_REGISTRY = Registry("PREDICTOR")
PREDICTOR_REGISTRY.__doc__ = """
Registry for predictors. Each entry is called as fn(cfg, in_channels, num_classes) -> nn.Module; its function name
is the value of MODEL.PREDICTOR.NAME that selects it.
"""


class SoftmaxPredictor(nn.Module):
    """The discriminative twin: a linear layer (a 1x1 conv on a feature map)."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(in_channels, num_classes)
        nn.init.normal_(self.linear.weight, std=0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, labels: torch.Tensor = None):
        return {"logits": self.linear(x)}

    def tensor_dims(self):
        return {"linear.weight": ("classes", None), "linear.bias": ("classes",)}


@PREDICTOR_REGISTRY.register()
def softmax(cfg, in_channels, num_classes):
    """The linear softmax classifier (the twin every GMM model is compared with)."""
    return SoftmaxPredictor(in_channels, num_classes)


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class _RowNorm(nn.Module):
    """A detectron2 2-d norm layer (BN, SyncBN, GN, ...) applied to rows (N, C) as (N, C, 1, 1):
    for batch norms the statistics are over the N rows (all pixels of the batch), as a 1x1 conv's."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    def forward(self, x):
        return self.norm(x[:, :, None, None])[:, :, 0, 0]


def build_gmm_projection(kind: str, norm: str, in_channels: int, embed_dim: int) -> nn.Module:
    """MODEL.GMM.PROJECTION: "linear", or "conv_bn_relu" (the release's 1x1 ConvModule: conv without
    bias, the norm `norm` (a detectron2 name, MODEL.GMM.PROJECTION_NORM), ReLU; conv weights
    initialised as mmcv does, Kaiming normal, fan-out)."""
    if kind == "linear":
        return nn.Linear(in_channels, embed_dim)
    if kind != "conv_bn_relu":
        raise ValueError(f"MODEL.GMM.PROJECTION must be 'conv_bn_relu' or 'linear', got {kind!r}")
    norm_layer = get_norm(norm, embed_dim)
    conv = nn.Linear(in_channels, embed_dim, bias=norm_layer is None)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    layers = [("conv", conv)] + ([("norm", _RowNorm(norm_layer))] if norm_layer is not None else [])
    return nn.Sequential(OrderedDict(layers + [("relu", nn.ReLU())]))


@PREDICTOR_REGISTRY.register()
def gmm(cfg, in_channels, num_classes):
    """GMMSeg's generative classifier, configured by cfg.MODEL.GMM."""
    g = cfg.MODEL.GMM
    if g.MEMORY_DTYPE not in _DTYPES:
        raise ValueError(
            f"MODEL.GMM.MEMORY_DTYPE must be one of {sorted(_DTYPES)}, got {g.MEMORY_DTYPE!r}"
        )
    return GMMPredictor(
        in_channels,
        num_classes,
        embed_dim=g.EMBED_DIM,
        num_components=g.NUM_COMPONENTS,
        memory_size=g.MEMORY_SIZE,
        pushes_per_step=g.PUSHES_PER_STEP,
        push_rows=g.PUSH_ROWS,
        memory_init=g.MEMORY_INIT,
        memory_dtype=_DTYPES[g.MEMORY_DTYPE],
        mean_momentum=g.MEAN_MOMENTUM,
        std_momentum=g.STD_MOMENTUM,
        momentum_warmup=g.MOMENTUM_WARMUP,
        variance_floor=g.VARIANCE_FLOOR,
        em_algorithm=g.EM_ALGORITHM,
        sinkhorn_iters=g.SINKHORN_ITERS,
        sinkhorn_epsilon=g.SINKHORN_EPSILON,
        aux_loss_weight=g.AUX_LOSS_WEIGHT,
        ignore_value=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        seed=g.SEED,
        em_loops=g.EM_LOOPS,
        learn_by_gradient=g.DISCRIMINATIVE,
        update_components=g.UPDATE_COMPONENTS,
        nll_loss_weight=g.NLL_LOSS_WEIGHT,
        memory_layout=g.MEMORY_LAYOUT,
        projection=build_gmm_projection(g.PROJECTION, g.PROJECTION_NORM, in_channels, g.EMBED_DIM),
        memory_device=memory_device(cfg.MODEL.DEVICE),
    )


def memory_device(name: str) -> torch.device:
    """The device the GMM bank is built on: MODEL.DEVICE, or the CPU when that is a CUDA device and
    CUDA is not available (a model built to be inspected; moving it there fails with torch's error)."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        return torch.device("cpu")
    return device


@PREDICTOR_REGISTRY.register()
def protoseg(cfg, in_channels, num_classes):
    """ProtoSeg's nonparametric prototype classifier, configured by cfg.MODEL.PROTOSEG.

    Its prototype update runs in the same EM hook as the GMM, every MODEL.GMM.UPDATE_INTERVAL
    iterations (the release updates every iteration: set it to 1).
    """
    p = cfg.MODEL.PROTOSEG
    return ProtoSegPredictor(
        in_channels,
        num_classes,
        embed_dim=p.EMBED_DIM,
        num_prototypes=p.NUM_PROTOTYPES,
        momentum=p.MOMENTUM,
        temperature=p.TEMPERATURE,
        ppc_weight=p.PPC_WEIGHT,
        ppd_weight=p.PPD_WEIGHT,
        sinkhorn_iters=p.SINKHORN_ITERS,
        sinkhorn_epsilon=p.SINKHORN_EPSILON,
        update_correct_only=p.UPDATE_CORRECT_ONLY,
        ignore_value=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        seed=p.SEED,
    )


_CLASSES = "MODEL.SEM_SEG_HEAD.NUM_CLASSES"
# the config key that fixes each named dimension (EMModule.tensor_dims) of each predictor's tensors
DIMENSION_KEYS = {
    GMMPredictor: {
        "classes": _CLASSES,
        "components": "MODEL.GMM.NUM_COMPONENTS",
        "groups": f"{_CLASSES} x MODEL.GMM.NUM_COMPONENTS",
        "embed_dim": "MODEL.GMM.EMBED_DIM",
        "memory_size": "MODEL.GMM.MEMORY_SIZE",
    },
    ProtoSegPredictor: {
        "classes": _CLASSES,
        "components": "MODEL.PROTOSEG.NUM_PROTOTYPES",
        "groups": f"{_CLASSES} x MODEL.PROTOSEG.NUM_PROTOTYPES",
        "embed_dim": "MODEL.PROTOSEG.EMBED_DIM",
    },
    SoftmaxPredictor: {"classes": _CLASSES},
}


def tensor_setting_keys(model: nn.Module) -> Dict[str, Tuple[Optional[str], ...]]:
    """{qualified tensor name: the config key that fixes each of its dimensions (None: no key)}
    for the tensors of every predictor in `model` (Mask2Former's class head counts "no object"
    among its classes: K + 1)."""
    out = {}
    for name, module in model.named_modules():
        keys = next((v for kind, v in DIMENSION_KEYS.items() if isinstance(module, kind)), None)
        if keys is None:
            continue
        for tensor, dims in module.tensor_dims().items():
            out[f"{name}.{tensor}" if name else tensor] = tuple(
                keys.get(d) if d else None for d in dims
            )
    return out


def build_predictor(cfg, in_channels: int, num_classes: int) -> nn.Module:
    """Build the predictor named by cfg.MODEL.PREDICTOR.NAME."""
    name = cfg.MODEL.PREDICTOR.NAME
    if name not in PREDICTOR_REGISTRY:
        raise KeyError(
            f"MODEL.PREDICTOR.NAME={name!r} is not registered; registered predictors: "
            f"{sorted(k for k, _ in PREDICTOR_REGISTRY)}"
        )
    return PREDICTOR_REGISTRY.get(name)(cfg, in_channels, num_classes)
