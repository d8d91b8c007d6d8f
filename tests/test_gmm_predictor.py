import copy
import logging
import math

import pytest
import torch
import torch.nn.functional as F

from gmmseg.gmm import GMMPredictor


def _predictor(**kw):
    args = dict(
        embed_dim=8,
        num_components=2,
        memory_size=50,
        pushes_per_step=20,
        push_rows="all",
        memory_init="empty",
        mean_momentum=0.0,
    )
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
    for key in [
        "means",
        "stds",
        "memory.bank",
        "memory.ptr",
        "memory.filled",
        "memory.stat_sum",
        "updates_per_component",
        "received_data",
        "num_em_updates",
    ]:
        assert key in state, key
    assert {n for n, _ in p.named_parameters()} == {
        "projection.weight",
        "projection.bias",
        "embed_norm.weight",
        "embed_norm.bias",
        "class_norm.weight",
        "class_norm.bias",
    }


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
    p = _predictor(push_rows="correct").train()
    x = torch.randn(60, 16)
    labels = torch.randint(0, 3, (60,))
    out = p(x, labels)
    correct = out["logits"].argmax(1) == labels
    assert 0 < int(correct.sum()) < 60
    assert p.flush() == int(correct.sum())  # fewer than pushes_per_step per group: all kept
    e = p.embed(x).detach()
    stored = torch.cat([p.memory.newest(g, 50) for g in range(6)])
    dist = torch.cdist(
        stored, e, compute_mode="donot_use_mm_for_euclid_dist"
    )  # every stored row is the embedding of a correct pixel
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


# ---------------------------------------------------------------- values on hand-made examples
LOG_2PI = math.log(2 * math.pi)


def _hand_predictor(num_classes=2, num_components=2, dim=4, **kw):
    """Identity projection: the embedding of x is L2(LayerNorm(x)); rows x with mean 0 and
    variance 1 (e.g. +-1 patterns) are kept up to a factor, so their embeddings are known."""
    args = dict(
        embed_dim=dim,
        num_components=num_components,
        memory_size=50,
        push_rows="all",
        memory_init="empty",
        mean_momentum=0.0,
        projection=torch.nn.Identity(),
    )
    args.update(kw)
    return GMMPredictor(dim, num_classes, **args)


def test_class_score_is_the_best_component_and_logits_the_class_layernorm():
    p = _hand_predictor(num_classes=3).eval()
    e = torch.tensor([0.5, -0.5, 0.5, -0.5])
    f = torch.tensor([0.5, 0.5, -0.5, -0.5])  # orthogonal to e, unit norm
    with torch.no_grad():
        p.means[0, 0], p.means[0, 1] = e, -e  # class 0: one component on e, one opposite
        p.means[1, 0], p.means[1, 1] = f, -f  # class 1: both at distance sqrt(2)
        p.means[2, 0], p.means[2, 1] = -e, -e  # class 2: both opposite
        p.stds.fill_(1.0)
        p.stds[1] = 0.5  # class 1 narrower: sum log s = 4 log 0.5, squared distance 2 / 0.25
    out = p(torch.tensor([[1.0, -1.0, 1.0, -1.0]]))
    base = -2 * LOG_2PI  # -D/2 log(2 pi), D = 4
    want_ll = torch.tensor([base, base - 4 * math.log(0.5) - 0.5 * 2 / 0.25, base - 0.5 * 4])
    assert torch.allclose(out["log_likelihood"][0], want_ll, atol=1e-4)  # max, not log-sum-exp
    s = want_ll
    want_logits = (s - s.mean()) / torch.sqrt(s.var(unbiased=False) + 1e-5)
    assert torch.allclose(out["logits"][0], want_logits, atol=1e-4)


def test_m_step_mean_and_std_about_the_normalised_mean():
    p = _hand_predictor(num_classes=1, num_components=1, variance_floor=0.01).train()
    x = torch.tensor([[1.0, -1.0, 1.0, -1.0], [1.0, 1.0, -1.0, -1.0], [1.0, -1.0, -1.0, 1.0]])
    p(x, torch.zeros(3, dtype=torch.long))
    p.em_update()
    e = x / 2  # LayerNorm keeps these rows (up to eps), L2 halves them
    mu = F.normalize(e.sum(0), dim=0)  # (1.5, -0.5, -0.5, -0.5) / sqrt(3)
    assert torch.allclose(p.means[0, 0], mu, atol=1e-4)
    want_std = ((e - mu).pow(2).mean(0) + 0.01).sqrt()  # about the normalised mean, not e.mean(0)
    assert torch.allclose(p.stds[0, 0], want_std, atol=1e-4)
    # by hand, first dimension: rows 0.5 each, mu_1 = 1.5 / sqrt(3) = 0.866 -> std sqrt(0.1340 + 0.01)
    assert abs(float(p.stds[0, 0, 0]) - math.sqrt((0.5 - 1.5 / math.sqrt(3)) ** 2 + 0.01)) < 1e-4


def test_aux_loss_target_is_class_times_m_plus_assigned_component():
    p = _hand_predictor(num_classes=3, num_components=2, aux_loss_weight=0.01).train()
    e, f = torch.tensor([0.5, -0.5, 0.5, -0.5]), torch.tensor([0.5, 0.5, -0.5, -0.5])
    with torch.no_grad():
        p.means[2, 0], p.means[2, 1] = e, f
    x = torch.stack([e, f]) * 2  # one pixel on each component of class 2
    labels = torch.tensor([2, 2])
    out = p(x, labels)
    comp_ll = p.component_log_likelihood(p.embed(x)).reshape(2, 6)
    # targets 2 * 2 + 0 = 4 and 2 * 2 + 1 = 5 (equipartition puts one pixel on each component)
    want = 0.01 * F.cross_entropy(comp_ll, torch.tensor([4, 5]))
    assert torch.allclose(out["losses"]["loss_gmm_aux"], want, atol=1e-6)


