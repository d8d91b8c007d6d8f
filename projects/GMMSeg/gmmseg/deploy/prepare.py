"""Turn a trained per-pixel model into its inference-only form before export (in place).

What goes: every GMMPredictor becomes a GMMClassifier (no memory bank, running statistics,
counters, EM), the auxiliary FCN head (training only) is removed. What stays: the backbone,
the decoder, the projection and norms of the GMM, or the softmax twin's linear layer.
"""
from typing import Dict

from torch import nn

from ..gmm import GMMPredictor
from ..modeling.predictors import SoftmaxPredictor
from ..modeling.sem_seg import PerPixelSegmentor
from .gmm_classifier import GMMClassifier

__all__ = ["prepare_for_export", "state_bytes"]


def state_bytes(module: nn.Module) -> int:
    """Bytes of all parameters and buffers of `module` (what a checkpoint of it stores)."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def prepare_for_export(model: nn.Module) -> Dict[str, int]:
    """Make `model` (a PerPixelSegmentor) inference-only, in place, and put it in eval mode.

    Returns {"before": bytes, "after": bytes} of its state (parameters + buffers). Raises for what
    the exported module cannot reproduce: another meta-architecture, sliding-window inference,
    a predictor other than softmax / gmm.
    """
    if not isinstance(model, PerPixelSegmentor):
        raise TypeError(f"MODEL.META_ARCHITECTURE {type(model).__name__}: export supports the per-pixel models "
                        "(PerPixelSegmentor: any decoder of configs/, softmax or gmm predictor); Mask2Former's "
                        "status is in docs/MASK2FORMER.md")
    if model.sliding_window is not None:
        raise ValueError("TEST.SLIDING_WINDOW.ENABLED is True but the exported model runs one forward on the whole "
                         "image it is given: add `TEST.SLIDING_WINDOW.ENABLED False` to export it (and feed it "
                         f"windows of TEST.SLIDING_WINDOW.SIZE {list(model.sliding_window[0])} yourself if the "
                         "images are larger than the training crops)")
    before = state_bytes(model)
    head = model.sem_seg_head
    predictor = head.predictor
    if isinstance(predictor, GMMPredictor):
        head.predictor = GMMClassifier.from_predictor(predictor)
    elif not isinstance(predictor, (SoftmaxPredictor, GMMClassifier)):
        raise ValueError(f"MODEL.PREDICTOR.NAME: export supports 'softmax' and 'gmm', this model's predictor is "
                         f"{type(predictor).__name__}")
    head.aux_head = None
    model.eval()
    return {"before": before, "after": state_bytes(model)}
