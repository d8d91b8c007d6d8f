"""The export form of the GMM (gmmseg/deploy/gmm_classifier.py): the projection's batch norm
folded into its linear layer, one stacked matrix product, component-major columns. It must
compute what the GMMPredictor computes, to float rounding."""

import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d
from torch import nn

from gmmseg.deploy import GMMClassifier
from gmmseg.deploy.gmm_classifier import fold_batch_norm, fold_projection
from gmmseg.gmm import GMMPredictor
from gmmseg.modeling.predictors import build_gmm_projection


def _hand_case(linear_bias):
    """Linear [[1, 2], [3, -1]] then BN: mean [1, -2], var [3, 8], eps 1 (std sqrt(var + eps) = [2, 3]),
    gamma [4, 6], beta [0.5, -1]: scale gamma / std = [2, 2]."""
    linear = nn.Linear(2, 2, bias=linear_bias)
    norm = nn.BatchNorm2d(2, eps=1.0).eval()
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, -1.0]]))
        if linear_bias:
            linear.bias.copy_(torch.tensor([1.0, 1.0]))
        norm.running_mean.copy_(torch.tensor([1.0, -2.0]))
        norm.running_var.copy_(torch.tensor([3.0, 8.0]))
        norm.weight.copy_(torch.tensor([4.0, 6.0]))
        norm.bias.copy_(torch.tensor([0.5, -1.0]))
    return linear, norm


@pytest.mark.parametrize("linear_bias, bias", [(False, [-1.5, 3.0]), (True, [0.5, 5.0])])
def test_fold_batch_norm_by_hand(linear_bias, bias):
    # weight * [2, 2] per row; bias (b - mean) * 2 + beta = (0 - 1) * 2 + 0.5, (0 + 2) * 2 - 1 (no linear
    # bias) or (1 - 1) * 2 + 0.5, (1 + 2) * 2 - 1 (linear bias [1, 1]). x = [1, 1] -> linear [3, 2] or
    # [4, 3] -> BN (3 - 1) / 2 * 4 + 0.5 = 4.5, (2 + 2) / 3 * 6 - 1 = 7, or 6.5, 9.
    linear, norm = _hand_case(linear_bias)
    folded = fold_batch_norm(linear, norm)
    torch.testing.assert_close(folded.weight, torch.tensor([[2.0, 4.0], [6.0, -2.0]]))
    torch.testing.assert_close(folded.bias, torch.tensor(bias))
    expected = [4.5, 7.0] if not linear_bias else [6.5, 9.0]
    with torch.no_grad():
        torch.testing.assert_close(folded(torch.ones(1, 2)), torch.tensor([expected]))
        x = torch.randn(20, 2)
        torch.testing.assert_close(folded(x), norm(linear(x)[:, :, None, None])[:, :, 0, 0])


def test_fold_batch_norm_frozen_and_without_affine():
    linear, norm = _hand_case(False)
    frozen = FrozenBatchNorm2d(2, eps=1.0)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(frozen, name).copy_(getattr(norm, name).detach())
    torch.testing.assert_close(fold_batch_norm(linear, frozen).bias, torch.tensor([-1.5, 3.0]))
    plain = nn.BatchNorm2d(2, eps=1.0, affine=False).eval()
    plain.running_mean.copy_(norm.running_mean)
    plain.running_var.copy_(norm.running_var)
    folded = fold_batch_norm(linear, plain)  # scale 1 / [2, 3], bias -mean * scale
    torch.testing.assert_close(folded.weight, torch.tensor([[0.5, 1.0], [1.0, -1 / 3]]))
    torch.testing.assert_close(folded.bias, torch.tensor([-0.5, 2 / 3]))


