import copy
import logging

import pytest
import torch
import torch.nn.functional as F

from gmmseg.gmm import GMMPredictor


def _predictor(**kw):
    args = dict(embed_dim=8, num_components=2, memory_size=50, pushes_per_step=20,
                push_correct_only=False, memory_init="empty", mean_momentum=0.0)
    args.update(kw)
    return GMMPredictor(16, 3, **args)


def test_forward_shapes_and_outputs():
    p = _predictor().train()
    x = torch.randn(40, 16)
    labels = torch.randint(0, 3, (40,))
    labels[:5] = 255
    out = p(x, labels)
    assert out["logits"].shape == (40, 3) and out["log_likelihood"].shape == (40, 3)
    assert set(out["losses"]) == {"loss_gmm_aux"} and torch.isfinite(out["losses"]["loss_gmm_aux"])
    out["logits"].sum().backward()
    assert p.projection.weight.grad is not None
    assert not p.means.requires_grad and not p.stds.requires_grad


def test_all_state_is_in_buffers():
    p = _predictor()
    state = p.state_dict()
    for key in ["means", "stds", "memory.bank", "memory.ptr", "memory.filled", "memory.stat_sum",
                "updates_per_component", "received_data", "num_em_updates"]:
        assert key in state, key
    assert {n for n, _ in p.named_parameters()} == {
        "projection.weight", "projection.bias", "embed_norm.weight", "embed_norm.bias",
        "class_norm.weight", "class_norm.bias"}


def test_em_moves_means_to_the_data_of_their_class():
    torch.manual_seed(0)
    p = _predictor(num_components=1).train()
    with torch.no_grad():  # identity-like projection so the class clusters survive embedding
        p.projection.weight.zero_()
        p.projection.weight[:8, :8] = torch.eye(8)
    centers = torch.zeros(3, 16)
    centers[0, 0] = centers[1, 1] = centers[2, 2] = 3.0
    labels = torch.arange(3).repeat_interleave(30)
    x = centers[labels] + 0.05 * torch.randn(90, 16)
    before = p.means.clone()
    p(x, labels)
    p.em_update()
    emb_mean = F.normalize(torch.stack([p.embed(x[labels == c]).mean(0) for c in range(3)]), dim=-1)
    cos = (p.means[:, 0] * emb_mean).sum(-1)
    assert (cos > 0.999).all(), cos
    assert not torch.allclose(before, p.means)
    assert int(p.num_em_updates) == 1


def test_only_correct_pixels_enter_memory():
    p = _predictor(push_correct_only=True).train()
    x = torch.randn(60, 16)
    labels = torch.randint(0, 3, (60,))
    out = p(x, labels)
    correct = out["logits"].argmax(1) == labels
    assert 0 < int(correct.sum()) < 60
    assert p.flush() == int(correct.sum())  # fewer than pushes_per_step per group: all kept
    e = p.embed(x).detach()
    stored = torch.cat([p.memory.newest(g, 50) for g in range(6)])
    dist = torch.cdist(stored, e, compute_mode="donot_use_mm_for_euclid_dist")  # every stored row is the embedding of a correct pixel
    nearest = dist.argmin(1)
    assert torch.allclose(dist.min(1).values, torch.zeros(len(stored)), atol=1e-5)
    assert correct[nearest].all()


def test_label_out_of_range_is_named():
    p = _predictor().train()
    with pytest.raises(ValueError, match="label value 7"):
        p(torch.randn(4, 16), torch.tensor([0, 1, 7, 255]))


def test_nan_embeddings_never_reach_parameters(caplog):
    p = _predictor().train()
    x = torch.randn(30, 16)
    x[3] = float("nan")
    with caplog.at_level(logging.WARNING):
        p(x, torch.randint(0, 3, (30,)))
        p.em_update()
    assert "non-finite" in caplog.text
    assert torch.isfinite(p.means).all() and torch.isfinite(p.stds).all()
    assert torch.isfinite(p.memory.bank).all()


def test_release_settings_random_memory_and_momentum():
    p = _predictor(memory_init="random", mean_momentum=0.999).train()
    before = p.means.clone()
    labels = torch.randint(0, 3, (30,))
    p(torch.randn(30, 16), labels)
    p.em_update()
    moved = (p.means - before).norm(dim=-1)
    assert moved.max() < 0.01 and moved.max() > 0  # a tiny momentum step


def test_momentum_warmup_first_update_takes_the_data():
    a = _predictor(mean_momentum=0.999, momentum_warmup=True).train()
    b = copy.deepcopy(a)
    b.mean_momentum, b.momentum_warmup = 0.0, False
    x, labels = torch.randn(30, 16), torch.randint(0, 3, (30,))
    torch.manual_seed(1)
    a(x, labels)
    torch.manual_seed(1)
    b(x, labels)
    a.em_update()
    b.em_update()
    assert torch.allclose(a.means, b.means)


def test_stds_floor_and_positive():
    p = _predictor().train()
    labels = torch.zeros(30, dtype=torch.long)
    p(torch.randn(1, 16).repeat(30, 1), labels)  # identical embeddings: zero variance
    p.em_update()
    assert (p.stds >= 0.1 - 1e-6).all()  # sqrt(variance_floor)


def test_bootstrap_starved_components_take_misclassified_pixels_until_first_update():
    p = _predictor(push_correct_only=True, bootstrap_starved=True, memory_size=500).train()
    x, labels = torch.randn(60, 16), torch.randint(0, 3, (60,))
    out = p(x, labels)
    wrong = int((out["logits"].argmax(1) != labels).sum())
    assert wrong > 0
    assert p.flush() == 60  # nothing updated yet: every pixel is pushed
    p.em_update()
    assert (p.updates_per_component > 0).all()
    out = p(x, labels)
    correct = int((out["logits"].argmax(1) == labels).sum())
    assert p.flush() == correct  # afterwards only correctly classified pixels
