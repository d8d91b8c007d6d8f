"""Mask2Former (softmax and GMM class heads): training step, EM, inference, checkpoint names."""

import math

import pytest
import torch
from _mask_former_helpers import NUM_CLASSES, blocky_inputs, tiny_mask_former_cfg
from detectron2.modeling import build_model

from gmmseg.engine import em_modules
from gmmseg.gmm import GMMPredictor
from gmmseg.modeling import SoftmaxPredictor
from gmmseg.modeling.mask_former import query_anomaly_score


def _model(predictor):
    torch.manual_seed(0)
    return build_model(tiny_mask_former_cfg(predictor))


@pytest.mark.parametrize("predictor", ["softmax", "gmm"])
def test_forward_backward_losses_finite(predictor):
    model = _model(predictor).train()
    losses = model(blocky_inputs(2))
    # final + 2 deep-supervision predictions (DEC_LAYERS 3), each ce / mask / dice
    expected = {f"loss_{k}{s}" for k in ("ce", "mask", "dice") for s in ("", "_0", "_1")}
    if predictor == "gmm":
        expected.add("loss_gmm_aux")
    assert set(losses) == expected
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    head = model.sem_seg_head
    grads = {
        "backbone": model.backbone.res2[0].conv1.weight.grad,
        "pixel decoder attention": head.pixel_decoder.transformer.encoder.layers[
            0
        ].self_attn.sampling_offsets.weight.grad,
        "pixel decoder fpn": head.pixel_decoder.adapter_1.weight.grad,
        "queries": head.predictor.query_feat.weight.grad,
        "cross attention": head.predictor.transformer_cross_attention_layers[
            1
        ].multihead_attn.in_proj_weight.grad,
        "mask embed": head.predictor.mask_embed.layers[0].weight.grad,
    }
    cls = head.predictor.class_embed
    grads["class head"] = (cls.projection.weight if predictor == "gmm" else cls.linear.weight).grad
    for name, g in grads.items():
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name


def test_class_head_is_the_registry_predictor_over_k_plus_one():
    softmax, gmm = _model("softmax"), _model("gmm")
    assert isinstance(softmax.class_head, SoftmaxPredictor)
    assert softmax.class_head.linear.out_features == NUM_CLASSES + 1
    assert (
        isinstance(gmm.class_head, GMMPredictor) and gmm.class_head.num_classes == NUM_CLASSES + 1
    )
    # one GMM shared by every decoder layer: the only EM module of the model
    assert em_modules(gmm) == [gmm.class_head]
    assert em_modules(softmax) == []


def test_em_state_changes_after_training_step_and_hook():
    model = _model("gmm").train()
    gmm = model.class_head
    means, stds = gmm.means.clone(), gmm.stds.clone()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    losses = model(blocky_inputs(2))
    opt.zero_grad()
    sum(losses.values()).backward()
    opt.step()
    # no gradient reaches the Gaussians
    assert gmm.means.grad is None and not gmm.means.requires_grad
    assert torch.equal(gmm.means, means)
    for m in em_modules(model):  # what gmmseg.engine.EMHook does
        m.flush()
        m.em_update()
    assert int(gmm.memory.filled.sum()) > 0
    assert int(gmm.num_em_updates) == 1
    assert not torch.allclose(gmm.means, means) and not torch.allclose(gmm.stds, stds)
    # unmatched queries are "no object" (class K): its components received data too
    k, m = NUM_CLASSES, gmm.num_components
    assert int(gmm.memory.filled[k * m : (k + 1) * m].sum()) > 0
    assert int(gmm.updates_per_component.view(k + 1, m)[k].sum()) > 0


def test_em_labels_are_the_final_hungarian_assignment(monkeypatch):
    model = _model("gmm").train()
    seen = {}
    original = GMMPredictor.forward

    def spy(self, x, labels=None):
        if labels is not None:
            seen["labels"] = labels.clone()
        return original(self, x, labels)

    monkeypatch.setattr(GMMPredictor, "forward", spy)
    inputs = blocky_inputs(2)
    model(inputs)
    labels = seen["labels"].view(2, -1)
    q = model.sem_seg_head.predictor.num_queries
    assert labels.shape == (2, q)
    for b, x in enumerate(inputs):
        present = sorted(int(c) for c in torch.unique(x["sem_seg"]) if c != 255)
        matched = labels[b][labels[b] != NUM_CLASSES]
        assert sorted(matched.tolist()) == present  # each segment labels exactly one query
        assert int((labels[b] == NUM_CLASSES).sum()) == q - len(present)


