"""MaskFormer meta-architecture (Mask2Former), semantic segmentation, softmax or GMM class head.

Training: per image, the ground-truth segments are the classes present in "sem_seg" (one binary
mask each, the ignore value in none) or, if the mapper provides them, "instances" (gt_classes,
gt_masks). The set criterion matches and weighs the losses as the official release. With a
generative class head (a gmm.EMModule), the final layer's queries are then passed to it once more
with their Hungarian labels - matched queries: their segment's class, unmatched: "no object" (K) -
which is where its E-step bookkeeping and auxiliary loss happen; `flush()`/`em_update()` are left
to the trainer's EM hook, as for the per-pixel heads. See docs/MASK2FORMER.md.

Inference, per image, at the requested output size:
  "sem_seg" (K, H, W): log of the official semantic scores sum_q p_q(c) sigmoid(m_q) (clamped at
      1e-8), so that argmax is the official prediction and a softmax over classes gives the
      scores normalised per pixel;
  "anomaly_scores" {name: (H, W)}: the mask-classification scores of the score table
      (gmmseg/scores/table.py): "rba" (from the semantic scores), "eam" (sum_q m_q max_k p_q(k)) and,
      GMM head only, "query_likelihood": minus the query-mixture of the queries' best known-class
      log-likelihood, weighted per pixel by sigmoid(m_q) * (1 - p_q(no object));
  "anomaly_score" (H, W): the model's anomaly map, MODEL.ANOMALY_SCORE or the default
      ("query_likelihood" for the GMM head, none for softmax).
With MODEL.MASK_FORMER.TEST.CLASS_TEMPERATURE T != 1, p_q = softmax(query logits / T) in
"sem_seg" and hence "rba" (post-hoc temperature scaling, fitted by tools/fit_temperature.py);
"eam" and "query_likelihood" are untempered. Training never reads T.
"""

import math
from typing import Dict, List, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone, build_sem_seg_head
from detectron2.modeling.backbone import Backbone
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList
from torch import nn
from torch.nn import functional as F

from ...gmm import EMModule
from ...scores import (
    FITTED,
    check_score_name,
    compute_scores,
    default_map,
    fitted_scores,
    query_likelihood_weights,
)
from ...scores.fit import load_fit
from ..memory_format import use_channels_last
from .criterion import SetCriterion
from .matcher import HungarianMatcher

__all__ = [
    "MaskFormer",
    "semantic_inference",
    "query_anomaly_score",
    "check_class_temperature",
    "TEMPERATURE_KEY",
    "SCORE_FLOOR",
]

#: inference clamps the per-pixel class scores sum_q p_q(c) m_q(x) at this before their log (sem_seg)
SCORE_FLOOR = 1e-8
TEMPERATURE_KEY = "MODEL.MASK_FORMER.TEST.CLASS_TEMPERATURE"


