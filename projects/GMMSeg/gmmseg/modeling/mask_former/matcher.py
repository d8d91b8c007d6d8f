"""Hungarian matching of predicted (class, mask) pairs to ground-truth segments.

Cost of assigning query q to target t:
    CLASS_WEIGHT * (-p_q(class_t)) + MASK_WEIGHT * BCE(mask_q, mask_t) + DICE_WEIGHT * dice(mask_q, mask_t),
with p_q the softmax of the query's class logits (linear or GMM head alike) and both mask costs
evaluated at num_points random points shared by all pairs of an image (PointRend's point_sample),
or at every pixel of the predicted-mask grid when num_points <= 0. Solved per image with scipy.
"""

from typing import Dict, List, Tuple

import torch
from detectron2.projects.point_rend.point_features import point_sample
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.nn import functional as F

__all__ = ["HungarianMatcher", "pairwise_sigmoid_ce", "pairwise_dice"]


def pairwise_sigmoid_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits (N, P), targets (M, P) in [0, 1] -> (N, M) mean binary cross-entropy over the points."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[1]


def pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits (N, P), targets (M, P) -> (N, M) dice loss 1 - (2 |p t| + 1) / (|p| + |t| + 1)."""
    p = logits.sigmoid()
    inter = 2 * p @ targets.T
    total = p.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (inter + 1) / (total + 1)


class HungarianMatcher(nn.Module):
    def __init__(
        self,
        cost_class: float = 1.0,
        cost_mask: float = 1.0,
        cost_dice: float = 1.0,
        num_points: int = 0,
    ):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher: all costs are 0")
        self.cost_class, self.cost_mask, self.cost_dice, self.num_points = (
            cost_class,
            cost_mask,
            cost_dice,
            num_points,
        )

    @torch.no_grad()
    def cost_matrix(
        self, logits, pred_masks, tgt_labels, tgt_masks, point_coords=None
    ) -> torch.Tensor:
        """logits (Q, K+1), pred_masks (Q, h, w), tgt_labels (T,), tgt_masks (T, H, W) ->
        costs (Q, T) in float32. point_coords (1, P, 2) in [0, 1]; None = every pixel of (h, w)."""
        logits, pred_masks, tgt_masks = logits.float(), pred_masks.float(), tgt_masks.float()
        q, t = pred_masks.shape[0], tgt_masks.shape[0]
        cost_class = -logits.softmax(-1)[:, tgt_labels]
        if point_coords is None:
            out = pred_masks.flatten(1)
            tgt = (
                F.interpolate(
                    tgt_masks[:, None],
                    size=pred_masks.shape[-2:],
                    mode="bilinear",
                    align_corners=False,
                )[:, 0].flatten(1)
                if t
                else tgt_masks.new_zeros((0, out.shape[1]))
            )
        else:
            out = point_sample(
                pred_masks[:, None], point_coords.expand(q, -1, -1), align_corners=False
            )[:, 0]
            tgt = (
                point_sample(
                    tgt_masks[:, None], point_coords.expand(t, -1, -1), align_corners=False
                )[:, 0]
                if t
                else tgt_masks.new_zeros((0, out.shape[1]))
            )
        return (
            self.cost_mask * pairwise_sigmoid_ce(out, tgt)
            + self.cost_class * cost_class
            + self.cost_dice * pairwise_dice(out, tgt)
        )

    @torch.no_grad()
    def forward(
        self, outputs: Dict, targets: List[Dict]
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """outputs: "pred_logits" (B, Q, K+1), "pred_masks" (B, Q, h, w); targets: per image
        {"labels": (T,) long, "masks": (T, H, W)}. Returns per image (query indices, target
        indices), int64 tensors of length min(Q, T), query indices increasing."""
        device_type = outputs["pred_masks"].device.type
        indices = []
        with torch.autocast(device_type=device_type, enabled=False):
            for b, target in enumerate(targets):
                masks = outputs["pred_masks"][b]
                coords = None
                if self.num_points > 0:
                    coords = torch.rand(1, self.num_points, 2, device=masks.device)
                cost = self.cost_matrix(
                    outputs["pred_logits"][b], masks, target["labels"], target["masks"], coords
                )
                rows, cols = linear_sum_assignment(cost.cpu().numpy())
                indices.append(
                    (
                        torch.as_tensor(rows, dtype=torch.int64),
                        torch.as_tensor(cols, dtype=torch.int64),
                    )
                )
        return indices

    def extra_repr(self):
        return (
            f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, cost_dice={self.cost_dice}, "
            f"num_points={self.num_points}"
        )
