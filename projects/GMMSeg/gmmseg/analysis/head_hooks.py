"""Reading a per-pixel head's internals during inference: the head itself, forward hooks and the
feature grid."""

import torch
import torch.nn.functional as F

from ..gmm import GMMPredictor

__all__ = ["gmm_head", "PredictorInputs", "labels_to_grid", "batch_anomaly_mask"]


def gmm_head(model, study: str):
    """The per-pixel head of `model` whose classifier is a GMMPredictor (`head.predictor`), for
    `study` (named in the error): the one way the studies reach a model's GMM. TypeError for any
    other model (a softmax twin, ProtoSeg, Mask2Former)."""
    head = getattr(model, "sem_seg_head", None)
    if not isinstance(getattr(head, "predictor", None), GMMPredictor):
        raise TypeError(
            f"{study} needs a per-pixel model with a GMM predictor (MODEL.SEM_SEG_HEAD.NAME PerPixelHead, "
            f"MODEL.PREDICTOR.NAME gmm), got {type(model).__name__} with "
            f"{type(getattr(head, 'predictor', None)).__name__ if head is not None else 'no sem_seg_head'}"
        )
    return head


class PredictorInputs:
    """Forward hooks on a PerPixelHead: the decoder's feature-map size (`shape`), the predictor's
    input features (`x`, (h * w, C) for a batch of one) and its output dict (`output`: "logits",
    and "log_likelihood" for a GMM) of the last forward."""

    def __init__(self, head):
        self.x, self.shape, self.output = None, None, None
        self._handles = [
            head.predictor.register_forward_hook(self._predictor),
            head.decoder.register_forward_hook(self._decoder),
        ]

    def _predictor(self, module, inputs, output):
        self.x = inputs[0].detach()
        self.output = {k: v.detach() for k, v in output.items() if isinstance(v, torch.Tensor)}

    def grid(self, key: str = "log_likelihood"):
        """The output `key` of the last forward on the feature grid: (h, w, K)."""
        return self.output[key].view(*self.shape, -1)

    def _decoder(self, module, inputs, output):
        self.shape = (output[0] if isinstance(output, tuple) else output).shape[-2:]

    def remove(self):
        for h in self._handles:
            h.remove()


def labels_to_grid(labels, grid, stride, fill):
    """(H, W) labels of the input image -> (h, w) at the feature grid of the padded input
    (nearest neighbour, as the head downsamples its training targets)."""
    h, w = grid
    padded = torch.full((h * stride, w * stride), fill, dtype=torch.long)
    hh, ww = min(labels.shape[0], h * stride), min(labels.shape[1], w * stride)
    padded[:hh, :ww] = labels[:hh, :ww]
    return F.interpolate(padded[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()


def batch_anomaly_mask(inputs: dict) -> torch.Tensor:
    """The (H, W) anomaly mask (1 anomaly, 0 known, 255 void) at the size of the model's input,
    as the test loader's mapper puts it in each batch (data/mapper.py)."""
    if "anomaly_mask" not in inputs:
        raise KeyError(
            f"{inputs.get('file_name', 'an input')}: the batch has no 'anomaly_mask' (use the test "
            f"loader of a dataset whose dicts have 'anomaly_mask_file_name', data/mapper.py)"
        )
    return inputs["anomaly_mask"]
