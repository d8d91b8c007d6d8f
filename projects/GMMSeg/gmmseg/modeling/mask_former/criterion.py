"""SetCriterion: Mask2Former's losses for a set of (class, mask) predictions.

For the final prediction and, with deep supervision, every earlier one (each matched on its own):
- loss_ce: cross-entropy over K + 1 classes of all queries; matched queries target their
  segment's class, the others "no object" (index K), whose weight is NO_OBJECT_WEIGHT;
- loss_mask, loss_dice: binary cross-entropy and dice loss of the matched masks, at points chosen
  by PointRend importance sampling on the predicted mask (uncertain points + random points),
  summed over masks and divided by the number of ground-truth segments in the (global) batch.
Earlier predictions' losses carry the suffix _i (i = 0 for the learnable queries). The weights
(CLASS_WEIGHT, MASK_WEIGHT, DICE_WEIGHT) are applied by the meta-architecture via weight_dict.
"""

from typing import Dict, List, Tuple

import torch
from detectron2.projects.point_rend.point_features import (
    get_uncertain_point_coords_with_randomness,
    point_sample,
)
from detectron2.utils import comm
from torch import nn
from torch.nn import functional as F

__all__ = ["SetCriterion", "sigmoid_ce_loss", "dice_loss"]


def sigmoid_ce_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """logits, targets (N, P) -> sum over masks of the mean BCE over points, / num_masks."""
    return (
        F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1).sum()
        / num_masks
    )


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    p = logits.sigmoid()
    dice = 1 - (2 * (p * targets).sum(-1) + 1) / (p.sum(-1) + targets.sum(-1) + 1)
    return dice.sum() / num_masks


def _uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Points whose mask logit is close to 0 are the uncertain ones."""
    return -logits.abs()


class SetCriterion(nn.Module):
    def __init__(
        self,
        num_classes: int,
        matcher: nn.Module,
        weight_dict: Dict[str, float],
        eos_coef: float,
        losses=("labels", "masks"),
        num_points: int = 112 * 112,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
    ):
        super().__init__()
        unknown = set(losses) - {"labels", "masks"}
        if unknown:
            raise ValueError(
                f"SetCriterion: unknown losses {sorted(unknown)}; known: 'labels', 'masks'"
            )
        self.num_classes, self.matcher, self.weight_dict, self.eos_coef = (
            num_classes,
            matcher,
            weight_dict,
            eos_coef,
        )
        self.losses = tuple(losses)
        self.num_points, self.oversample_ratio, self.importance_sample_ratio = (
            num_points,
            oversample_ratio,
            importance_sample_ratio,
        )
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)  # in the official checkpoints too

    # ------------------------------------------------------------------ losses
    @staticmethod
    def query_targets(indices, targets, num_queries: int, no_object: int, device) -> torch.Tensor:
        """(B, Q) long: the matched segment's class for matched queries, `no_object` elsewhere."""
        labels = torch.full(
            (len(targets), num_queries), no_object, dtype=torch.int64, device=device
        )
        for b, ((src, tgt), target) in enumerate(zip(indices, targets)):
            labels[b, src.to(device)] = target["labels"][tgt.to(target["labels"].device)].to(device)
        return labels

    def loss_labels(self, outputs, targets, indices, num_masks):
        logits = outputs["pred_logits"].float()
        target_classes = self.query_targets(
            indices, targets, logits.shape[1], self.num_classes, logits.device
        )
        return {
            "loss_ce": F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight)
        }

    def loss_masks(self, outputs, targets, indices, num_masks):
        pred = outputs["pred_masks"]
        batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)]).to(
            pred.device
        )
        src_idx = torch.cat([src for src, _ in indices]).to(pred.device)
        if src_idx.numel() == 0:  # no segment in the batch: keep the graph connected, no signal
            zero = pred.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero}
        src_masks = pred[batch_idx, src_idx][:, None].float()  # (N, 1, h, w)
        tgt_masks = torch.cat(
            [t["masks"][tgt.to(t["masks"].device)] for t, (_, tgt) in zip(targets, indices)]
        )
        tgt_masks = tgt_masks[:, None].to(src_masks)  # (N, 1, H, W)
        with torch.no_grad():
            coords = get_uncertain_point_coords_with_randomness(
                src_masks,
                _uncertainty,
                self.num_points,
                self.oversample_ratio,
                self.importance_sample_ratio,
            )
            point_labels = point_sample(tgt_masks, coords, align_corners=False)[:, 0]
        point_logits = point_sample(src_masks, coords, align_corners=False)[:, 0]
        return {
            "loss_mask": sigmoid_ce_loss(point_logits, point_labels, num_masks),
            "loss_dice": dice_loss(point_logits, point_labels, num_masks),
        }

    def _losses(self, outputs, targets, indices, num_masks):
        out = {}
        for name in self.losses:
            out.update(
                (self.loss_labels if name == "labels" else self.loss_masks)(
                    outputs, targets, indices, num_masks
                )
            )
        return out

    # ------------------------------------------------------------------ forward
    def num_masks(self, targets, device) -> float:
        """Ground-truth segments per process, averaged over processes, at least 1."""
        n = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(n)
            n = n / comm.get_world_size()
        return max(float(n.item()), 1.0)

    def forward(self, outputs: Dict, targets: List[Dict]) -> Tuple[Dict[str, torch.Tensor], List]:
        """Returns (unweighted losses, the final prediction's matching: per image (query idx, target idx))."""
        final = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        indices = self.matcher(final, targets)
        num_masks = self.num_masks(targets, outputs["pred_logits"].device)
        losses = self._losses(final, targets, indices, num_masks)
        # deep supervision: only if the weights ask for it (DEEP_SUPERVISION adds the "_i" keys)
        aux_outputs = (
            outputs.get("aux_outputs", [])
            if any(k.endswith("_0") for k in self.weight_dict)
            else []
        )
        for i, aux in enumerate(aux_outputs):
            aux_indices = self.matcher(aux, targets)
            losses.update(
                {
                    f"{k}_{i}": v
                    for k, v in self._losses(aux, targets, aux_indices, num_masks).items()
                }
            )
        return losses, indices

    def extra_repr(self):
        return (
            f"num_classes={self.num_classes}, eos_coef={self.eos_coef}, losses={self.losses}, "
            f"num_points={self.num_points}, oversample_ratio={self.oversample_ratio}, "
            f"importance_sample_ratio={self.importance_sample_ratio}"
        )