@pytest.mark.parametrize("predictor", ["softmax", "gmm"])
def test_semantic_inference_at_input_size(predictor):
    model = _model(predictor).eval()
    image = torch.rand(3, 50, 70) * 255  # not a multiple of the size divisibility
    with torch.no_grad():
        out = model([{"image": image}, {"image": image, "height": 100, "width": 140}])
    assert out[0]["sem_seg"].shape == (NUM_CLASSES, 50, 70)
    assert out[1]["sem_seg"].shape == (NUM_CLASSES, 100, 140)
    assert torch.isfinite(out[0]["sem_seg"]).all()
    # log of the release's scores sum_q p_q(c) sigmoid(m_q): each in [0, Q]
    assert (out[0]["sem_seg"].exp() <= model.num_queries + 1e-4).all()
    family = ["rba", "eam"] + (["query_likelihood"] if predictor == "gmm" else [])
    assert list(out[0]["anomaly_scores"]) == family
    assert all(v.shape == (100, 140) for v in out[1]["anomaly_scores"].values())
    if predictor == "gmm":
        assert out[0]["anomaly_score"].shape == (50, 70) and out[1]["anomaly_score"].shape == (
            100,
            140,
        )
        assert torch.isfinite(out[0]["anomaly_score"]).all()
        assert out[0]["anomaly_score"] is out[0]["anomaly_scores"]["query_likelihood"]
    else:
        assert "anomaly_score" not in out[0]
    # RbA from the semantic scores the model predicts with: -sum_k tanh(exp(sem_seg))
    torch.testing.assert_close(
        out[0]["anomaly_scores"]["rba"], -torch.tanh(out[0]["sem_seg"].exp()).sum(0)
    )


def test_rba_and_eam_by_hand():
    # two queries: q0 (class 0, p = 0.98) claims the left half; q1 sure of nothing known (mostly "no
    # object") the right half; K = 2 + "no object"
    from gmmseg.modeling.mask_former.meta_arch import _contract, _ingredients
    from gmmseg.scores import compute_scores

    mask_cls = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 6.0]])
    p = mask_cls.softmax(-1)
    masks = torch.full((2, 1, 4), -30.0)
    masks[0, :, :2] = 30.0
    masks[1, :, 2:] = 30.0
    ing = _ingredients(_contract(mask_cls, masks.sigmoid(), query_mass=True), 2, False, True)
    s = compute_scores(ing, ["rba", "eam"])
    want_rba = [-(math.tanh(p[0, 0]) + math.tanh(p[0, 1]))] * 2 + [
        -(math.tanh(p[1, 0]) + math.tanh(p[1, 1]))
    ] * 2
    torch.testing.assert_close(s["rba"][0], torch.tensor(want_rba), atol=1e-5, rtol=0)
    want_eam = [1 - float(p[0, :2].max())] * 2 + [1 - float(p[1, :2].max())] * 2
    torch.testing.assert_close(s["eam"][0], torch.tensor(want_eam), atol=1e-5, rtol=0)
    assert (
        float(s["eam"][0, 3]) > 0.99 and float(s["eam"][0, 0]) < 0.04
    )  # the unclaimed half is anomalous


def test_query_anomaly_score_is_the_claimed_queries_density():
    # two queries: q0 claims the left half (likely under class 0), q1 the right half (unlikely)
    mask_cls = torch.tensor([[5.0, 0.0, -5.0], [0.0, 5.0, -5.0]])  # K = 2 + "no object"
    log_lik = torch.tensor(
        [[10.0, -3.0, 50.0], [-40.0, -20.0, 50.0]]
    )  # the no-object density is ignored
    masks = torch.full((2, 1, 4), -20.0)
    masks[0, :, :2] = 20.0
    masks[1, :, 2:] = 20.0
    score = query_anomaly_score(mask_cls, log_lik, masks)
    assert torch.allclose(score[0, :2], torch.tensor(-10.0), atol=1e-3)
    assert torch.allclose(score[0, 2:], torch.tensor(20.0), atol=1e-3)