def test_fold_names_what_it_cannot_fold():
    linear, _ = _hand_case(False)
    with pytest.raises(TypeError, match="GroupNorm"):
        fold_batch_norm(linear, nn.GroupNorm(1, 2))
    with pytest.raises(
        TypeError, match="BatchNorm2d"
    ):  # no running statistics: batch statistics at inference
        fold_batch_norm(linear, nn.BatchNorm2d(2, track_running_stats=False))
    with pytest.raises(ValueError, match="3 features.*2 outputs"):
        fold_batch_norm(linear, nn.BatchNorm2d(3))


def _predictor(norm, seed=0, k=4, m=3, d=32, c=16):
    """A GMMPredictor with a conv + `norm` + ReLU projection whose norm has moved statistics
    (eps 0.5: folding with sqrt(var) instead of sqrt(var + eps) shows) and trained-like stds."""
    torch.manual_seed(seed)
    pred = GMMPredictor(
        c,
        k,
        embed_dim=d,
        num_components=m,
        memory_size=50,
        projection=build_gmm_projection("conv_bn_relu", norm, c, d),
    ).eval()
    with torch.no_grad():
        pred.stds.copy_(0.05 + 0.4 * torch.rand(pred.stds.shape))
        layer = pred.projection.norm.norm if hasattr(pred.projection, "norm") else None
        if isinstance(layer, nn.BatchNorm2d):
            layer.eps = 0.5
            layer.running_mean.normal_()
            layer.running_var.uniform_(0.2, 3.0)
            layer.weight.normal_(1.0, 0.5)
            layer.bias.normal_(0.0, 0.5)
    return pred


@pytest.mark.parametrize("norm", ["BN", "naiveSyncBN"])
def test_folded_classifier_is_the_predictor(norm):
    pred = _predictor(norm)
    clf = GMMClassifier.from_predictor(pred)
    assert [type(m).__name__ for m in clf.projection] == ["Linear", "ReLU"]  # the norm was folded
    assert not [n for n, _ in clf.named_buffers() if "running" in n]
    x = torch.randn(400, 16)
    with torch.no_grad():
        a, b = pred(x), clf(x)
    # class scores of tens of nats: float32 rounding of two different summation orders
    assert a["log_likelihood"].abs().max() > 10
    torch.testing.assert_close(b["log_likelihood"], a["log_likelihood"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b["logits"], a["logits"], rtol=1e-5, atol=1e-5)
    assert torch.equal(b["logits"].argmax(1), a["logits"].argmax(1))


def test_unfoldable_projections_are_kept():
    pred = _predictor("GN")
    assert fold_projection(pred.projection) is pred.projection
    clf = GMMClassifier.from_predictor(pred)
    x = torch.randn(300, 16)
    with torch.no_grad():
        a, b = pred(x), clf(x)
    torch.testing.assert_close(b["log_likelihood"], a["log_likelihood"], rtol=1e-5, atol=1e-5)
    linear = nn.Linear(4, 2)
    assert fold_projection(linear) is linear


def test_columns_are_component_major():
    # K = 2 classes, M = 3 components, D = 1: the constant row alone decides; class k's score is the
    # max over its own components k*M .. k*M + M - 1 of the (class-major) input matrix
    weights = torch.zeros(3, 6)
    weights[2] = torch.tensor([1.0, 7.0, 2.0, -5.0, -1.0, -3.0])
    clf = GMMClassifier(nn.Identity(), nn.Identity(), nn.LayerNorm(2), weights, 2, 3)
    torch.testing.assert_close(clf.bias, torch.tensor([1.0, -5.0, 7.0, -1.0, 2.0, -3.0]))
    with torch.no_grad():
        out = clf(torch.ones(4, 1))
    torch.testing.assert_close(out["log_likelihood"], torch.tensor([[7.0, -1.0]]).expand(4, 2))


def test_classifier_names_a_bad_weight_matrix():
    with pytest.raises(ValueError, match=r"\(2D\+1, 12\), got \(16, 12\)"):
        GMMClassifier(nn.Identity(), nn.LayerNorm(8), nn.LayerNorm(4), torch.zeros(16, 12), 4, 3)
