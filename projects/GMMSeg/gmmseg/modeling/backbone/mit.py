"""Mix Transformer (MiT-B0..B5), SegFormer's encoder (Xie et al., NeurIPS 2021), as a Backbone.

Four stages; stage i:
    overlapping patch embedding: conv k_i x k_i, stride s_i, padding k_i // 2, then LayerNorm
        (k, s) = (7, 4) for stage 1, (3, 2) for stages 2-4  -> strides 4, 8, 16, 32
    depth_i blocks, each (pre-norm, residual, stochastic depth):
        efficient self-attention: keys/values from the tokens reduced by a conv of kernel and
            stride R_i (+ LayerNorm) when R_i > 1;  R = (8, 4, 2, 1), heads = (1, 2, 5, 8)
        Mix-FFN: Linear(C, 4C) -> 3x3 depthwise conv on the token map -> GELU -> Linear(4C, C)
    LayerNorm, tokens back to a (B, C_i, H / stride, W / stride) map   -> "res{i+1}"

Depth/width table (published): B0 widths (32, 64, 160, 256), B1-B5 (64, 128, 320, 512); depths
B0 (2,2,2,2), B1 (2,2,2,2), B2 (3,4,6,3), B3 (3,4,18,3), B4 (3,8,27,3), B5 (3,6,40,3).

Parameter names follow the SegFormer release (patch_embed1.proj, block1.0.attn.q, attn.kv,
attn.sr, attn.norm, mlp.dwconv.dwconv, norm1, ...), so its ImageNet checkpoints mit_b*.pth load
as they are; Hugging Face "nvidia/mit-b*" checkpoints are converted by `convert_mit_state_dict`.
Unlike timm's PVTv2 (same family), MiT uses mlp ratio 4 in every stage of every variant
(PVTv2-B0..B4 use 8, 8, 4, 4) and its own checkpoint layout; see docs/MODEL_ZOO.md.
"""

import logging
import os
import re
from typing import Dict, Sequence

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from timm.layers import DropPath
from torch import nn
from torch.nn import functional as F

__all__ = [
    "MIT_SETTINGS",
    "MixVisionTransformer",
    "build_mit_backbone",
    "convert_mit_state_dict",
    "load_mit_checkpoint",
]

logger = logging.getLogger(__name__)

_WIDE = (64, 128, 320, 512)
MIT_SETTINGS = {
    "b0": {"embed_dims": (32, 64, 160, 256), "depths": (2, 2, 2, 2)},
    "b1": {"embed_dims": _WIDE, "depths": (2, 2, 2, 2)},
    "b2": {"embed_dims": _WIDE, "depths": (3, 4, 6, 3)},
    "b3": {"embed_dims": _WIDE, "depths": (3, 4, 18, 3)},
    "b4": {"embed_dims": _WIDE, "depths": (3, 8, 27, 3)},
    "b5": {"embed_dims": _WIDE, "depths": (3, 6, 40, 3)},
}


class OverlapPatchEmbed(nn.Module):
    """(B, C_in, H, W) -> tokens (B, H' W', C), (H', W') with a strided, overlapping conv."""

    def __init__(self, in_channels: int, dim: int, patch_size: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        x = self.proj(x)
        hw = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), hw