def check_class_temperature(temperature) -> float:
    """`temperature` as a float, or ValueError naming the config key: a temperature divides the
    logits, so 0, a negative value (which would invert the class ranking) or NaN / inf is a typo."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"{TEMPERATURE_KEY} must be a finite number > 0 (1.0 = off), got {temperature!r}"
        )
    return value


def semantic_inference(
    mask_cls: torch.Tensor, mask_pred: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """mask_cls (Q, K+1) logits, mask_pred (Q, H, W) logits -> (K, H, W) scores sum_q p_q(c) m_q,
    p_q = softmax(mask_cls[q] / temperature)."""
    return _contract(mask_cls, mask_pred.float().sigmoid(), temperature=temperature)


def query_anomaly_score(
    mask_cls: torch.Tensor, log_likelihood: torch.Tensor, mask_pred: torch.Tensor
) -> torch.Tensor:
    """(Q, K+1) logits, (Q, K+1) class log-likelihoods, (Q, H, W) mask logits -> (H, W).

    score(x) = - sum_q w_q(x) max_{c < K} log p(e_q | c) / sum_q w_q(x),
    w_q(x) = sigmoid(m_q(x)) * (1 - p_q(no object)): each pixel takes the densities of the queries
    that claim it, in the proportions the semantic prediction uses them. Higher = more anomalous.
    The class temperature does not enter it (see _contract).
    """
    return _split(_contract(mask_cls, mask_pred.float().sigmoid(), log_likelihood), True)[1]


def _contract(
    mask_cls,
    mask_prob,
    log_likelihood=None,
    temperature: float = 1.0,
    query_mass: bool = False,
    query_weights=None,
):
    """(K, H, W) semantic scores, or with log-likelihoods (K + 2, H, W): the semantic scores plus the
    anomaly score's numerator and denominator; with `query_mass` one more channel,
    sum_q m_q max_{k < K} p_q(k) (untempered); with `query_weights` (Q,) K more channels last,
    sum_q p_q(k) m_q lambda_q (untempered). One (Q, K[+2][+1])^T x (Q, H*W) contraction, so
    mask_prob (the large operand) is read once, and the caller resizes all channels in one interpolation.

    `temperature` divides the query logits before the softmax of the semantic scores only; at 1
    nothing is divided (the untempered computation, bit for bit). The anomaly weights
    1 - p_q(no object) keep the untempered probabilities: the temperature calibrates the class
    posterior, and on CamVid tempering the weights too cost the query-GMM score 10-30 AUROC
    points (docs/MASK2FORMER.md, "CamVid")."""
    logits = mask_cls.float()
    prob = logits.softmax(-1)
    weights = prob[:, :-1] if temperature == 1.0 else (logits / temperature).softmax(-1)[:, :-1]
    if log_likelihood is not None:
        objectness = 1.0 - prob[:, -1]  # (Q,)
        best = log_likelihood.float()[:, :-1].amax(
            -1
        )  # (Q,) the "no object" density is not evidence
        weights = torch.cat([weights, (best * objectness)[:, None], objectness[:, None]], dim=1)
    if query_mass:
        weights = torch.cat([weights, prob[:, :-1].amax(-1)[:, None]], dim=1)
    if query_weights is not None:
        weights = torch.cat([weights, prob[:, :-1] * query_weights.float()[:, None]], dim=1)
    return torch.einsum("qc,qhw->chw", weights, mask_prob)


def _ingredients(
    scores, num_classes: int, with_likelihood: bool, with_mass: bool, with_weights: bool = False
):
    """The output of _contract (possibly resized) -> {ingredient: map} of the score table."""
    out = {"mask_scores": scores[:num_classes]}
    rest = scores[num_classes:]
    if with_likelihood:
        out["query_likelihood"] = rest[0] / rest[1].clamp_min(1e-12)
        rest = rest[2:]
    if with_mass:
        out["query_mass"] = rest[0]
        rest = rest[1:]
    if with_weights:
        out["weighted_mask_scores"] = rest[:num_classes]
    return out


def _split(scores, with_anomaly):
    """The output of _contract (possibly resized) -> (K, H, W) semantic scores, (H, W) anomaly | None."""
    if not with_anomaly:
        return scores, None
    return scores[:-2], -scores[-2] / scores[-1].clamp_min(1e-12)


@META_ARCH_REGISTRY.register()
class MaskFormer(nn.Module):
    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        criterion: SetCriterion,
        num_queries: int,
        size_divisibility: int,
        pixel_mean: Tuple[float],
        pixel_std: Tuple[float],
        ignore_value: int = 255,
        sem_seg_postprocess_before_inference: bool = False,
        channels_last: bool = False,
        class_temperature: float = 1.0,
        anomaly_score: str = "",
        anomaly_fit=None,
    ):
        super().__init__()
        self.backbone, self.sem_seg_head, self.criterion = backbone, sem_seg_head, criterion
        self.num_queries, self.ignore_value = num_queries, ignore_value
        self.size_divisibility = (
            backbone.size_divisibility if size_divisibility < 0 else size_divisibility
        )
        self.sem_seg_postprocess_before_inference = sem_seg_postprocess_before_inference
        # a plain float, not a buffer: checkpoints stay as they were, and export bakes it in as a constant
        self.class_temperature = check_class_temperature(class_temperature)
        self.configured_map = check_score_name(anomaly_score)
        self.score_family = True  # False (export): only the anomaly map, not every score
        # known-pixel statistics of the fitted scores (MODEL.ANOMALY_FIT; no background density here)
        self.anomaly_fit = (anomaly_fit or {}).get("scores", {})
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False
        )
        if (
            channels_last
        ):  # MODEL.CHANNELS_LAST: the same computation, a faster layout for the convolutions
            use_channels_last(self)

    @classmethod
    def from_config(cls, cfg):
        mf = cfg.MODEL.MASK_FORMER
        class_temperature = check_class_temperature(
            mf.TEST.CLASS_TEMPERATURE
        )  # before anything is built
        for key in ("INSTANCE_ON", "PANOPTIC_ON"):
            if mf.TEST[key]:
                raise ValueError(
                    f"MODEL.MASK_FORMER.TEST.{key}=True: this project implements semantic inference only (SEMANTIC_ON)"
                )
        sliding = cfg.TEST.get("SLIDING_WINDOW", None)
        if sliding is not None and sliding.ENABLED:
            raise ValueError(
                "TEST.SLIDING_WINDOW.ENABLED=True: MaskFormer infers on the whole image (as the "
                "release); sliding-window inference is implemented for the per-pixel heads only"
            )
        if not mf.TEST.SEMANTIC_ON:
            raise ValueError(
                "MODEL.MASK_FORMER.TEST.SEMANTIC_ON must be True (the only inference implemented)"
            )
        backbone = build_backbone(cfg)
        sem_seg_head = build_sem_seg_head(cfg, backbone.output_shape())
        matcher = HungarianMatcher(
            cost_class=mf.CLASS_WEIGHT,
            cost_mask=mf.MASK_WEIGHT,
            cost_dice=mf.DICE_WEIGHT,
            num_points=mf.TRAIN_NUM_POINTS,
        )
        weight_dict = {
            "loss_ce": mf.CLASS_WEIGHT,
            "loss_mask": mf.MASK_WEIGHT,
            "loss_dice": mf.DICE_WEIGHT,
        }
        if mf.DEEP_SUPERVISION:
            base = dict(weight_dict)
            for i in range(mf.DEC_LAYERS - 1):
                weight_dict.update({f"{k}_{i}": v for k, v in base.items()})
        criterion = SetCriterion(
            sem_seg_head.num_classes,
            matcher=matcher,
            weight_dict=weight_dict,
            eos_coef=mf.NO_OBJECT_WEIGHT,
            losses=("labels", "masks"),
            num_points=mf.TRAIN_NUM_POINTS,
            oversample_ratio=mf.OVERSAMPLE_RATIO,
            importance_sample_ratio=mf.IMPORTANCE_SAMPLE_RATIO,
        )
        return {
            "backbone": backbone,
            "sem_seg_head": sem_seg_head,
            "criterion": criterion,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "size_divisibility": mf.SIZE_DIVISIBILITY,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "sem_seg_postprocess_before_inference": mf.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE,
            "channels_last": cfg.MODEL.CHANNELS_LAST,
            "class_temperature": class_temperature,
            "anomaly_score": cfg.MODEL.ANOMALY_SCORE,
            "anomaly_fit": load_fit(cfg.MODEL.ANOMALY_FIT, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
            if cfg.MODEL.ANOMALY_FIT
            else None,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    @property
    def class_head(self) -> nn.Module:
        """The predictor applied to the queries (softmax or GMM), shared by all decoder layers."""
        return self.sem_seg_head.predictor.class_embed

    # ------------------------------------------------------------------ forward
    def forward(self, batched_inputs: List[Dict]):
        images = self.preprocess_images(batched_inputs)
        outputs = self.sem_seg_head(self.backbone(images.tensor))
        if self.training:
            return self.losses(outputs, self.prepare_targets(batched_inputs, images))
        return self.inference(outputs, batched_inputs, images)

    def preprocess_images(self, batched_inputs: List[Dict]) -> ImageList:
        """The images normalised and padded to the size divisibility, as one batch."""
        images = [
            (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs
        ]
        return ImageList.from_tensors(
            images,
            self.size_divisibility,
            padding_constraints=getattr(self.backbone, "padding_constraints", None),
        )

    def losses(self, outputs: Dict, targets: List[Dict]) -> Dict[str, torch.Tensor]:
        raw, indices = self.criterion(outputs, targets)
        weights = self.criterion.weight_dict
        losses = {k: v * weights[k] for k, v in raw.items() if k in weights}
        losses.update(self.learn_query_classes(outputs, targets, indices))
        return losses

    def learn_query_classes(
        self, outputs: Dict, targets: List[Dict], indices
    ) -> Dict[str, torch.Tensor]:
        """Give a generative class head the final queries with their Hungarian labels (matched:
        the segment's class; unmatched: "no object" = K). Returns its own (already weighted) losses."""
        head = self.class_head
        if not isinstance(head, EMModule):
            return {}
        embeds = outputs["pred_embeds"]
        b, q, c = embeds.shape
        labels = SetCriterion.query_targets(
            indices, targets, q, self.sem_seg_head.num_classes, embeds.device
        )
        return head(embeds.reshape(b * q, c), labels.reshape(-1)).get("losses", {})

    # ------------------------------------------------------------------ targets
    def prepare_targets(self, batched_inputs: List[Dict], images: ImageList) -> List[Dict]:
        """Per image {"labels": (T,) long, "masks": (T, H_pad, W_pad) bool}, from "instances"
        (gt_classes, gt_masks) when present, else from the "sem_seg" label map."""
        h_pad, w_pad = images.tensor.shape[-2:]
        k = self.sem_seg_head.num_classes
        targets = []
        for x in batched_inputs:
            if "instances" in x:
                inst = x["instances"].to(self.device)
                labels = inst.gt_classes.long()
                masks = inst.gt_masks
                masks = masks.tensor if hasattr(masks, "tensor") else masks
                masks = masks.bool()
            elif "sem_seg" in x:
                sem_seg = x["sem_seg"].to(self.device)
                labels = torch.unique(sem_seg)
                labels = labels[labels != self.ignore_value].long()
                masks = sem_seg[None] == labels[:, None, None]
            else:
                raise KeyError(
                    f"MaskFormer training needs 'sem_seg' (or 'instances') in every input dict; got keys {sorted(x)}"
                )
            bad = (labels < 0) | (labels >= k)
            if bad.any():
                raise ValueError(
                    f"MaskFormer: ground-truth class {int(labels[bad][0])} outside 0..{k - 1} "
                    f"(MODEL.SEM_SEG_HEAD.NUM_CLASSES={k}) and not the ignore value {self.ignore_value}"
                    + (f" in {x['file_name']!r}" if "file_name" in x else "")
                )
            padded = torch.zeros(
                (labels.numel(), h_pad, w_pad), dtype=torch.bool, device=self.device
            )
            padded[:, : masks.shape[1], : masks.shape[2]] = masks
            targets.append({"labels": labels, "masks": padded})
        return targets

    # ------------------------------------------------------------------ inference
    def query_predictions(self, batched_inputs: List[Dict]) -> List[Dict[str, torch.Tensor]]:
        """Per image, what the class probabilities of inference are made of, before any temperature:
        "query_logits" (Q, K+1) and "mask_probs" (Q, H, W) at the output size (height x width).

        For fitting the class temperature (tools/fit_temperature.py): the network runs once, and every
        candidate T costs a (Q, K) x (Q, pixels) product. Inference's semantic scores at temperature T
        are sum_q softmax(query_logits[q] / T)[c] * mask_probs[q] (c < K) up to rounding: inference
        contracts the queries before resizing (unless SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE), and
        the crop and bilinear resize are linear, so they commute with the sum over queries.
        """
        if self.training:
            raise RuntimeError("MaskFormer.query_predictions is inference: call model.eval() first")
        images = self.preprocess_images(batched_inputs)
        outputs = self.sem_seg_head(self.backbone(images.tensor))
        mask_pred = self._masks_at_input_size(outputs, images)
        results = []
        for i, (x, image_size) in enumerate(zip(batched_inputs, images.image_sizes)):
            height, width = x.get("height", image_size[0]), x.get("width", image_size[1])
            masks = mask_pred[i]
            if self.sem_seg_postprocess_before_inference:
                probs = sem_seg_postprocess(masks, image_size, height, width).float().sigmoid()
            else:
                probs = sem_seg_postprocess(masks.float().sigmoid(), image_size, height, width)
            results.append({"query_logits": outputs["pred_logits"][i].float(), "mask_probs": probs})
        return results

    def _score_names(self, has_likelihood: bool, anomaly_map) -> list:
        """The table's scores (not fitted) to compute: every mask-classification score (`score_family`),
        else what the anomaly map needs (itself, or the bases of a fitted map)."""
        if self.score_family:
            weighted = ["rba_likelihood"] if self._can_weigh_queries(has_likelihood) else []
            return ["rba", "eam"] + (["query_likelihood"] + weighted if has_likelihood else [])
        if anomaly_map is None:
            return []
        return list(FITTED[anomaly_map].bases) if anomaly_map in FITTED else [anomaly_map]

    def _can_weigh_queries(self, has_likelihood: bool) -> bool:
        """ "rba_likelihood" needs the GMM head and the known-pixel fit of "query_likelihood"."""
        return has_likelihood and "query_likelihood" in self.anomaly_fit

    @staticmethod
    def _masks_at_input_size(outputs: Dict, images: ImageList) -> torch.Tensor:
        """The mask logits upsampled to the padded input (B, Q, H_pad, W_pad), as the release."""
        return F.interpolate(
            outputs["pred_masks"],
            size=images.tensor.shape[-2:],
            mode="bilinear",
            align_corners=False,
        )

    def inference(self, outputs: Dict, batched_inputs: List[Dict], images: ImageList) -> List[Dict]:
        mask_pred = self._masks_at_input_size(outputs, images)
        log_lik = outputs.get("pred_log_likelihood")
        results = []
        for i, (x, image_size) in enumerate(zip(batched_inputs, images.image_sizes)):
            height, width = x.get("height", image_size[0]), x.get("width", image_size[1])
            cls, masks = outputs["pred_logits"][i], mask_pred[i]
            if self.sem_seg_postprocess_before_inference:
                masks = sem_seg_postprocess(masks, image_size, height, width)
            has_lik = log_lik is not None
            kinds = ["logits", "mask_scores", "query_mass"] + (
                ["query_likelihood"] if has_lik else []
            )
            kinds += ["weighted_mask_scores"] if self._can_weigh_queries(has_lik) else []
            anomaly_map = default_map(kinds, self.configured_map)
            names = self._score_names(has_lik, anomaly_map)
            with_mass, with_lik = "eam" in names, "query_likelihood" in names
            with_weights = "rba_likelihood" in names
            weights = None
            if with_weights:  # lambda_q from each query's best known-class log-likelihood
                weights = query_likelihood_weights(
                    log_lik[i].float()[:, :-1].amax(-1), self.anomaly_fit
                )
            scores = _contract(
                cls,
                masks.float().sigmoid(),
                log_lik[i] if with_lik else None,
                self.class_temperature,
                query_mass=with_mass,
                query_weights=weights,
            )
            if not self.sem_seg_postprocess_before_inference:
                scores = sem_seg_postprocess(scores, image_size, height, width)
            k = cls.shape[-1] - 1
            ingredients = _ingredients(scores, k, with_lik, with_mass, with_weights)
            # resized as scores (as the release), then logged: argmax = the release's prediction
            out = {"sem_seg": scores[:k].clamp_min(SCORE_FLOOR).log()}
            ingredients["logits"] = out["sem_seg"]
            family = compute_scores(ingredients, names)
            if self.anomaly_fit and (self.score_family or anomaly_map in FITTED):
                wanted = None if self.score_family else [anomaly_map]
                family.update(fitted_scores(family, out["sem_seg"], self.anomaly_fit, wanted))
            if self.score_family:
                out["anomaly_scores"] = family
            if anomaly_map is not None:
                out["anomaly_score"] = family[anomaly_map]
            results.append(out)
        return results
