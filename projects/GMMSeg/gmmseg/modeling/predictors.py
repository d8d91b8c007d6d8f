"""Predictors: embeddings (N, C_in) -> class logits (N, K). One registry for both formulations.

A per-pixel head applies its predictor to every pixel of the decoder's feature map; Mask2Former
applies it to every query embedding. Each predictor's forward returns a dict with "logits"
(N, K) and, where it has one, "log_likelihood" (N, K) (raw class densities, for anomaly scores)
and "losses" (its own auxiliary losses, training only). Modules with `supports_em = True` also
have `flush()` and `em_update()`, called by gmmseg.engine.EMHook.
"""
from collections import OrderedDict

import torch
from detectron2.layers import get_norm
from detectron2.utils.registry import Registry
from torch import nn

from ..gmm import MEMORY_LAYOUTS, GMMPredictor
from ..gmm.distributed import world_size
from ..gmm.protoseg import ProtoSegPredictor

__all__ = ["PREDICTOR_REGISTRY", "build_predictor", "SoftmaxPredictor", "ProtoSegPredictor"]

PREDICTOR_REGISTRY = Registry("PREDICTOR")
PREDICTOR_REGISTRY.__doc__ = """
Registry for predictors. Each entry is called as fn(cfg, in_channels, num_classes) -> nn.Module; its function name
is the value of MODEL.PREDICTOR.NAME that selects it.
"""


class SoftmaxPredictor(nn.Module):
    """The discriminative twin: a linear layer (a 1x1 conv on a feature map)."""

    supports_em = False

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(in_channels, num_classes)
        nn.init.normal_(self.linear.weight, std=0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, labels: torch.Tensor = None):
        return {"logits": self.linear(x)}


@PREDICTOR_REGISTRY.register()
def softmax(cfg, in_channels, num_classes):
    """The linear softmax classifier (the twin every GMM model is compared with)."""
    return SoftmaxPredictor(in_channels, num_classes)


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_LAYOUTS = ("auto",) + MEMORY_LAYOUTS


def memory_layout(value: str) -> str:
    """MODEL.GMM.MEMORY_LAYOUT resolved for this process: "auto" is "sharded" when several
    processes train (torch.distributed initialised with W > 1), else "replicated"."""
    if value not in _LAYOUTS:
        raise ValueError(f"MODEL.GMM.MEMORY_LAYOUT must be one of {list(_LAYOUTS)}, got {value!r}")
    if value == "auto":
        return "sharded" if world_size() > 1 else "replicated"
    return value


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
        raise ValueError(f"MODEL.GMM.MEMORY_DTYPE must be one of {sorted(_DTYPES)}, got {g.MEMORY_DTYPE!r}")
    return GMMPredictor(
        in_channels, num_classes,
        embed_dim=g.EMBED_DIM, num_components=g.NUM_COMPONENTS, memory_size=g.MEMORY_SIZE,
        pushes_per_step=g.PUSHES_PER_STEP, push_correct_only=g.PUSH_CORRECT_ONLY,
        memory_init=g.MEMORY_INIT, memory_dtype=_DTYPES[g.MEMORY_DTYPE],
        mean_momentum=g.MEAN_MOMENTUM, std_momentum=g.STD_MOMENTUM, momentum_warmup=g.MOMENTUM_WARMUP,
        variance_floor=g.VARIANCE_FLOOR, em_algorithm=g.EM_ALGORITHM, sinkhorn_iters=g.SINKHORN_ITERS,
        sinkhorn_epsilon=g.SINKHORN_EPSILON, aux_loss_weight=g.AUX_LOSS_WEIGHT,
        ignore_value=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE, seed=g.SEED,
        em_loops=g.EM_LOOPS, learn_by_gradient=g.DISCRIMINATIVE, update_components=g.UPDATE_COMPONENTS,
        nll_loss_weight=g.NLL_LOSS_WEIGHT, memory_layout=memory_layout(g.MEMORY_LAYOUT),
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
        in_channels, num_classes,
        embed_dim=p.EMBED_DIM, num_prototypes=p.NUM_PROTOTYPES, momentum=p.MOMENTUM,
        temperature=p.TEMPERATURE, ppc_weight=p.PPC_WEIGHT, ppd_weight=p.PPD_WEIGHT,
        sinkhorn_iters=p.SINKHORN_ITERS, sinkhorn_epsilon=p.SINKHORN_EPSILON,
        update_correct_only=p.UPDATE_CORRECT_ONLY,
        ignore_value=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE, seed=p.SEED,
    )


def build_predictor(cfg, in_channels: int, num_classes: int) -> nn.Module:
    """Build the predictor named by cfg.MODEL.PREDICTOR.NAME."""
    name = cfg.MODEL.PREDICTOR.NAME
    if name not in PREDICTOR_REGISTRY:
        raise KeyError(
            f"MODEL.PREDICTOR.NAME={name!r} is not registered; registered predictors: "
            f"{sorted(k for k, _ in PREDICTOR_REGISTRY)}"
        )
    return PREDICTOR_REGISTRY.get(name)(cfg, in_channels, num_classes)
