"""PerPixelHead: a decoder followed by a predictor applied to every pixel of its feature map."""

from typing import Dict

import torch
from detectron2.config import configurable
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn
from torch.nn import functional as F

from ...scores import SCORES, available_scores, check_score_name, compute_scores, default_map
from ..predictors import build_predictor
from .aux_head import build_auxiliary_head
from .decoders import build_decoder

__all__ = ["PerPixelHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class PerPixelHead(nn.Module):
    """features -> decoder -> (B, C, h, w) -> predictor per pixel -> logits (B, K, h, w).

    Training: cross-entropy at image resolution (logits upsampled bilinearly, ignore_value
    ignored) plus the predictor's own losses; the predictor sees the labels resized (nearest)
    to the feature resolution, which is where the GMM's EM works.
    Inference: {"sem_seg": logits (B, K, H, W)} at input resolution, plus, for predictors with
    class scores (GMM, ProtoSeg), {"anomaly_scores": (B, S, H, W)}: every score of the table
    (gmmseg/scores) that the predictor's ingredients allow besides the softmax family, computed at
    the feature grid and upsampled, named by `anomaly_score_names` (the softmax family is computed
    from "sem_seg" by whoever needs it); with MODEL.ANOMALY_SCORE naming a softmax-family score,
    that one too (then also for a softmax predictor). `anomaly_map` names the model's anomaly map.

    Auxiliary classifiers (training only, plain linear ones): a decoder may return
    (features, {name: logits (B, K, h, w)}) and have `aux_loss_weights` {name: weight} (OCR's
    soft object regions), and `aux_head` (MODEL.SEM_SEG_HEAD.AUX_HEAD, deep supervision on a
    backbone feature) gives "aux"; each adds loss_<name> = weight * cross-entropy at image size.
    """

    @configurable
    def __init__(
        self,
        *,
        decoder: nn.Module,
        predictor: nn.Module,
        num_classes: int,
        ignore_value: int = 255,
        loss_weight: float = 1.0,
        aux_head: nn.Module = None,
        loss_normalization: str = "all_pixels",
        anomaly_score: str = "",
    ):
        super().__init__()
        self.configured_map = check_score_name(anomaly_score)
        self.anomaly_score_names, self.anomaly_map = [], None  # set by the first inference
        if loss_normalization not in ("all_pixels", "labelled_pixels"):
            raise ValueError(
                "MODEL.SEM_SEG_HEAD.LOSS_NORMALIZATION must be 'all_pixels' or 'labelled_pixels', "
                f"got {loss_normalization!r}"
            )
        self.loss_normalization = loss_normalization
        self.decoder, self.predictor, self.aux_head = decoder, predictor, aux_head
        self.num_classes, self.ignore_value, self.loss_weight = (
            num_classes,
            ignore_value,
            loss_weight,
        )
        self.common_stride = decoder.common_stride

    @classmethod
    def from_config(cls, cfg, input_shape):
        decoder = build_decoder(cfg, input_shape)
        h = cfg.MODEL.SEM_SEG_HEAD
        return {
            "decoder": decoder,
            "predictor": build_predictor(cfg, decoder.out_channels, h.NUM_CLASSES),
            "num_classes": h.NUM_CLASSES,
            "ignore_value": h.IGNORE_VALUE,
            "loss_weight": h.LOSS_WEIGHT,
            "aux_head": build_auxiliary_head(cfg, input_shape),
            "loss_normalization": h.LOSS_NORMALIZATION,
            "anomaly_score": cfg.MODEL.ANOMALY_SCORE,
        }

    def forward(self, features: Dict[str, torch.Tensor], targets: torch.Tensor = None):
        x = self.decoder(features)
        aux_logits = {}
        if isinstance(x, tuple):
            x, aux_logits = x
        b, c, h, w = x.shape
        labels = None
        if self.training:
            if targets is None:
                raise ValueError("PerPixelHead needs targets in training mode")
            labels = F.interpolate(targets[:, None].float(), size=(h, w), mode="nearest")[
                :, 0
            ].long()
            labels = labels.reshape(-1)
        out = self.predictor(x.permute(0, 2, 3, 1).reshape(-1, c), labels)
        logits = out["logits"].view(b, h, w, -1).permute(0, 3, 1, 2)
        if self.training:
            losses = {"loss_sem_seg": self.loss_weight * self._cross_entropy(logits, targets)}
            losses.update(out.get("losses", {}))
            losses.update(self._aux_losses(features, aux_logits, targets))
            return None, losses
        results = {"sem_seg": self._upsample(logits)}
        scores = self._anomaly_scores(out)
        if scores:
            grid = (
                torch.stack(list(scores.values())).view(-1, b, h, w).transpose(0, 1)
            )  # (B, S, h, w)
            results["anomaly_scores"] = self._upsample(grid)
        return results, {}

    def _anomaly_scores(self, out):
        """{name: (N,) score at the feature grid} of the table's scores this predictor's output allows
        (the softmax family only when MODEL.ANOMALY_SCORE names one); sets the names."""
        ingredients = {k: out[k] for k in ("log_marginal", "log_background") if k in out}
        if "log_likelihood" in out:
            kind = getattr(self.predictor, "class_score_ingredient", "log_likelihood")
            ingredients[kind] = out["log_likelihood"].t()  # (K, N)
        names = available_scores(ingredients)
        self.anomaly_map = default_map(list(ingredients) + ["logits"], self.configured_map)
        if self.anomaly_map in SCORES and self.anomaly_map not in names:  # a softmax-family map
            ingredients["logits"] = out["logits"].t()
            names.append(self.anomaly_map)
        self.anomaly_score_names = names
        return compute_scores(ingredients, names)

    def _aux_losses(self, features, aux_logits, targets):
        weights = dict(getattr(self.decoder, "aux_loss_weights", {}))
        if self.aux_head is not None:
            aux_logits = {**aux_logits, "aux": self.aux_head(features)}
            weights["aux"] = self.aux_head.loss_weight
        return {
            f"loss_{name}": weights[name] * self._cross_entropy(logits, targets)
            for name, logits in aux_logits.items()
        }

    def _cross_entropy(self, logits, targets):
        """Cross-entropy at label resolution, summed over the labelled pixels and divided by the
        number of all pixels ("all_pixels", MMSegmentation 0.22.1) or of labelled pixels
        ("labelled_pixels"); 0 (not NaN) for a batch with no labelled pixel, so one all-void crop
        cannot poison the weights (and under DDP, the other ranks' gradients)."""
        up = F.interpolate(logits, size=targets.shape[-2:], mode="bilinear", align_corners=False)
        total = F.cross_entropy(up, targets, ignore_index=self.ignore_value, reduction="sum")
        if self.loss_normalization == "all_pixels":
            return total / max(targets.numel(), 1)
        return total / (targets != self.ignore_value).sum().clamp_min(1)

    def _upsample(self, x):
        return F.interpolate(
            x, scale_factor=self.common_stride, mode="bilinear", align_corners=False
        )
