"""Mask2Former's masked-attention transformer decoder, with the class head from the predictor registry.

Q learnable queries are refined by decoder layers (masked cross-attention to one of three
pixel-decoder scales in round robin, self-attention, FFN). After the learnable queries and after
every layer, the prediction heads map the normalised queries to class logits (the predictor:
`softmax` = the official linear layer over K + 1 classes, `gmm` = GMMSeg's generative classifier
over K + 1 classes, "no object" being the last) and to mask logits (an MLP embedding dotted with
the mask features). The mask predicted by one layer, thresholded at 0.5, restricts the
cross-attention of the next (masked attention).

Module and parameter names follow the official release (transformer_{self,cross}_attention_layers,
transformer_ffn_layers, decoder_norm, query_feat, query_embed, level_embed, input_proj,
class_embed, mask_embed), so its checkpoints load; see `_remap_linear_class_embed`.
"""

import logging
from typing import Dict, List, Optional

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d
from detectron2.utils.registry import Registry
from torch import nn
from torch.nn import functional as F

from ..predictors import SoftmaxPredictor, build_predictor
from .position_encoding import PositionEmbeddingSine

__all__ = [
    "TRANSFORMER_DECODER_REGISTRY",
    "MultiScaleMaskedTransformerDecoder",
    "build_transformer_decoder",
]

logger = logging.getLogger(__name__)

TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_MODULE")
TRANSFORMER_DECODER_REGISTRY.__doc__ = """
Transformer decoders of mask-classification models, called as fn(cfg, in_channels) and selected by
MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME.
"""


def _xavier_(module: nn.Module):
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class SelfAttentionLayer(nn.Module):
    """Self-attention among the queries (batch first), residual, LayerNorm (post or pre)."""

    def __init__(
        self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier_(self)

    def forward(self, tgt, query_pos):
        x = self.norm(tgt) if self.normalize_before else tgt
        q = x + query_pos
        tgt = tgt + self.dropout(self.self_attn(q, q, value=x, need_weights=False)[0])
        return tgt if self.normalize_before else self.norm(tgt)


class CrossAttentionLayer(nn.Module):
    """Queries attend to one flattened feature map; attn_mask (B * nH, Q, S), True = blocked."""

    def __init__(
        self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False
    ):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(
            d_model, nhead, dropout=dropout, batch_first=True
        )
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier_(self)

    def forward(self, tgt, memory, attn_mask, pos, query_pos):
        x = self.norm(tgt) if self.normalize_before else tgt
        out = self.multihead_attn(
            query=x + query_pos,
            key=memory + pos,
            value=memory,
            attn_mask=attn_mask,
            need_weights=False,
        )[0]
        tgt = tgt + self.dropout(out)
        return tgt if self.normalize_before else self.norm(tgt)


class FFNLayer(nn.Module):
    def __init__(
        self,
        d_model: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.0,
        normalize_before: bool = False,
    ):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        _xavier_(self)

    def forward(self, tgt):
        x = self.norm(tgt) if self.normalize_before else tgt
        tgt = tgt + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x)))))
        return tgt if self.normalize_before else self.norm(tgt)


