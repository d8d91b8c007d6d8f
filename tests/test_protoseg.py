"""ProtoSegPredictor: shapes and losses, the within-class equipartition clustering, the momentum
prototype update through the EM hook's interface, config building, and two ranks in step
(threads with an in-process all_reduce: the collective's contract without spawning processes)."""

import copy
import hashlib
import threading
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from torch import nn

from gmmseg import add_gmmseg_config
from gmmseg.engine import EMHook, em_modules
from gmmseg.gmm import EMModule
from gmmseg.gmm.assignment import equipartition_error, sinkhorn_assign
from gmmseg.gmm.protoseg import ProtoSegPredictor
from gmmseg.modeling.predictors import build_predictor


def _predictor(**kw):
    args = dict(embed_dim=8, num_prototypes=4, update_correct_only=False)
    args.update(kw)
    return ProtoSegPredictor(16, 3, **args)


def _identity_projection(p):
    """Embedding = normalise(LayerNorm(first 8 input dims)): class clusters survive."""
    with torch.no_grad():
        p.projection.weight.zero_()
        p.projection.bias.zero_()
        p.projection.weight[:8, :8] = torch.eye(8)


def _clustered(n_per_class=30, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.full((3, 16), -1.0)
    centers[:, 8:] = 0
    centers[0, 0] = centers[1, 1] = centers[2, 2] = 3.0
    labels = torch.arange(3).repeat_interleave(n_per_class)
    return centers[labels] + noise * torch.randn(3 * n_per_class, 16, generator=g), labels


def test_forward_backward_shapes_and_losses():
    p = _predictor().train()
    x = torch.randn(40, 16, requires_grad=True)
    labels = torch.randint(0, 3, (40,))
    labels[:5] = 255
    out = p(x, labels)
    assert out["logits"].shape == (40, 3) and out["log_likelihood"].shape == (40, 3)
    assert set(out["losses"]) == {"loss_ppc", "loss_ppd"}
    assert all(torch.isfinite(v) for v in out["losses"].values())
    (
        F.cross_entropy(out["logits"], labels, ignore_index=255) + sum(out["losses"].values())
    ).backward()
    assert p.projection.weight.grad is not None and x.grad is not None
    assert {n for n, _ in p.named_parameters()} == {
        "projection.weight",
        "projection.bias",
        "embed_norm.weight",
        "embed_norm.bias",
        "class_norm.weight",
        "class_norm.bias",
    }  # prototypes are not learnable
    assert not p.prototypes.requires_grad
    # the class score is the best cosine over the class's prototypes (unit vectors)
    e = p.embed(x.detach())
    sims = torch.einsum("nd,kpd->nkp", e, p.prototypes)
    assert torch.allclose(out["log_likelihood"], sims.amax(-1), atol=1e-5)
    assert out["log_likelihood"].abs().max() <= 1 + 1e-5
    assert torch.allclose(p.prototypes.norm(dim=-1), torch.ones(3, 4))
    # eval / no labels: no losses, nothing accumulated
    assert p.flush() == 35
    p.eval()
    assert "losses" not in p(x.detach()) and p.flush() == 0


def test_losses_match_their_definitions():
    p = _predictor(temperature=0.2, ppc_weight=0.5, ppd_weight=2.0).train()
    x, labels = _clustered()
    out = p(x, labels)
    e = p.embed(x)
    sims = p.similarities(e)
    target = labels * 4 + p.assign(sims, labels)
    flat = sims.reshape(-1, 12)
    ppc = F.cross_entropy(flat / 0.2, target)
    ppd = (1 - flat.gather(1, target[:, None])).pow(2).mean()
    assert torch.allclose(out["losses"]["loss_ppc"], 0.5 * ppc, atol=1e-5)
    assert torch.allclose(out["losses"]["loss_ppd"], 2.0 * ppd, atol=1e-6)
    # a zero weight drops the loss
    assert set(_predictor(ppc_weight=0.0).train()(x, labels)["losses"]) == {"loss_ppd"}


def test_sinkhorn_clustering_is_equipartitioned_within_each_class():
    p = _predictor(num_prototypes=4)
    g = torch.Generator().manual_seed(1)
    n = 200
    y = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(n // 2, dtype=torch.long)])
    # skewed: every embedding prefers prototype 0 of its class (plain argmax puts all there)
    sims = 0.3 * torch.rand(len(y), 3, 4, generator=g)
    sims[..., 0] += 0.5
    assert (sims.gather(1, y.view(-1, 1, 1).expand(-1, 1, 4)).squeeze(1).argmax(1) == 0).all()
    a = p.assign(sims, y)
    for c, n_c in ((0, n), (1, n // 2)):
        counts = torch.bincount(a[y == c], minlength=4).float()
        assert (counts - n_c / 4).abs().max() <= 0.25 * n_c / 4, counts
    # the soft plan it comes from meets the column marginals
    own = sims.gather(1, y.view(-1, 1, 1).expand(-1, 1, 4)).squeeze(1)
    assert equipartition_error(sinkhorn_assign(own, y, 3, num_iters=3, epsilon=0.05), y, 3) < 0.05


def test_em_update_moves_prototypes_to_their_class_data():
    p = _predictor(num_prototypes=1, momentum=0.0).train()
    _identity_projection(p)
    x, labels = _clustered()
    before = p.prototypes.clone()
    p(x, labels)
    assert torch.equal(p.prototypes, before)  # forward never touches the prototypes
    assert p.flush() == 90 and float(p.count_embeddings.sum()) == 90
    p.em_update()
    target = F.normalize(torch.stack([p.embed(x[labels == c]).mean(0) for c in range(3)]), dim=-1)
    assert ((p.prototypes[:, 0] * target).sum(-1) > 0.9999).all()
    assert int(p.num_em_updates) == 1 and float(p.count_embeddings.sum()) == 0
    # nothing new: the next update changes nothing
    after = p.prototypes.clone()
    p.em_update()
    assert torch.equal(p.prototypes, after) and int(p.num_em_updates) == 1


def test_momentum_update_is_a_small_step_toward_the_data():
    p = _predictor(num_prototypes=1, momentum=0.9).train()
    _identity_projection(p)
    x, labels = _clustered()
    target = F.normalize(torch.stack([p.embed(x[labels == c]).mean(0) for c in range(3)]), dim=-1)
    before = p.prototypes.clone()
    cos_before = (before[:, 0] * target).sum(-1)
    p(x, labels)
    p.em_update()
    expected = F.normalize(0.9 * before[:, 0] + 0.1 * target, dim=-1)
    assert torch.allclose(p.prototypes[:, 0], expected, atol=1e-5)
    assert ((p.prototypes[:, 0] * target).sum(-1) > cos_before).all()
    assert torch.allclose(p.prototypes.norm(dim=-1), torch.ones(3, 1))


def test_sums_span_the_update_interval_and_only_correct_pixels_count():
    p = _predictor(num_prototypes=2, update_correct_only=True).train()
    x, labels = _clustered()
    out = p(x, labels)
    correct = int((out["logits"].argmax(1) == labels).sum())
    p.flush()
    p(x, labels)
    p.flush()
    assert float(p.count_embeddings.sum()) == 2 * correct
    sd = p.state_dict()  # the totals are checkpointed
    assert {"prototypes", "sum_embeddings", "count_embeddings", "num_em_updates"} <= set(sd)


def test_all_ignore_batch_keeps_the_graph_and_updates_nothing():
    p = _predictor().train()
    x = torch.randn(10, 16)
    out = p(x, torch.full((10,), 255))
    loss = sum(out["losses"].values())
    assert float(loss.detach()) == 0.0
    loss.backward()  # connected to the parameters
    assert p.projection.weight.grad is not None
    before = p.prototypes.clone()
    p.em_update()
    assert torch.equal(p.prototypes, before)


def test_label_out_of_range_is_named():
    p = _predictor().train()
    with pytest.raises(ValueError, match="label value 7"):
        p(torch.randn(4, 16), torch.tensor([0, 1, 7, 255]))


def test_nan_embeddings_never_reach_the_prototypes():
    p = _predictor(momentum=0.0).train()
    x, labels = _clustered()
    x[3] = float("nan")
    p(x, labels)
    p.em_update()
    assert torch.isfinite(p.prototypes).all()


def _cfg(**protoseg):
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.MODEL.PREDICTOR.NAME = "protoseg"
    for k, v in protoseg.items():
        setattr(cfg.MODEL.PROTOSEG, k, v)
    return cfg


def test_built_from_config_and_driven_by_the_em_hook():
    cfg = _cfg(
        NUM_PROTOTYPES=3,
        EMBED_DIM=8,
        MOMENTUM=0.5,
        TEMPERATURE=0.07,
        PPC_WEIGHT=0.02,
        PPD_WEIGHT=0.003,
        UPDATE_CORRECT_ONLY=False,
        SEED=3,
    )
    p = build_predictor(cfg, 16, 3)
    assert isinstance(p, ProtoSegPredictor) and isinstance(p, EMModule)
    assert p.prototypes.shape == (3, 3, 8)
    assert (p.momentum, p.temperature, p.ppc_weight, p.ppd_weight) == (0.5, 0.07, 0.02, 0.003)
    model = nn.Sequential(p)
    assert em_modules(model) == [p]
    hook = EMHook(period=2)
    hook.trainer = SimpleNamespace(model=model, iter=0)
    hook.before_train()
    x, labels = _clustered()
    opt = torch.optim.SGD(p.parameters(), lr=0.1)
    history = [p.prototypes.clone()]
    for it in range(4):
        hook.trainer.iter = it
        out = p.train()(x, labels)
        loss = F.cross_entropy(out["logits"], labels) + sum(out["losses"].values())
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        hook.after_step()
        history.append(p.prototypes.clone())
    moved = [not torch.equal(a, b) for a, b in zip(history, history[1:])]
    assert moved == [
        True,
        False,
        True,
        False,
    ]  # updates at iterations 0 and 2 (counter % 2 == 0) only
    assert int(p.num_em_updates) == 2


# ---------------------------------------------------------------------- two ranks
class _ThreadCollective:
    """all_reduce(SUM) between threads standing in for ranks (summed in rank order, so every
    "rank" gets the same bits); a rank that skips the collective makes the barrier time out."""

    def __init__(self, n):
        self.n, self.barrier, self.slots, self.local = (
            n,
            threading.Barrier(n, timeout=20),
            {},
            threading.local(),
        )
        self.calls = [0] * n

    def all_reduce(self, t, *args, **kwargs):
        rank = self.local.rank
        self.calls[rank] += 1
        self.slots[rank] = t.clone()
        self.barrier.wait()
        total = self.slots[0].clone()
        for r in range(1, self.n):
            total += self.slots[r]
        self.barrier.wait()
        t.copy_(total)


def test_two_ranks_keep_identical_prototypes(monkeypatch):
    import gmmseg.gmm.distributed as distributed_module

    coll = _ThreadCollective(2)  # protoseg reduces through gmm/distributed.py
    monkeypatch.setattr(distributed_module, "world_size", lambda: 2)
    monkeypatch.setattr(distributed_module.dist, "all_reduce", coll.all_reduce)
    torch.manual_seed(0)
    ranks = [
        ProtoSegPredictor(
            12, 4, embed_dim=8, num_prototypes=3, momentum=0.5, update_correct_only=False
        ).train()
    ]
    ranks.append(copy.deepcopy(ranks[0]))
    digests, errors = [[], []], []

    def run(rank):
        try:
            coll.local.rank = rank
            p = ranks[rank]
            gen = torch.Generator().manual_seed(100 + rank)  # different data per rank
            for step in range(4):
                labels = torch.randint(0, 4, (100,), generator=gen)
                if rank == 1 and step in (1, 2):
                    labels[:] = 255  # all-ignore batches on one rank only
                p(torch.randn(100, 12, generator=gen), labels)
                p.em_update() if step % 2 == 1 else p.flush()
                h = hashlib.sha256()
                for name, buf in sorted(p.named_buffers()):
                    h.update(
                        name.encode()
                        + buf.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                    )
                digests[rank].append(h.hexdigest())
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert coll.calls == [4, 4]  # one collective per flush / em_update, on both ranks
    assert digests[0] == digests[1] and len(set(digests[0])) == 4
    assert int(ranks[0].num_em_updates) == int(ranks[1].num_em_updates) == 2
