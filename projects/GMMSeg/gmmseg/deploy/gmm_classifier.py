"""GMMClassifier: the inference-only form of a trained GMMPredictor, for export.

    embeddings (N, C_in) --projection--> --LayerNorm--> --L2 normalise--> e        (N, D)
    component log-likelihoods  [e*e, e] @ W + b: the packed Gaussians of gmm/likelihood.py (N, M*K)
    class scores               max over the M components                          (N, K)   "log_likelihood"
    logits                     LayerNorm over the K classes                       (N, K)   "logits"

It holds the projection, the two LayerNorms, one (2D, M*K) float32 matrix and its bias row: no
memory bank, no running statistics, no counters, no EM. It computes what the GMMPredictor
computes, to float rounding, in fewer and cheaper operations (measured in
benchmarks/bench_export.py, docs/BENCHMARKS.md section 6):

- the projection's eval-mode batch norm (MODEL.GMM.PROJECTION conv_bn_relu) is folded into its
  linear layer (fold_projection): Linear with bias + ReLU instead of Linear, BatchNorm on (N, D, 1, 1)
  views and two copies back to rows in ONNX;
- the quadratic and the linear term of the log-likelihoods are one matrix product of [e*e, e]
  with the stacked (2D, M*K) matrix plus the bias row, not two products and an addition;
- the columns are component-major (column m*K + k is component m of class k), so the max over
  the components reduces over a middle axis of (N, M, K), which vectorises over the classes;
- the L2 normalisation divides by the clamped norm by broadcasting (F.normalize expands the
  norm to (N, D) first: an extra copy in ONNX).

The class LayerNorm is applied to the class scores minus their mean over the classes (the same
LayerNorm mathematically): the class scores are large (tens of nats) and close to one another,
and ONNX Runtime's LayerNormalization computes the variance as E[x^2] - E[x]^2, which cancels to
zero or below there (NaN logits, measured on the demo model); centred, both runtimes agree to 1e-5.
"""

from collections import OrderedDict

import torch
from detectron2.layers import FrozenBatchNorm2d
from torch import nn

from ..gmm import GMMPredictor
from ..gmm.likelihood import likelihood_weights
from ..modeling.predictors import _RowNorm

__all__ = ["GMMClassifier", "fold_projection", "fold_batch_norm"]

_NORM_EPS = 1e-12  # F.normalize's default


def _foldable(norm: nn.Module) -> bool:
    """Whether `norm` is a batch norm that normalises with stored statistics at inference."""
    if isinstance(norm, FrozenBatchNorm2d):
        return True
    return isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.running_mean is not None


def fold_batch_norm(linear: nn.Linear, norm: nn.Module) -> nn.Linear:
    """The Linear (with bias) that computes norm(linear(x)) with the norm's running statistics:
    weight * s and (bias - running_mean) * s + beta, s = gamma / sqrt(running_var + eps);
    computed in float64. `linear` may have no bias; `norm` no affine parameters."""
    if not _foldable(norm):
        raise TypeError(
            f"fold_batch_norm needs a batch norm with running statistics, got {type(norm).__name__}"
        )
    if norm.num_features != linear.out_features:
        raise ValueError(
            f"the norm has {norm.num_features} features, the linear layer {linear.out_features} outputs"
        )
    with torch.no_grad():
        var, mean = norm.running_var.double(), norm.running_mean.double()
        gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(var)
        beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(var)
        scale = gamma / (var + norm.eps).sqrt()
        bias = linear.bias.double() if linear.bias is not None else torch.zeros_like(var)
        folded = nn.Linear(linear.in_features, linear.out_features, device=linear.weight.device)
        folded.weight.copy_(linear.weight.double() * scale[:, None])
        folded.bias.copy_((bias - mean) * scale + beta)
    return folded