def test_likelihood_weighted_rba_by_hand():
    # q0 (class 0, likely: score 28 below the known pixels' mean 30) claims the left half; q1 (class 1
    # with the same posterior, unlikely: score 40, 5 std above) the right half. Unweighted RbA
    # cannot tell them apart; weighted by lambda_q the unlikely query's pixels are claimed by nothing.
    from gmmseg.modeling.mask_former.meta_arch import _contract, _ingredients
    from gmmseg.scores import compute_scores, query_likelihood_weights

    mask_cls = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    log_lik = torch.tensor(
        [[-28.0, -35.0, 9.0], [-50.0, -40.0, 9.0]]
    )  # "no object" is not evidence
    stats = {"query_likelihood": {"mean_all": 30.0, "std_all": 2.0}}
    lam = query_likelihood_weights(log_lik[:, :-1].amax(-1), stats)
    want_lam = [0.5 * (1 + math.erf(1.0 / math.sqrt(2))), 0.5 * (1 + math.erf(-5.0 / math.sqrt(2)))]
    torch.testing.assert_close(lam, torch.tensor(want_lam), atol=1e-6, rtol=1e-5)
    masks = torch.full((2, 1, 4), -30.0)
    masks[0, :, :2] = 30.0
    masks[1, :, 2:] = 30.0
    ing = _ingredients(
        _contract(mask_cls, masks.sigmoid(), query_mass=True, query_weights=lam),
        2,
        False,
        True,
        True,
    )
    s = compute_scores(ing, ["rba", "rba_likelihood"])
    p = mask_cls.softmax(-1)
    want_left = -(math.tanh(p[0, 0] * lam[0]) + math.tanh(p[0, 1] * lam[0]))
    want_right = -(math.tanh(p[1, 0] * lam[1]) + math.tanh(p[1, 1] * lam[1]))
    torch.testing.assert_close(
        s["rba_likelihood"][0], torch.tensor([want_left] * 2 + [want_right] * 2), atol=1e-5, rtol=0
    )
    assert float(s["rba"][0, 0]) == pytest.approx(float(s["rba"][0, 3]), abs=1e-6)  # RbA: a tie
    assert (
        float(s["rba_likelihood"][0, 3]) > -1e-5 > float(s["rba_likelihood"][0, 0])
    )  # weighted: right anomalous


def test_model_gives_the_weighted_rba_with_a_fit_only():
    model = _model("gmm").eval()
    image = torch.rand(3, 48, 64) * 255
    with torch.no_grad():
        plain = model([{"image": image}])[0]
    assert "rba_likelihood" not in plain["anomaly_scores"]  # no MODEL.ANOMALY_FIT: no weights
    ql = plain["anomaly_scores"]["query_likelihood"]
    model.anomaly_fit = {
        "query_likelihood": {"mean_all": float(ql.mean()), "std_all": float(ql.std()) + 1e-3}
    }
    with torch.no_grad():
        out = model([{"image": image}])[0]
    assert list(out["anomaly_scores"]) == ["rba", "eam", "query_likelihood", "rba_likelihood"]
    # every lambda_q <= 1: the weighted RbA claims less, so it is never below RbA
    assert (out["anomaly_scores"]["rba_likelihood"] >= out["anomaly_scores"]["rba"] - 1e-5).all()
    model.configured_map, model.score_family = "rba_likelihood", False
    with torch.no_grad():
        only = model([{"image": image}])[0]
    torch.testing.assert_close(only["anomaly_score"], out["anomaly_scores"]["rba_likelihood"])


