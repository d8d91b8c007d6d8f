"""The model-zoo decoders, built with plain arguments: output shapes, strides, gradients, and the
per-pixel head's auxiliary losses (OCR's coarse classifier, the auxiliary FCN head)."""

import pytest
import torch
from detectron2.layers import ShapeSpec

from gmmseg.modeling.predictors import SoftmaxPredictor
from gmmseg.modeling.sem_seg import (
    DECODER_REGISTRY,
    AuxiliaryFCNHead,
    FCNDecoder,
    OCRDecoder,
    PerPixelHead,
    SegFormerMLPDecoder,
    UPerNetDecoder,
)

PYRAMID = {
    "res2": ShapeSpec(channels=8, stride=4),
    "res3": ShapeSpec(channels=16, stride=8),
    "res4": ShapeSpec(channels=24, stride=16),
    "res5": ShapeSpec(channels=32, stride=32),
}


def _features(shapes, size=64, batch=2):
    return {
        k: torch.randn(batch, s.channels, size // s.stride, size // s.stride, requires_grad=True)
        for k, s in shapes.items()
    }


def test_registered():
    for name in (
        "FCNDecoder",
        "OCRDecoder",
        "UPerNetDecoder",
        "SegFormerMLPDecoder",
        "FPNDecoder",
        "DeepLabV3PlusDecoder",
    ):
        assert name in DECODER_REGISTRY


@pytest.mark.parametrize("concat_input,num_convs", [(True, 2), (False, 1), (False, 0)])
def test_fcn_shapes(concat_input, num_convs):
    shape = {"res5": ShapeSpec(channels=16 if num_convs else 12, stride=8)}
    dec = FCNDecoder(
        shape, conv_dims=12, num_convs=num_convs, concat_input=concat_input, norm="BN", dropout=0.1
    )
    out = dec(_features(shape))
    assert out.shape == (2, 12, 8, 8)
    assert (dec.out_channels, dec.common_stride) == (12, 8)


def test_fcn_rejects_several_inputs():
    with pytest.raises(ValueError, match="one input"):
        FCNDecoder(PYRAMID, conv_dims=8)


def test_ocr_shapes_and_aux_logits():
    dec = OCRDecoder(
        PYRAMID, num_classes=5, conv_dims=16, key_channels=8, norm="BN", aux_loss_weight=0.4
    )
    feats = _features(PYRAMID)
    out, aux = dec(feats)
    assert out.shape == (2, 16, 16, 16)
    assert aux["ocr_aux"].shape == (2, 5, 16, 16)
    assert dec.aux_loss_weights == {"ocr_aux": 0.4}
    assert (dec.out_channels, dec.common_stride) == (16, 4)
    (out.sum() + aux["ocr_aux"].sum()).backward()
    assert all(f.grad is not None for f in feats.values())  # every branch reaches the output


def test_ocr_context_depends_on_regions():
    dec = OCRDecoder(PYRAMID, num_classes=3, conv_dims=8, key_channels=4).eval()
    feats = _features(PYRAMID, batch=1)
    x = torch.randn(1, 8, 16, 16)
    r1, r2 = torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16, 16)
    assert not torch.allclose(dec.object_context(x, r1), dec.object_context(x, r2))
    assert dec(feats)[0].shape == (1, 8, 16, 16)


def test_upernet_shapes():
    dec = UPerNetDecoder(PYRAMID, conv_dims=16, pool_scales=(1, 2, 3, 6), norm="BN", dropout=0.1)
    feats = _features(PYRAMID)
    out = dec(feats)
    assert out.shape == (2, 16, 16, 16)
    assert (dec.out_channels, dec.common_stride) == (16, 4)
    out.sum().backward()
    assert all(f.grad is not None for f in feats.values())


def test_upernet_orders_inputs_by_stride():
    shuffled = {k: PYRAMID[k] for k in ("res5", "res3", "res2", "res4")}
    dec = UPerNetDecoder(shuffled, conv_dims=32, norm="GN")
    assert dec.in_features == ["res2", "res3", "res4", "res5"]
    assert dec(_features(shuffled)).shape == (2, 32, 16, 16)


