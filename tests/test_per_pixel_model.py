"""The per-pixel model built from a config: training losses, inference outputs, sliding window,
registry errors that list what is registered."""

import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from gmmseg import add_gmmseg_config


def _cfg(predictor="gmm", **overrides):
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.merge_from_file("configs/demo/fpn_r18_gmm.yaml")
    cfg.MODEL.PREDICTOR.NAME = predictor
    cfg.MODEL.GMM.MEMORY_SIZE = 50
    for k, v in overrides.items():
        cfg.merge_from_list([k, v])
    return cfg


def _batch(n=2, h=64, w=96):
    return [
        {
            "image": torch.randint(0, 255, (3, h, w)).float(),
            "sem_seg": torch.randint(0, 6, (h, w)),
            "height": h,
            "width": w,
        }
        for _ in range(n)
    ]


@pytest.mark.parametrize("predictor", ["gmm", "softmax"])
def test_train_losses_and_inference_outputs(predictor):
    model = build_model(_cfg(predictor))
    losses = model(_batch())
    expected = {"loss_sem_seg"} | ({"loss_gmm_aux"} if predictor == "gmm" else set())
    assert set(losses) == expected and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model(_batch(1, 50, 70))[0]
    assert out["sem_seg"].shape == (6, 50, 70)
    assert ("anomaly_score" in out) == (predictor == "gmm")
    if predictor == "gmm":
        assert list(out["anomaly_scores"]) == ["likelihood", "marginal"]
        assert out["anomaly_score"].shape == (50, 70)
        assert out["anomaly_score"] is out["anomaly_scores"]["likelihood"]  # the default map
        # log p(x) = logsumexp over the K M Gaussians - log(K M) <= their max = max_c log p(x|c), so the
        # marginal score is never below the likelihood score (bilinear upsampling keeps the order)
        assert bool((out["anomaly_scores"]["marginal"] >= out["anomaly_score"] - 1e-4).all())


@pytest.mark.parametrize("predictor", ["gmm", "softmax"])
def test_outputs_without_a_requested_size_are_the_resized_ones(predictor):
    # 50 x 70 is padded to 64 x 96; without "height" / "width" the outputs are only cropped (no
    # resize to the same size): the same values as detectron2's sem_seg_postprocess to 50 x 70
    model = build_model(_cfg(predictor)).eval()
    sized = _batch(2, 50, 70)
    plain = [{"image": d["image"]} for d in sized]
    with torch.no_grad():
        want, got = model(sized), model(plain)
    for a, b in zip(want, got):
        assert sorted(a) == sorted(b)
        for key in a:
            if key == "anomaly_scores":
                assert list(a[key]) == list(b[key])
                assert all(torch.equal(a[key][n], b[key][n]) for n in a[key])
            else:
                assert b[key].shape == a[key].shape and torch.equal(b[key], a[key]), key


def test_the_anomaly_map_is_chosen_by_name():
    # a softmax-family score as the map of a GMM model, and as the map of a softmax model
    for predictor, name in (("gmm", "energy"), ("softmax", "max_logit")):
        model = build_model(_cfg(predictor, **{"MODEL.ANOMALY_SCORE": name})).eval()
        with torch.no_grad():
            out = model(_batch(1, 50, 70))[0]
        scores = out["anomaly_scores"]
        assert list(scores)[-1] == name and out["anomaly_score"] is scores[name]
        logits = out["sem_seg"]
        # computed at the feature grid then upsampled: close to, not equal to, the full-size value
        want = -torch.logsumexp(logits, 0) if name == "energy" else -logits.amax(0)
        assert (
            float((out["anomaly_score"] - want).abs().mean())
            < 0.2 * float(want.abs().mean()) + 1e-3
        )
    with pytest.raises(ValueError, match="MODEL.ANOMALY_SCORE is 'gmm'; the anomaly scores are"):
        build_model(_cfg("gmm", **{"MODEL.ANOMALY_SCORE": "gmm"}))
    model = build_model(_cfg("softmax", **{"MODEL.ANOMALY_SCORE": "likelihood"})).eval()
    with pytest.raises(ValueError, match=r"'likelihood', which needs \['log_likelihood'\]"):
        with torch.no_grad():
            model(_batch(1, 50, 70))


@pytest.mark.parametrize("predictor", ["gmm", "softmax"])
def test_all_void_batch_gives_finite_zero_loss_and_zero_gradients(predictor):
    model = build_model(_cfg(predictor))
    batch = _batch()
    for d in batch:
        d["sem_seg"][:] = 255
    losses = model(batch)
    assert losses["loss_sem_seg"].item() == 0.0
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_sliding_window_matches_whole_image_shape_and_is_close():
    model = build_model(_cfg()).eval()
    slide = build_model(
        _cfg(
            **{
                "TEST.SLIDING_WINDOW.ENABLED": "True",
                "TEST.SLIDING_WINDOW.SIZE": "(64, 64)",
                "TEST.SLIDING_WINDOW.STRIDE": "(32, 32)",
            }
        )
    ).eval()
    slide.load_state_dict(model.state_dict())
    batch = _batch(1, 64, 128)
    with torch.no_grad():
        a, b = model(batch)[0], slide(batch)[0]
    assert a["sem_seg"].shape == b["sem_seg"].shape and b["anomaly_score"].shape == (64, 128)
    # a window equal to the image is the whole-image inference
    one = build_model(
        _cfg(
            **{
                "TEST.SLIDING_WINDOW.ENABLED": "True",
                "TEST.SLIDING_WINDOW.SIZE": "(64, 128)",
                "TEST.SLIDING_WINDOW.STRIDE": "(64, 128)",
            }
        )
    ).eval()
    one.load_state_dict(model.state_dict())
    with torch.no_grad():
        c = one(batch)[0]
    assert torch.allclose(a["sem_seg"], c["sem_seg"], atol=1e-4)


