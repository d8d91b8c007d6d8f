"""PerPixelSegmentor: detectron2's SemanticSegmentor that also returns the anomaly score maps and
can infer by sliding window (TEST.SLIDING_WINDOW.*, for Cityscapes-size images)."""

from collections import OrderedDict

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList
from torch.nn import functional as F

from ...gmm.background import BackgroundDensity
from ...scores import fitted_scores
from ...scores.fit import load_fit
from ..memory_format import use_channels_last
from ..sliding_window import sliding_window_inference

__all__ = ["PerPixelSegmentor"]


@META_ARCH_REGISTRY.register()
class PerPixelSegmentor(SemanticSegmentor):
    """Same inputs and training outputs as SemanticSegmentor; inference returns, per image,
    {"sem_seg": (K, H, W) logits}, and when the head computes anomaly scores (gmmseg/scores: a GMM
    or ProtoSeg predictor, or MODEL.ANOMALY_SCORE set) {"anomaly_scores": {name: (H, W)}} and the
    model's anomaly map {"anomaly_score": (H, W)} (one of them: MODEL.ANOMALY_SCORE, or the model's
    default), all resized to the requested output size. With `score_family` False (export) only
    "anomaly_score" is returned.
    """

    score_family = True

    @configurable
    def __init__(self, *, sliding_window=None, channels_last=False, anomaly_fit=None, **kwargs):
        super().__init__(**kwargs)
        self.sliding_window = sliding_window  # None or (window (h, w), stride (h, w))
        fit = anomaly_fit or {}
        self.anomaly_fit = fit.get(
            "scores", {}
        )  # known-pixel statistics of the fitted scores (MODEL.ANOMALY_FIT)
        predictor = getattr(self.sem_seg_head, "predictor", None)
        if fit.get("background") and hasattr(
            predictor, "background"
        ):  # a GMM head: likelihood_ratio
            predictor.background = BackgroundDensity.from_dict(fit["background"])
        if channels_last:
            use_channels_last(self)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        sw = cfg.TEST.SLIDING_WINDOW
        ret["sliding_window"] = (tuple(sw.SIZE), tuple(sw.STRIDE)) if sw.ENABLED else None
        ret["channels_last"] = cfg.MODEL.CHANNELS_LAST
        if cfg.MODEL.ANOMALY_FIT:
            ret["anomaly_fit"] = load_fit(cfg.MODEL.ANOMALY_FIT, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
        return ret

    def _infer(self, images: torch.Tensor):
        """images: normalised (B, 3, H, W) padded to the backbone's size divisibility."""
        results, _ = self.sem_seg_head(self.backbone(images))
        return results

    def _infer_window(self, crop: torch.Tensor):
        # pad each window to the size divisibility, infer, crop back
        h, w = crop.shape[-2:]
        d = max(self.backbone.size_divisibility, 1)
        padded = F.pad(crop, (0, -w % d, 0, -h % d))
        results = self._infer(padded)
        out = {"logits": results["sem_seg"][..., :h, :w]}
        if "anomaly_scores" in results:
            out["anomaly"] = results["anomaly_scores"][..., :h, :w]
        return out

    def forward(self, batched_inputs):
        if self.training:
            return super().forward(batched_inputs)
        images = [
            (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs
        ]
        outputs = []
        if self.sliding_window is not None:
            for x, inp in zip(images, batched_inputs):
                res = sliding_window_inference(
                    self._infer_window,
                    x[None],
                    *self.sliding_window,
                    num_classes=self.sem_seg_head.num_classes,
                )
                outputs.append(
                    self._postprocess(res["logits"][0], res.get("anomaly"), x.shape[-2:], inp)
                )
            return outputs
        images = ImageList.from_tensors(
            images,
            self.backbone.size_divisibility,
            padding_constraints=self.backbone.padding_constraints,
        )
        results = self._infer(images.tensor)
        for i, (inp, size) in enumerate(zip(batched_inputs, images.image_sizes)):
            score = results["anomaly_scores"][i] if "anomaly_scores" in results else None
            outputs.append(self._postprocess(results["sem_seg"][i], score, size, inp))
        return outputs

    def _postprocess(self, logits, scores, image_size, inp):
        """Crop the padding off (K, H, W) logits and (S, H, W) scores; resize both to the input's
        "height" and "width" when it asks for an output size (detectron2's sem_seg_postprocess).
        Without one the output is at the image's size: the crop alone, no bilinear resize to
        the same size (an exact copy, but ~5 % of a whole FPN R-18 inference on the CPU, eager
        and TorchScript; also what an exported model records, docs/BENCHMARKS.md section 6)."""
        if scores is not None and scores.dim() == 4:  # (1, S, H, W) from the sliding window
            scores = scores[0]
        if "height" not in inp and "width" not in inp:
            logits = logits[:, : image_size[0], : image_size[1]]
            scores = None if scores is None else scores[:, : image_size[0], : image_size[1]]
        else:
            height, width = inp.get("height", image_size[0]), inp.get("width", image_size[1])
            logits = sem_seg_postprocess(logits, image_size, height, width)
            scores = (
                None if scores is None else sem_seg_postprocess(scores, image_size, height, width)
            )
        out = {"sem_seg": logits}
        if scores is None and not self.anomaly_fit:
            return out
        named = OrderedDict(
            zip(self.sem_seg_head.anomaly_score_names, () if scores is None else scores)
        )
        if self.anomaly_fit:  # the fitted scores, from the maps above and the logits at this size
            wanted = None if self.score_family else [self.sem_seg_head.anomaly_map]
            if wanted is None or wanted[0] not in named:
                named.update(fitted_scores(named, logits, self.anomaly_fit, wanted))
        if self.score_family:
            out["anomaly_scores"] = named
        if self.sem_seg_head.anomaly_map is not None:
            out["anomaly_score"] = named[self.sem_seg_head.anomaly_map]
        return out
