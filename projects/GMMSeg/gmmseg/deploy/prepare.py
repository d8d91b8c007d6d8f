"""Turn a trained model into its inference-only form before export (in place).

What goes: every GMMPredictor becomes a GMMClassifier (no memory bank, running statistics,
counters, EM), the auxiliary FCN head of a per-pixel model and Mask2Former's set criterion
(training only) are removed, and adaptive average pools to sizes other than 1x1 (UPerNet's
pyramid pooling) become MatrixAdaptiveAvgPool2d, which traces with a dynamic input size. What
stays: the backbone, the decoder, the projection and norms of the GMM, or the softmax twin's
linear layer.

Per-pixel models (PerPixelSegmentor, any decoder) trace with a dynamic height and width.
Mask2Former traces for one input size only: its multi-scale deformable attention (pure PyTorch)
computes the level shapes, reference points and split sizes with Python integers, which tracing
records as constants (docs/MASK2FORMER.md, "Export").
"""

from typing import Dict

from torch import nn

from ..gmm import GMMPredictor, em_modules
from ..modeling.mask_former import MaskFormer
from ..modeling.sem_seg import PerPixelSegmentor
from .adaptive_pool import MatrixAdaptiveAvgPool2d
from .gmm_classifier import GMMClassifier

__all__ = ["prepare_for_export", "state_bytes", "has_dynamic_input_size"]


def state_bytes(module: nn.Module) -> int:
    """Bytes of all parameters and buffers of `module` (what a checkpoint of it stores)."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def has_dynamic_input_size(model: nn.Module) -> bool:
    """Whether the traced `model` runs on any input size (False: only the size it was traced at)."""
    return not isinstance(model, MaskFormer)


def _traceable(module: nn.Module):
    """The export form of `module`, or None to keep it."""
    if isinstance(module, GMMPredictor):
        return GMMClassifier.from_predictor(module)
    if isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size not in (1, (1, 1)):
        return MatrixAdaptiveAvgPool2d(module.output_size)
    return None


def _replace_modules(model: nn.Module) -> None:
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = _traceable(child)
            if new is not None:
                setattr(parent, name, new)


def prepare_for_export(model: nn.Module) -> Dict[str, int]:
    """Make `model` (PerPixelSegmentor or MaskFormer) inference-only, in place, in eval mode.

    Returns {"before": bytes, "after": bytes} of its state (parameters + buffers). Raises for what
    the exported module cannot reproduce: another meta-architecture, sliding-window inference,
    a predictor other than softmax / gmm.
    """
    if not isinstance(model, (PerPixelSegmentor, MaskFormer)):
        raise TypeError(
            f"MODEL.META_ARCHITECTURE {type(model).__name__}: export supports PerPixelSegmentor (any "
            "decoder of configs/, softmax or gmm predictor) and MaskFormer"
        )
    if getattr(model, "sliding_window", None) is not None:
        raise ValueError(
            "TEST.SLIDING_WINDOW.ENABLED is True but the exported model runs one forward on the whole "
            "image it is given: add `TEST.SLIDING_WINDOW.ENABLED False` to export it (and feed it "
            f"windows of TEST.SLIDING_WINDOW.SIZE {list(model.sliding_window[0])} yourself if the "
            "images are larger than the training crops)"
        )
    before = state_bytes(model)
    _replace_modules(model)
    learners = [type(m).__name__ for m in em_modules(model)]  # what GMMClassifier did not replace
    if learners:
        raise ValueError(
            f"MODEL.PREDICTOR.NAME: export supports 'softmax' and 'gmm', this model's predictor is {learners[0]}"
        )
    if isinstance(model, PerPixelSegmentor):
        model.sem_seg_head.aux_head = None
    else:
        model.criterion = None
    model.score_family = (
        False  # the file returns the anomaly map (MODEL.ANOMALY_SCORE), not every score
    )
    model.eval()
    return {"before": before, "after": state_bytes(model)}