def fold_projection(projection: nn.Module) -> nn.Module:
    """`projection` with every Linear that is directly followed by a row batch norm (build_gmm_projection's
    conv_bn_relu) merged with it (fold_batch_norm); other projections are returned as they are."""
    if not isinstance(projection, nn.Sequential):
        return projection
    layers = list(projection.named_children())
    out, i = [], 0
    while i < len(layers):
        name, layer = layers[i]
        nxt = layers[i + 1][1] if i + 1 < len(layers) else None
        if isinstance(layer, nn.Linear) and isinstance(nxt, _RowNorm) and _foldable(nxt.norm):
            out.append((name, fold_batch_norm(layer, nxt.norm)))
            i += 2
        else:
            out.append((name, layer))
            i += 1
    if len(out) == len(layers):
        return projection
    return nn.Sequential(OrderedDict(out))


class GMMClassifier(nn.Module):
    """`weights`: the (2D+1, K*M) matrix of gmm.likelihood.likelihood_weights (columns class-major:
    column k*M + m is component m of class k); stored as the (2D, M*K) component-major matrix and
    its bias row."""

    def __init__(
        self,
        projection: nn.Module,
        embed_norm: nn.LayerNorm,
        class_norm: nn.LayerNorm,
        weights: torch.Tensor,
        num_classes: int,
        num_components: int,
    ):
        super().__init__()
        d = (weights.shape[0] - 1) // 2
        if weights.dim() != 2 or weights.shape != (2 * d + 1, num_classes * num_components):
            raise ValueError(
                f"weights must be (2D+1, K*M) = (2D+1, {num_classes * num_components}), got {tuple(weights.shape)}"
            )
        self.projection, self.embed_norm, self.class_norm = projection, embed_norm, class_norm
        component_major = (
            weights.float().reshape(2 * d + 1, num_classes, num_components).transpose(1, 2)
        )
        component_major = component_major.reshape(2 * d + 1, num_components * num_classes)
        self.register_buffer("weights", component_major[: 2 * d].contiguous())
        self.register_buffer("bias", component_major[2 * d].contiguous())
        self.num_classes, self.num_components, self.embed_dim = num_classes, num_components, d
        self.background = None  # gmm/background.py: adds "log_background" to the output

    @classmethod
    def from_predictor(cls, predictor: GMMPredictor) -> "GMMClassifier":
        """The inference-only copy of `predictor`'s current GMM (shares its norms; the projection
        too, unless its batch norm is folded into a new linear layer: fold_projection)."""
        k, m, d = predictor.means.shape
        with torch.no_grad():
            weights = likelihood_weights(
                predictor.means.reshape(k * m, d), predictor.current_stds().reshape(k * m, d)
            )
        out = cls(
            fold_projection(predictor.projection),
            predictor.embed_norm,
            predictor.class_norm,
            weights,
            k,
            m,
        )
        out.background = predictor.background  # the fitted background density, if any (shared)
        return out

    def forward(self, x: torch.Tensor, labels: torch.Tensor = None):
        """x: (N, C_in) -> {"logits": (N, K), "log_likelihood": (N, K)}; labels must be None."""
        if labels is not None:
            raise RuntimeError(
                "GMMClassifier is the inference-only (exported) form of a GMMPredictor: "
                "it cannot train; train the model that holds the GMMPredictor"
            )
        e = self.embed_norm(self.projection(x))
        e = e / torch.linalg.vector_norm(e, dim=-1, keepdim=True).clamp_min(_NORM_EPS)
        log_lik = torch.addmm(self.bias, torch.cat([e * e, e], dim=1), self.weights)
        class_ll = log_lik.view(-1, self.num_components, self.num_classes).amax(1)
        logits = self.class_norm(class_ll - class_ll.mean(-1, keepdim=True))
        out = {"logits": logits, "log_likelihood": class_ll}
        if self.background is not None:
            out["log_background"] = self.background(e)
        return out

    def extra_repr(self):
        return f"classes={self.num_classes}, components={self.num_components}, dim={self.embed_dim}"