class EfficientSelfAttention(nn.Module):
    """Multi-head attention whose keys and values come from a spatially reduced token map."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(
            dim, 2 * dim, bias=qkv_bias
        )  # keys: rows [0, dim), values: [dim, 2 dim)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x, hw):
        """x: (B, N, C) tokens of an (H, W) map -> (B, N, C)."""
        b, n, c = x.shape
        heads = self.num_heads
        q = self.q(x).view(b, n, heads, c // heads).transpose(1, 2)  # (B, h, N, d)
        if self.sr_ratio > 1:
            y = self.sr(x.transpose(1, 2).reshape(b, c, *hw))
            x = self.norm(y.flatten(2).transpose(1, 2))  # (B, N / R^2, C)
        k, v = (
            self.kv(x).view(b, -1, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
        )  # 2 x (B, h, N', d)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _DepthwiseConv(nn.Module):
    """3x3 depthwise conv on tokens (B, N, C) of an (H, W) map (module name kept for checkpoints)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x, hw):
        b, n, c = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(b, c, *hw)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """Linear -> depthwise 3x3 conv -> GELU -> Linear: positional information without embeddings."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = _DepthwiseConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x, hw):
        return self.fc2(self.act(self.dwconv(self.fc1(x), hw)))


class MixBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio))

    def forward(self, x, hw):
        x = x + self.drop_path(self.attn(self.norm1(x), hw))
        return x + self.drop_path(self.mlp(self.norm2(x), hw))


class MixVisionTransformer(Backbone):
    """features: {"res2".."res5": (B, C_i, H / 2^(i), W / 2^(i))}, the stages' normalised outputs."""

    def __init__(
        self,
        *,
        embed_dims: Sequence[int] = (32, 64, 160, 256),
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        in_chans: int = 3,
        out_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
    ):
        super().__init__()
        names = [f"res{i + 2}" for i in range(4)]
        unknown = [f for f in out_features if f not in names]
        if unknown:
            raise ValueError(f"MiT out_features {unknown} unknown; choose among {names}")
        self._out_features = [f for f in names if f in out_features]
        num_stages = max(names.index(f) for f in self._out_features) + 1
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        start, c_in = 0, in_chans
        for i in range(num_stages):
            patch, stride = (7, 4) if i == 0 else (3, 2)
            setattr(
                self, f"patch_embed{i + 1}", OverlapPatchEmbed(c_in, embed_dims[i], patch, stride)
            )
            setattr(
                self,
                f"block{i + 1}",
                nn.ModuleList(
                    MixBlock(embed_dims[i], num_heads[i], sr_ratios[i], mlp_ratio, rates[start + j])
                    for j in range(depths[i])
                ),
            )
            setattr(self, f"norm{i + 1}", nn.LayerNorm(embed_dims[i], eps=1e-6))
            start, c_in = start + depths[i], embed_dims[i]
        self.num_stages = num_stages
        self._out_feature_channels = {names[i]: embed_dims[i] for i in range(4)}
        self._out_feature_strides = {names[i]: 2 ** (i + 2) for i in range(4)}
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, std=(2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @property
    def size_divisibility(self) -> int:
        return 32

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = {}
        for i in range(self.num_stages):
            x, hw = getattr(self, f"patch_embed{i + 1}")(x)
            for block in getattr(self, f"block{i + 1}"):
                x = block(x, hw)
            x = getattr(self, f"norm{i + 1}")(x)
            x = x.transpose(1, 2).reshape(x.shape[0], -1, *hw)
            if f"res{i + 2}" in self._out_features:
                out[f"res{i + 2}"] = x
        return out

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            n: ShapeSpec(
                channels=self._out_feature_channels[n], stride=self._out_feature_strides[n]
            )
            for n in self._out_features
        }


# ---- checkpoints -------------------------------------------------------------------------------
_HF_BLOCK_PARTS = {  # Hugging Face SegformerModel names inside a block -> SegFormer release names
    "layer_norm_1.": "norm1.",
    "layer_norm_2.": "norm2.",
    "attention.self.query.": "attn.q.",
    "attention.self.key.": "attn.k.",
    "attention.self.value.": "attn.v.",
    "attention.self.sr.": "attn.sr.",
    "attention.self.layer_norm.": "attn.norm.",
    "attention.output.dense.": "attn.proj.",
    "mlp.dense1.": "mlp.fc1.",
    "mlp.dense2.": "mlp.fc2.",
}


def _release_name(key: str) -> str:
    """A Hugging Face encoder key -> the SegFormer release's name (other keys are returned as is);
    attention keys/values become "attn.k." / "attn.v.", merged into "attn.kv." by the caller."""
    m = re.fullmatch(r"patch_embeddings\.(\d+)\.(proj|layer_norm)\.(\w+)", key)
    if m:
        return f"patch_embed{int(m[1]) + 1}.{'proj' if m[2] == 'proj' else 'norm'}.{m[3]}"
    m = re.fullmatch(r"layer_norm\.(\d+)\.(\w+)", key)
    if m:
        return f"norm{int(m[1]) + 1}.{m[2]}"
    m = re.fullmatch(r"block\.(\d+)\.(\d+)\.(.+)", key)
    if m:
        rest = m[3]
        for hf, ours in _HF_BLOCK_PARTS.items():
            if rest.startswith(hf):
                rest = ours + rest[len(hf) :]
                break
        return f"block{int(m[1]) + 1}.{m[2]}.{rest}"
    return key