def test_segformer_mlp_shapes():
    dec = SegFormerMLPDecoder(PYRAMID, conv_dims=12, norm="BN", dropout=0.1)
    feats = _features(PYRAMID, size=96)
    out = dec(feats)
    assert out.shape == (2, 12, 24, 24)
    assert (dec.out_channels, dec.common_stride) == (12, 4)
    out.sum().backward()
    assert all(f.grad is not None for f in feats.values())


@pytest.mark.parametrize("norm", ["GN", ""])
def test_segformer_mlp_equals_concat_then_fuse(norm):
    """The decoder sums per-stage composed convs after upsampling instead of concatenating (SegFormer's
    concat-then-fuse form, `forward_concat`, written out plainly in the module): the same
    values and the same gradients for every parameter (float64), also with the fuse conv's bias
    (no norm) and with stage maps whose size is not a multiple of the finest one."""
    torch.manual_seed(0)
    dec = SegFormerMLPDecoder(PYRAMID, conv_dims=32, norm=norm).double()
    for layer in dec.linear:  # non-zero biases, so that a misplaced bias is seen
        torch.nn.init.normal_(layer.bias)
    if dec.fuse.bias is not None:
        torch.nn.init.normal_(dec.fuse.bias)
    feats = {k: v.double() for k, v in _features(PYRAMID, size=72).items()}
    ref = dec.forward_concat(feats)
    g = torch.randn_like(ref)
    grads_ref = torch.autograd.grad((ref * g).sum(), list(dec.parameters()))
    out = dec(feats)
    grads = torch.autograd.grad((out * g).sum(), list(dec.parameters()))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def _head(decoder, aux_head=None, k=5):
    return PerPixelHead(
        decoder=decoder,
        predictor=SoftmaxPredictor(decoder.out_channels, k),
        num_classes=k,
        aux_head=aux_head,
    )


def _targets(k=5, size=64):
    t = torch.randint(0, k, (2, size, size))
    t[:, :4] = 255
    return t


def test_head_adds_ocr_aux_loss_in_training_only():
    head = _head(
        OCRDecoder(PYRAMID, num_classes=5, conv_dims=8, key_channels=4, aux_loss_weight=0.4)
    )
    feats = _features(PYRAMID)
    _, losses = head(feats, _targets())
    assert set(losses) == {"loss_sem_seg", "loss_ocr_aux"}
    assert torch.isfinite(losses["loss_ocr_aux"]) and losses["loss_ocr_aux"] > 0
    head.eval()
    results, losses = head(feats)
    assert losses == {} and results["sem_seg"].shape == (2, 5, 64, 64)


def test_head_with_auxiliary_fcn_head():
    aux = AuxiliaryFCNHead("res4", 24, 16, num_classes=5, conv_dims=8, loss_weight=0.4)
    head = _head(UPerNetDecoder(PYRAMID, conv_dims=8), aux_head=aux)
    feats = _features(PYRAMID)
    _, losses = head(feats, _targets())
    assert set(losses) == {"loss_sem_seg", "loss_aux"}
    sum(losses.values()).backward()
    assert aux.classifier.weight.grad is not None
    head.eval()
    results, _ = head(feats)
    assert results["sem_seg"].shape == (2, 5, 64, 64)


def test_auxiliary_head_weight_scales_loss():
    torch.manual_seed(0)
    feats = _features(PYRAMID)
    targets = _targets()
    aux = AuxiliaryFCNHead("res4", 24, 16, num_classes=5, conv_dims=8, loss_weight=1.0, dropout=0.0)
    head = _head(FCNDecoder({"res5": PYRAMID["res5"]}, conv_dims=8), aux_head=aux)
    l1 = head(feats, targets)[1]["loss_aux"]
    aux.loss_weight = 0.25
    l2 = head(feats, targets)[1]["loss_aux"]
    assert torch.allclose(l2, 0.25 * l1)
