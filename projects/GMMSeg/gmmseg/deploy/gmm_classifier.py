"""GMMClassifier: the inference-only form of a trained GMMPredictor, for export.

    embeddings (N, C_in) --projection--> --LayerNorm--> --L2 normalise--> e        (N, D)
    component log-likelihoods  e @ W: the packed Gaussians of gmm/likelihood.py  (N, K*M)
    class scores               max over the M components                          (N, K)   "log_likelihood"
    logits                     LayerNorm over the K classes                       (N, K)   "logits"

It holds the projection, the two LayerNorms and one (2D+1, K*M) float32 matrix: no memory bank,
no running statistics, no counters, no EM. The class LayerNorm is applied to the class scores
minus their mean over the classes (the same LayerNorm mathematically): the class scores are
large (tens of nats) and close to one another, and ONNX Runtime's LayerNormalization computes
the variance as E[x^2] - E[x]^2, which cancels to zero or below there (NaN logits, measured on
the demo model); centred, both runtimes agree to 1e-5.
"""
import torch
from torch import nn
from torch.nn import functional as F

from ..gmm import GMMPredictor
from ..gmm.likelihood import likelihood_weights

__all__ = ["GMMClassifier"]


class GMMClassifier(nn.Module):
    def __init__(self, projection: nn.Module, embed_norm: nn.LayerNorm, class_norm: nn.LayerNorm,
                 weights: torch.Tensor, num_classes: int, num_components: int):
        super().__init__()
        d = (weights.shape[0] - 1) // 2
        if weights.shape != (2 * d + 1, num_classes * num_components):
            raise ValueError(f"weights must be (2D+1, K*M) = (2D+1, {num_classes * num_components}), "
                             f"got {tuple(weights.shape)}")
        self.projection, self.embed_norm, self.class_norm = projection, embed_norm, class_norm
        self.register_buffer("weights", weights.float().contiguous())
        self.num_classes, self.num_components, self.embed_dim = num_classes, num_components, d

    @classmethod
    def from_predictor(cls, predictor: GMMPredictor) -> "GMMClassifier":
        """The inference-only copy of `predictor`'s current GMM (shares its projection and norms)."""
        k, m, d = predictor.means.shape
        with torch.no_grad():
            weights = likelihood_weights(predictor.means.reshape(k * m, d),
                                         predictor.current_stds().reshape(k * m, d))
        return cls(predictor.projection, predictor.embed_norm, predictor.class_norm, weights, k, m)

    def forward(self, x: torch.Tensor, labels: torch.Tensor = None):
        """x: (N, C_in) -> {"logits": (N, K), "log_likelihood": (N, K)}; labels must be None."""
        if labels is not None:
            raise RuntimeError("GMMClassifier is the inference-only (exported) form of a GMMPredictor: "
                               "it cannot train; train the model that holds the GMMPredictor")
        e = F.normalize(self.embed_norm(self.projection(x)), dim=-1)
        d = self.embed_dim
        log_lik = torch.addmm(self.weights[2 * d], e, self.weights[d:2 * d]) + (e * e) @ self.weights[:d]
        class_ll = log_lik.view(-1, self.num_classes, self.num_components).amax(-1)
        logits = self.class_norm(class_ll - class_ll.mean(-1, keepdim=True))
        return {"logits": logits, "log_likelihood": class_ll}

    def extra_repr(self):
        return f"classes={self.num_classes}, components={self.num_components}, dim={self.embed_dim}"