class MLP(nn.Module):
    """num_layers linear layers with ReLU between them."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


@TRANSFORMER_DECODER_REGISTRY.register()
class MultiScaleMaskedTransformerDecoder(nn.Module):
    """x: 3 maps (B, in_channels, h_l, w_l), lowest resolution first; mask_features (B, mask_dim, H, W).

    Returns a dict:
      "pred_logits" (B, Q, K + 1), "pred_masks" (B, Q, H, W) of the last layer,
      "pred_embeds" (B, Q, hidden_dim): the normalised last-layer queries the class head saw
          (the Hungarian-labelled EM data of a generative class head),
      "pred_log_likelihood" (B, Q, K + 1) when the class head has a density,
      "aux_outputs": [{"pred_logits", "pred_masks"}] of the earlier predictions (deep supervision).
    """

    @configurable
    def __init__(
        self,
        in_channels: int,
        *,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        pre_norm: bool,
        mask_dim: int,
        enforce_input_project: bool,
        class_embed: Optional[nn.Module] = None,
    ):
        """dec_layers: the number of decoder layers (the config's DEC_LAYERS - 1).
        class_embed: predictor for K + 1 classes (forward(x (N, hidden_dim)) -> {"logits", ...});
        default: the linear softmax head."""
        super().__init__()
        self.num_classes = num_classes
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2)
        self.num_heads, self.num_layers = nheads, dec_layers
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, 0.0, pre_norm) for _ in range(dec_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads, 0.0, pre_norm) for _ in range(dec_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, 0.0, pre_norm) for _ in range(dec_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.num_queries = num_queries
        self.query_feat = nn.Embedding(num_queries, hidden_dim)  # learnable query features
        self.query_embed = nn.Embedding(num_queries, hidden_dim)  # learnable query positions
        self.num_feature_levels = 3
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                conv = Conv2d(in_channels, hidden_dim, kernel_size=1)
                weight_init.c2_xavier_fill(conv)
                self.input_proj.append(conv)
            else:
                self.input_proj.append(nn.Sequential())
        self.class_embed = (
            class_embed
            if class_embed is not None
            else SoftmaxPredictor(hidden_dim, num_classes + 1)
        )
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self._register_load_state_dict_pre_hook(self._remap_linear_class_embed)

    @classmethod
    def from_config(cls, cfg, in_channels):
        mf = cfg.MODEL.MASK_FORMER
        if mf.DEC_LAYERS < 1:
            raise ValueError(f"MODEL.MASK_FORMER.DEC_LAYERS must be >= 1, got {mf.DEC_LAYERS}")
        num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        return {
            "in_channels": in_channels,
            "num_classes": num_classes,
            "hidden_dim": mf.HIDDEN_DIM,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "nheads": mf.NHEADS,
            "dim_feedforward": mf.DIM_FEEDFORWARD,
            # as the release: DEC_LAYERS counts the predictions that are supervised, the first of
            # which is made from the learnable queries before any decoder layer
            "dec_layers": mf.DEC_LAYERS - 1,
            "pre_norm": mf.PRE_NORM,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            "enforce_input_project": mf.ENFORCE_INPUT_PROJ,
            # K classes + "no object"; the predictor registry decides linear softmax or GMM
            "class_embed": build_predictor(cfg, mf.HIDDEN_DIM, num_classes + 1),
        }

    def _remap_linear_class_embed(self, state_dict, prefix, *args):
        """Official checkpoints store the linear class head as `class_embed.{weight,bias}`; the
        project's SoftmaxPredictor keeps it in `class_embed.linear.*`. Renamed on load."""
        if not isinstance(self.class_embed, SoftmaxPredictor):
            return
        for name in ("weight", "bias"):
            old, new = f"{prefix}class_embed.{name}", f"{prefix}class_embed.linear.{name}"
            if old in state_dict and new not in state_dict:
                state_dict[new] = state_dict.pop(old)

    def forward(self, x: List[torch.Tensor], mask_features: torch.Tensor, mask=None) -> Dict:
        if len(x) != self.num_feature_levels:
            raise ValueError(
                f"MultiScaleMaskedTransformerDecoder expects {self.num_feature_levels} feature maps, got {len(x)}"
            )
        srcs, poss, sizes = [], [], []
        for i, feat in enumerate(x):
            sizes.append(tuple(feat.shape[-2:]))
            poss.append(self.pe_layer(feat).flatten(2).transpose(1, 2))  # (B, h w, C)
            src = self.input_proj[i](feat).flatten(2) + self.level_embed.weight[i][None, :, None]
            srcs.append(src.transpose(1, 2))
        b = x[0].shape[0]
        query_pos = self.query_embed.weight.unsqueeze(0).expand(b, -1, -1)
        output = self.query_feat.weight.unsqueeze(0).expand(b, -1, -1)

        predictions = [self.forward_prediction_heads(output, mask_features, sizes[0])]
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            attn_mask = predictions[-1]["attn_mask"]
            output = self.transformer_cross_attention_layers[i](
                output, srcs[level], attn_mask=attn_mask, pos=poss[level], query_pos=query_pos
            )
            output = self.transformer_self_attention_layers[i](output, query_pos=query_pos)
            output = self.transformer_ffn_layers[i](output)
            last = i == self.num_layers - 1
            next_size = None if last else sizes[(i + 1) % self.num_feature_levels]
            predictions.append(self.forward_prediction_heads(output, mask_features, next_size))

        final = predictions[-1]
        out = {
            "pred_logits": final["logits"],
            "pred_masks": final["masks"],
            "pred_embeds": final["embeds"],
            "aux_outputs": [
                {"pred_logits": p["logits"], "pred_masks": p["masks"]} for p in predictions[:-1]
            ],
        }
        if "log_likelihood" in final:
            out["pred_log_likelihood"] = final["log_likelihood"]
        return out

    def forward_prediction_heads(self, output, mask_features, attn_mask_target_size=None):
        """output: (B, Q, C) -> {"embeds", "logits" (B, Q, K+1), "masks" (B, Q, H, W),
        "attn_mask" (B * nH, Q, h*w) bool for the next layer (None if no target size)}."""
        b, q, c = output.shape
        embeds = self.decoder_norm(output)
        cls = self.class_embed(embeds.reshape(b * q, c))
        pred = {"embeds": embeds, "logits": cls["logits"].view(b, q, -1)}
        if "log_likelihood" in cls:
            pred["log_likelihood"] = cls["log_likelihood"].view(b, q, -1)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(embeds), mask_features)
        pred["masks"] = masks
        pred["attn_mask"] = None
        if attn_mask_target_size is not None:
            with torch.no_grad():
                small = F.interpolate(
                    masks, size=attn_mask_target_size, mode="bilinear", align_corners=False
                )
                blocked = small.sigmoid().flatten(2) < 0.5  # (B, Q, h w)
                # a query whose mask is empty at this scale attends everywhere instead of nowhere
                blocked = blocked & ~blocked.all(
                    -1, keepdim=True
                )  # not in place: ONNX has no in-place and
                pred["attn_mask"] = blocked.repeat_interleave(self.num_heads, dim=0)
        return pred


def build_transformer_decoder(cfg, in_channels: int) -> nn.Module:
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    if name not in TRANSFORMER_DECODER_REGISTRY:
        raise KeyError(
            f"MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME={name!r} is not registered; registered: "
            f"{sorted(k for k, _ in TRANSFORMER_DECODER_REGISTRY)}"
        )
    return TRANSFORMER_DECODER_REGISTRY.get(name)(cfg, in_channels)