def test_release_m_step_updates_every_component_of_present_classes_only():
    p = _hand_predictor(
        num_classes=3,
        num_components=2,
        memory_init="random",
        memory_size=400,
        mean_momentum=0.0,
        pushes_per_step=20,
        seed=3,
    ).train()
    x = torch.tensor([[1.0, -1.0, 1.0, -1.0]]).repeat(4, 1)
    p(x, torch.zeros(4, dtype=torch.long))  # only class 0 in the labels of this step
    p.flush()
    p(x, torch.tensor([1, 1, 1, 1]))  # class 1 seen between two M-steps
    p.flush()
    before = p.stds.clone(), p.means.clone()
    p(x, torch.zeros(4, dtype=torch.long))
    p.em_update()
    # class 0: both components updated, including the one that never received a row: its memory
    # is its 400 random unit vectors, its new std their spread about their normalised sum
    # (D = 4: about sqrt(1/4 + 1/4 + 0.01) = 0.71; D = 64: about 0.2), not the initial 1.0
    starved = [c for c in range(2) if int(p.memory.ptr[c]) == 0]
    assert len(starved) == 1
    rows = p.memory.bank[starved[0]].double()
    mu = F.normalize(rows.sum(0), dim=0)
    want = ((rows - mu).pow(2).mean(0) + 0.01).sqrt().float()
    assert torch.allclose(p.stds[0, starved[0]], want, atol=1e-5)
    assert torch.allclose(p.means[0, starved[0]], mu.float(), atol=1e-5)
    # class 1 (not in this step's labels) and class 2 (never seen): unchanged
    assert torch.equal(p.stds[1:], before[0][1:]) and torch.equal(p.means[1:], before[1][1:])
    # the received_rows rule leaves the never-fed component of class 0 alone
    q = _hand_predictor(
        num_classes=3,
        num_components=2,
        memory_init="random",
        memory_size=400,
        update_components="received_rows",
        seed=3,
    ).train()
    q(x, torch.zeros(4, dtype=torch.long))
    q.em_update()
    assert int((q.updates_per_component[:2] > 0).sum()) == 1


def test_nll_loss_is_minus_the_own_class_score_on_labelled_pixels():
    p = _hand_predictor(num_classes=2, num_components=2, nll_loss_weight=0.1).train()
    e, f = torch.tensor([0.5, -0.5, 0.5, -0.5]), torch.tensor([0.5, 0.5, -0.5, -0.5])
    with torch.no_grad():
        p.means[0, 0], p.means[0, 1], p.means[1, 0], p.means[1, 1] = e, -e, f, -f
    x = torch.stack([e, f, e]) * 2
    out = p(x, torch.tensor([0, 0, 255]))
    base = -2 * LOG_2PI  # unit stds, D = 4
    # pixel 0 on class 0's first mean: log p = base; pixel 1 at distance sqrt(2) from both: base - 1
    want = 0.1 * -(base + (base - 1)) / 2
    assert abs(out["losses"]["loss_gmm_nll"].item() - want) < 1e-4


E0 = torch.tensor([0.5, -0.5, 0.5, -0.5])  # unit vectors the hand predictor's embedding keeps
F0 = torch.tensor([0.5, 0.5, -0.5, -0.5])  # orthogonal to E0


def test_momentum_m_step_renormalises_the_mean():
    """Momentum 0.5, mean E0, data all at F0 (orthogonal): 0.5 E0 + 0.5 F0 = (0.5, 0, 0, -0.5)
    has norm sqrt(0.5); the new mean is that over its norm, (1, 0, 0, -1) / sqrt(2)."""
    p = _hand_predictor(num_classes=1, num_components=1, mean_momentum=0.5).train()
    with torch.no_grad():
        p.means[0, 0] = E0
    p((2 * F0).repeat(3, 1), torch.zeros(3, dtype=torch.long))
    p.em_update()
    want = torch.tensor([1.0, 0.0, 0.0, -1.0]) / math.sqrt(2)
    assert torch.allclose(p.means[0, 0], want, atol=1e-6)
    assert abs(float(p.means[0, 0].norm()) - 1.0) < 1e-6


def test_received_rows_forgets_what_it_received_after_an_m_step():
    """UPDATE_COMPONENTS received_rows, two M-steps, momentum 0.5. First step: class 0 receives
    rows at F0 and its mean moves from E0 to (E0 + F0) / |E0 + F0|. Second step: only class 1
    receives rows; class 0's mean must stay (its bank still holds the F0 rows: updating it again
    would move it to normalise(0.5 * (E0 + F0) / sqrt(2) + 0.5 F0))."""
    p = _hand_predictor(
        num_classes=2, num_components=1, mean_momentum=0.5, update_components="received_rows"
    ).train()
    with torch.no_grad():
        p.means[:, 0] = E0
    p((2 * F0).repeat(3, 1), torch.zeros(3, dtype=torch.long))
    p.em_update()
    first = F.normalize(E0 + F0, dim=0)  # (1, 0, 0, -1) / sqrt(2)
    assert torch.allclose(p.means[0, 0], first, atol=1e-6)
    assert torch.equal(p.means[1, 0], E0)
    assert p.updates_per_component.tolist() == [1, 0]
    p((2 * F0).repeat(3, 1), torch.ones(3, dtype=torch.long))
    p.em_update()
    assert torch.allclose(p.means[0, 0], first, atol=1e-6)  # not updated a second time
    assert torch.allclose(p.means[1, 0], first, atol=1e-6)
    assert p.updates_per_component.tolist() == [1, 1]
