"""Reading a per-pixel head's internals during inference: forward hooks and the feature grid."""
import torch
import torch.nn.functional as F

__all__ = ["PredictorInputs", "labels_to_grid"]


class PredictorInputs:
    """Forward hooks on a PerPixelHead: the decoder's feature-map size (`shape`) and the
    predictor's input features (`x`, (h * w, C) for a batch of one) of the last forward."""

    def __init__(self, head):
        self.x, self.shape = None, None
        self._handles = [head.predictor.register_forward_hook(self._predictor),
                         head.decoder.register_forward_hook(self._decoder)]

    def _predictor(self, module, inputs, output):
        self.x = inputs[0].detach()

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