def test_official_checkpoint_names_load_into_softmax_variant():
    model = _model("softmax")
    mine = model.state_dict()
    # the official layout: the linear class head directly under class_embed
    official = {
        k.replace("class_embed.linear.", "class_embed."): v.clone() + 1.0
        if v.is_floating_point()
        else v
        for k, v in mine.items()
    }
    for key in [
        "criterion.empty_weight",
        "sem_seg_head.predictor.class_embed.weight",
        "sem_seg_head.predictor.query_feat.weight",
        "sem_seg_head.predictor.query_embed.weight",
        "sem_seg_head.predictor.level_embed.weight",
        "sem_seg_head.predictor.decoder_norm.weight",
        "sem_seg_head.predictor.mask_embed.layers.2.bias",
        "sem_seg_head.predictor.transformer_self_attention_layers.1.self_attn.in_proj_weight",
        "sem_seg_head.predictor.transformer_cross_attention_layers.1.multihead_attn.out_proj.weight",
        "sem_seg_head.predictor.transformer_ffn_layers.1.linear2.weight",
        "sem_seg_head.pixel_decoder.input_proj.2.1.weight",
        "sem_seg_head.pixel_decoder.transformer.level_embed",
        "sem_seg_head.pixel_decoder.transformer.encoder.layers.0.self_attn.sampling_offsets.weight",
        "sem_seg_head.pixel_decoder.transformer.encoder.layers.0.norm2.bias",
        "sem_seg_head.pixel_decoder.mask_features.weight",
        "sem_seg_head.pixel_decoder.adapter_1.norm.weight",
        "sem_seg_head.pixel_decoder.layer_1.weight",
        "backbone.stem.conv1.weight",
    ]:
        assert key in official, key
    # DEC_LAYERS 3 = the learnable-query prediction + 2 decoder layers (as the release counts)
    assert "sem_seg_head.predictor.transformer_ffn_layers.2.linear1.weight" not in official
    assert not any(
        k.startswith("pixel_mean") or k.startswith("pixel_std") for k in official
    )  # not persistent
    result = model.load_state_dict(official, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    w = model.sem_seg_head.predictor.class_embed.linear.weight
    assert torch.equal(w, official["sem_seg_head.predictor.class_embed.weight"])


def test_gmm_variant_keeps_everything_but_the_class_head():
    soft, gmm = set(_model("softmax").state_dict()), set(_model("gmm").state_dict())
    head = "sem_seg_head.predictor.class_embed."
    assert {k for k in soft if not k.startswith(head)} == {k for k in gmm if not k.startswith(head)}
    assert any(k.startswith(head + "means") for k in gmm)


def test_targets_from_label_map_and_bad_label():
    model = _model("softmax").train()
    inputs = blocky_inputs(1)
    from detectron2.structures import ImageList

    images = ImageList.from_tensors([inputs[0]["image"]], 32)
    (t,) = model.prepare_targets(inputs, images)
    assert t["labels"].tolist() == sorted(set(inputs[0]["sem_seg"].unique().tolist()) - {255})
    assert t["masks"].dtype == torch.bool and t["masks"].sum(0).max() == 1  # disjoint segments
    assert int(t["masks"].sum()) == int((inputs[0]["sem_seg"] != 255).sum())
    inputs[0]["sem_seg"][5, 5] = NUM_CLASSES  # neither a class nor the ignore value
    with pytest.raises(ValueError, match="outside 0..3"):
        model.prepare_targets(inputs, images)


def test_image_without_segments_trains():
    model = _model("gmm").train()
    inputs = blocky_inputs(2)
    inputs[1]["sem_seg"][:] = 255
    losses = model(inputs)
    assert all(torch.isfinite(v) for v in losses.values())


def test_channels_last_same_losses_gradients_and_outputs():
    """MODEL.CHANNELS_LAST for Mask2Former changes the memory layout only: from the same weights the
    same losses and gradients (the point sampling draws the same points) and inference outputs."""
    cfg = tiny_mask_former_cfg("gmm")
    torch.manual_seed(0)
    ref = build_model(cfg)
    cfg.MODEL.CHANNELS_LAST = True
    fast = build_model(cfg)
    fast.load_state_dict(ref.state_dict())
    conv = fast.backbone.res2[0].conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert not ref.backbone.res2[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    batch = blocky_inputs(2)
    losses = {}
    for name, model in (("ref", ref), ("fast", fast)):
        torch.manual_seed(1)
        losses[name] = model.train()(batch)
        sum(losses[name].values()).backward()
    assert set(losses["ref"]) == set(losses["fast"])
    for k, v in losses["ref"].items():
        torch.testing.assert_close(losses["fast"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    # relative to each gradient's norm (a bias before a GroupNorm has a gradient of 0 up to rounding)
    for (name, a), b in zip(ref.named_parameters(), fast.parameters()):
        if a.grad is not None:
            assert float((b.grad - a.grad).norm()) <= 1e-3 * float(a.grad.norm()) + 1e-7, name
    with torch.no_grad():
        x = [{"image": blocky_inputs(1, (48, 80), seed=3)[0]["image"]}]
        out_ref, out_fast = ref.eval()(x)[0], fast.eval()(x)[0]
    torch.testing.assert_close(out_fast["sem_seg"], out_ref["sem_seg"], rtol=1e-4, atol=1e-4)