@pytest.mark.parametrize(
    "key,value,listed",
    [
        ("MODEL.PREDICTOR.NAME", "nope", "softmax"),
        ("MODEL.SEM_SEG_HEAD.DECODER", "nope", "FPNDecoder"),
    ],
)
def test_unknown_component_lists_registered(key, value, listed):
    with pytest.raises(KeyError, match=listed):
        build_model(_cfg(**{key: value}))


class _Passthrough(torch.nn.Module):
    """A decoder that hands the backbone's "x" on unchanged (stride 1)."""

    common_stride, out_channels = 1, 4

    def forward(self, features):
        return features["x"]


def _hand_head(loss_normalization="all_pixels"):
    from gmmseg.gmm import GMMPredictor
    from gmmseg.modeling.sem_seg import PerPixelHead

    predictor = GMMPredictor(
        4,
        2,
        embed_dim=4,
        num_components=1,
        memory_size=10,
        memory_init="empty",
        projection=torch.nn.Identity(),
    )
    with torch.no_grad():
        predictor.means[0, 0] = torch.tensor([0.5, -0.5, 0.5, -0.5])
        predictor.means[1, 0] = torch.tensor([0.5, 0.5, -0.5, -0.5])
        predictor.stds.fill_(1.0)
    return PerPixelHead(
        decoder=_Passthrough(),
        predictor=predictor,
        num_classes=2,
        loss_normalization=loss_normalization,
    )


def test_anomaly_map_is_minus_the_best_class_log_likelihood():
    head = _hand_head().eval()
    # pixel A sits on class 0's mean; pixel B at its opposite, sqrt(2) from class 1's mean
    x = torch.tensor([[1.0, -1.0, 1.0, -1.0], [-1.0, 1.0, -1.0, 1.0]]).T.reshape(1, 4, 1, 2)
    out, _ = head({"x": x})
    base = 2 * math.log(2 * math.pi)  # D/2 log(2 pi), unit stds
    want = torch.tensor([base, base + 0.5 * 2])  # -max_c log p: A 3.68 (likely), B 4.68 (anomalous)
    assert head.anomaly_score_names == ["likelihood", "marginal"]
    assert torch.allclose(out["anomaly_scores"][0, 0, 0], want, atol=1e-4)


@pytest.mark.parametrize("normalization", ["all_pixels", "labelled_pixels"])
def test_cross_entropy_denominator(normalization):
    head = _hand_head(normalization)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, 5.0]]).T.reshape(1, 2, 1, 3)
    targets = torch.tensor([[[0, 1, 255]]])  # the third pixel is void
    total = math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))  # the two labelled pixels
    want = total / (3 if normalization == "all_pixels" else 2)  # MMSegmentation 0.22.1: all pixels
    assert abs(float(head._cross_entropy(logits, targets)) - want) < 1e-6


def test_release_projection_is_conv_bn_relu_before_the_layernorm():
    model = build_model(_cfg("gmm", **{"MODEL.GMM.PROJECTION_NORM": "BN"}))
    p = model.sem_seg_head.predictor
    conv, bn = p.projection.conv, p.projection.norm.norm
    assert conv.bias is None and isinstance(bn, torch.nn.BatchNorm2d)
    x = torch.randn(50, conv.in_features)
    p.train()
    z = x @ conv.weight.T
    z = (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + bn.eps) * bn.weight + bn.bias
    want = F.normalize(
        F.layer_norm(z.clamp_min(0), (z.shape[1],), p.embed_norm.weight, p.embed_norm.bias), dim=-1
    )
    assert torch.allclose(p.embed(x), want, atol=1e-5)


def test_channels_last_same_losses_gradients_and_outputs():
    """MODEL.CHANNELS_LAST changes the memory layout only: from the same weights the same losses,
    gradients and inference outputs up to float rounding; the conv weights and the backbone's
    input are channels-last; the weights load into a model of the other layout unchanged."""
    torch.manual_seed(0)
    ref = build_model(_cfg("softmax"))
    fast = build_model(_cfg("softmax", **{"MODEL.CHANNELS_LAST": "True"}))
    fast.load_state_dict(ref.state_dict())

    def first_conv(model):  # one whose layout is unambiguous (C_in > 1, k > 1)
        return next(
            m
            for m in model.backbone.modules()
            if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1 and m.kernel_size[0] > 1
        )

    assert first_conv(fast).weight.is_contiguous(memory_format=torch.channels_last)
    assert not first_conv(ref).weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    fast.backbone.register_forward_pre_hook(
        lambda m, a: seen.append(a[0].is_contiguous(memory_format=torch.channels_last))
    )
    batch = _batch()
    for model in (ref, fast):
        torch.manual_seed(1)  # the same dropout / sampling, if any
        losses = model(batch)
        sum(losses.values()).backward()
    assert seen == [True]
    torch.manual_seed(1)
    l_ref = ref(batch)
    torch.manual_seed(1)
    l_fast = fast(batch)
    for k in l_ref:
        torch.testing.assert_close(l_fast[k], l_ref[k], rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-5, msg=name)
    ref.eval(), fast.eval()
    with torch.no_grad():
        x = _batch(1, 50, 70)
        torch.testing.assert_close(
            fast(x)[0]["sem_seg"], ref(x)[0]["sem_seg"], rtol=1e-4, atol=1e-4
        )
    back = build_model(_cfg("softmax"))
    back.load_state_dict(fast.state_dict())
    torch.testing.assert_close(first_conv(back).weight, first_conv(fast).weight, rtol=0, atol=0)
    assert not first_conv(back).weight.is_contiguous(memory_format=torch.channels_last)