def convert_mit_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A MiT checkpoint in any supported layout -> this module's parameter names.

    Accepted: the SegFormer release's ImageNet files (mit_b*.pth, used as they are), SegFormer
    segmentation checkpoints ("state_dict" with "backbone." keys), and Hugging Face
    "nvidia/mit-b*" / "nvidia/segformer-*" files ("segformer.encoder." keys, separate key and
    value projections, concatenated here into kv). Classifier and decode-head weights are dropped.
    """
    for wrapper in ("state_dict", "model"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
    out, kv_parts = {}, {}
    for key, value in state_dict.items():
        for prefix in ("module.", "backbone.", "segformer.encoder.", "encoder."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        if key.startswith(
            ("head.", "decode_head.", "auxiliary_head.", "classifier.", "segformer.")
        ):
            continue
        key = _release_name(key)
        m = re.fullmatch(r"(.+)\.attn\.([kv])\.(\w+)", key)
        if m:
            kv_parts.setdefault((m[1], m[3]), {})[m[2]] = value
        else:
            out[key] = value
    for (block, kind), parts in kv_parts.items():
        if set(parts) != {"k", "v"}:
            raise KeyError(
                f"MiT checkpoint: {block} has only the {sorted(parts)} part of the attention key/value {kind}"
            )
        out[f"{block}.attn.kv.{kind}"] = torch.cat([parts["k"], parts["v"]], dim=0)
    return out


def load_mit_checkpoint(model: MixVisionTransformer, path: str) -> None:
    """Load a local MiT checkpoint (see convert_mit_state_dict) into `model`; every parameter of
    the model must be found, with the right shape (a wrong variant is an error, not a warning)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MODEL.MIT.PRETRAINED_FILE={path!r} does not exist")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state_dict = load_file(path)
    else:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    state_dict = convert_mit_state_dict(state_dict)
    own = model.state_dict()
    wrong = {
        k: (tuple(v.shape), tuple(own[k].shape))
        for k, v in state_dict.items()
        if k in own and v.shape != own[k].shape
    }
    missing = sorted(set(own) - set(state_dict))
    if wrong or missing:
        raise ValueError(
            f"MiT checkpoint {path} does not fit this variant: missing {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}; shape mismatches (file, model) {dict(list(wrong.items())[:8])}"
        )
    unexpected = sorted(set(state_dict) - set(own))
    if unexpected:
        logger.warning(
            "MiT checkpoint %s: %d unused entries, e.g. %s", path, len(unexpected), unexpected[:5]
        )
    model.load_state_dict({k: v for k, v in state_dict.items() if k in own})
    logger.info("Loaded MiT weights from %s", path)


@BACKBONE_REGISTRY.register()
def build_mit_backbone(cfg, input_shape: ShapeSpec) -> MixVisionTransformer:
    """MiT-B0..B5 configured by cfg.MODEL.MIT (VARIANT, OUT_FEATURES, DROP_PATH_RATE, PRETRAINED_FILE)."""
    m = cfg.MODEL.MIT
    variant = m.VARIANT.lower()
    if variant not in MIT_SETTINGS:
        raise ValueError(f"MODEL.MIT.VARIANT={m.VARIANT!r}; expected one of {sorted(MIT_SETTINGS)}")
    model = MixVisionTransformer(
        **MIT_SETTINGS[variant],
        drop_path_rate=m.DROP_PATH_RATE,
        in_chans=input_shape.channels,
        out_features=list(m.OUT_FEATURES),
    )
    if m.PRETRAINED_FILE:
        load_mit_checkpoint(model, m.PRETRAINED_FILE)
    else:
        logger.info(
            "MiT-%s is randomly initialised (MODEL.MIT.PRETRAINED_FILE is empty)", variant.upper()
        )
    return model
