"""The paper's ablation switches (Tables 4, 5a, 5b, 8), each built from the config, trained one
step with finite losses, and shown to change what it claims to change:

    MODEL.GMM.EM_ALGORITHM    "sinkhorn" | "vanilla"      E-step with / without equipartition
    MODEL.GMM.EM_LOOPS        E/M alternations per M-step call
    MODEL.GMM.NUM_COMPONENTS  Gaussians per class
    MODEL.GMM.MEMORY_SIZE     0 = the M-step sees only the embeddings of the batch
    MODEL.GMM.DISCRIMINATIVE  means and stds learned by gradient, no EM
"""

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg

from gmmseg import add_gmmseg_config
from gmmseg.gmm import GMMPredictor
from gmmseg.modeling.predictors import build_predictor

IN, K, D = 16, 3, 8


def _cfg(**gmm):
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.MODEL.PREDICTOR.NAME = "gmm"
    g = cfg.MODEL.GMM
    g.EMBED_DIM, g.NUM_COMPONENTS, g.MEMORY_SIZE, g.MEMORY_INIT = D, 2, 50, "empty"
    g.PUSH_ROWS = "all"
    g.PROJECTION = "linear"  # an identity projection makes the EM's inputs known (see below)
    for k, v in gmm.items():
        setattr(g, k, v)
    return cfg


def _build(**gmm):
    p = build_predictor(_cfg(**gmm), IN, K)
    assert isinstance(p, GMMPredictor)
    return p.train()


def _identity_projection(p):
    with torch.no_grad():
        p.projection.weight.zero_()
        p.projection.bias.zero_()
        p.projection.weight[:D, :D] = torch.eye(D)


def _data(n=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, IN, generator=g), torch.randint(0, K, (n,), generator=g)


def _train_step(p, x, labels, update=True):
    """One iteration as the trainer runs it: forward, loss, backward, SGD step, then the hook."""
    opt = torch.optim.SGD(p.parameters(), lr=0.1)
    out = p(x, labels)
    losses = {"loss_ce": F.cross_entropy(out["logits"], labels, ignore_index=255), **out["losses"]}
    assert all(torch.isfinite(v) for v in losses.values()), losses
    opt.zero_grad()
    sum(losses.values()).backward()
    opt.step()
    p.em_update() if update else p.flush()
    return out, losses


SWITCHES = [
    {"EM_ALGORITHM": "sinkhorn"},
    {"EM_ALGORITHM": "vanilla"},
    {"EM_LOOPS": 3},
    {"EM_LOOPS": 3, "EM_ALGORITHM": "vanilla"},
    {"NUM_COMPONENTS": 1},
    {"NUM_COMPONENTS": 5},
    {"MEMORY_SIZE": 0},
    {"DISCRIMINATIVE": True},
]


@pytest.mark.parametrize(
    "switch", SWITCHES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items())
)
def test_each_switch_builds_from_config_and_trains_a_step(switch):
    p = _build(**switch)
    x, labels = _data()
    labels[:10] = 255
    for _ in range(2):
        _train_step(p, x, labels)
    for k, v in switch.items():  # the config reached the module
        attr = {
            "EM_ALGORITHM": "em_algorithm",
            "EM_LOOPS": "em_loops",
            "NUM_COMPONENTS": "num_components",
            "MEMORY_SIZE": None,
            "DISCRIMINATIVE": "learn_by_gradient",
        }[k]
        assert (p.memory.capacity if attr is None else getattr(p, attr)) == v
    assert torch.isfinite(p.means).all() and torch.isfinite(p.current_stds()).all()


def test_defaults_are_the_release():
    g = _cfg().MODEL.GMM
    assert get_cfg().MODEL.get("GMM") is None  # only add_gmmseg_config adds them
    default = add_gmmseg_config(get_cfg()).MODEL.GMM
    assert (
        default.EM_ALGORITHM,
        default.EM_LOOPS,
        default.NUM_COMPONENTS,
        default.MEMORY_SIZE,
        default.DISCRIMINATIVE,
    ) == ("sinkhorn", 1, 5, 32000, False)
    assert g.EM_LOOPS == 1 and not g.DISCRIMINATIVE


# ---------------------------------------------------------------------- EM algorithm
def _skewed(p, n_per_class=60):
    """Every embedding of class c is far closer to component 0 of c than to component 1."""
    _identity_projection(p)
    g = torch.Generator().manual_seed(2)
    labels = torch.arange(K).repeat_interleave(n_per_class)
    centers = torch.full((K, IN), -1.0)
    centers[:, D:] = 0
    for c in range(K):
        centers[c, c] = 3.0
    x = centers[labels] + 0.3 * torch.randn(len(labels), IN, generator=g)
    with torch.no_grad():
        target = F.normalize(
            torch.stack([p.embed(x[labels == c]).mean(0) for c in range(K)]), dim=-1
        )
        p.means[:, 0] = target
        p.means[:, 1] = F.normalize(target + 0.8 * torch.randn(K, D, generator=g), dim=-1)
    return x, labels


def _assignment_counts(p, x, labels):
    p.memory.stat_count.zero_()
    p(x, labels)
    p.flush()
    return p.memory.stat_count.view(K, -1).clone()


def test_vanilla_and_sinkhorn_assignments_differ_on_a_skewed_case():
    counts = {}
    for algo in ("vanilla", "sinkhorn"):
        p = _build(EM_ALGORITHM=algo, MEMORY_SIZE=0, PUSHES_PER_STEP=1000)
        x, labels = _skewed(p)
        counts[algo] = _assignment_counts(p, x, labels)
    # vanilla EM: (nearly) all of a class's embeddings go to its closest component
    assert (counts["vanilla"][:, 0] >= 55).all(), counts["vanilla"]
    # Sinkhorn EM: equipartition, about 30 each
    assert ((counts["sinkhorn"] - 30).abs() <= 8).all(), counts["sinkhorn"]


# ---------------------------------------------------------------------- EM loops
def _mixture(n=400, seed=3):
    """Two well-separated clusters per class in the first D dims (class c: dims 2c and 2c + 1)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, K, (n,), generator=g)
    sub = torch.randint(0, 2, (n,), generator=g)
    x = torch.zeros(n, IN)
    x[torch.arange(n), 2 * labels + sub] = 4.0
    return x + 0.2 * torch.randn(n, IN, generator=g), labels


def _fit(loops, algo):
    p = _build(
        EM_LOOPS=loops, EM_ALGORITHM=algo, MEMORY_SIZE=0, PUSHES_PER_STEP=1000, MEAN_MOMENTUM=0.0
    )
    _identity_projection(p)
    x, labels = _mixture()
    with torch.no_grad():
        p(x, labels)
        p.em_update()
        ll = p.component_log_likelihood(p.embed(x))
    own = ll.gather(1, labels.view(-1, 1, 1).expand(-1, 1, 2)).squeeze(1).amax(1)
    return p, float(own.mean())


@pytest.mark.parametrize("algo", ["vanilla", "sinkhorn"])
def test_more_em_loops_fit_the_data_better(algo):
    p1, ll1 = _fit(1, algo)
    p5, ll5 = _fit(5, algo)
    assert int(p1.updates_per_component.max()) == 1 and int(p5.updates_per_component.max()) == 5
    assert int(p5.num_em_updates) == 1  # one em_update call, five M-steps
    assert not torch.allclose(p1.means, p5.means)
    # momentum 0 and batch-only statistics: the window is the data, 5 loops = 5 hard-EM steps
    assert ll5 > ll1 + 0.1, (ll1, ll5)


def test_em_loops_push_the_window_once_with_its_last_assignment():
    p = _build(EM_LOOPS=3, MEMORY_SIZE=500, PUSHES_PER_STEP=1000)
    x, labels = _data()
    p(x, labels)
    assert p.flush() == 120 and float(p.memory.stat_count.sum()) == 0  # waits in the window
    p(x, labels)
    p.em_update()
    assert float(p.memory.stat_count.sum()) == 240 and int(p.memory.filled.sum()) == 240
    assert p._window == []


# ---------------------------------------------------------------------- components
@pytest.mark.parametrize("m", [1, 5])
def test_components_per_class_shapes(m):
    p = _build(NUM_COMPONENTS=m)
    x, labels = _data()
    out, losses = _train_step(p, x, labels)
    assert p.means.shape == (K, m, D) and p.stds.shape == (K, m, D)
    assert p.component_log_likelihood(p.embed(x)).shape == (120, K, m)
    assert out["logits"].shape == (120, K) and out["log_likelihood"].shape == (120, K)
    assert p.memory.num_groups == K * m
    assert "loss_gmm_aux" in losses


# ---------------------------------------------------------------------- memory size
def _two_batches(memory_size):
    p = _build(NUM_COMPONENTS=1, MEMORY_SIZE=memory_size, PUSHES_PER_STEP=1000, MEAN_MOMENTUM=0.0)
    _identity_projection(p)
    labels = torch.zeros(50, dtype=torch.long)
    g = torch.Generator().manual_seed(4)
    a = torch.zeros(50, IN)
    a[:, 0] = 3.0
    b = torch.zeros(50, IN)
    b[:, 1] = 3.0
    a, b = a + 0.05 * torch.randn(50, IN, generator=g), b + 0.05 * torch.randn(50, IN, generator=g)
    with torch.no_grad():
        for x in (a, b):
            p(x, labels)
            p.em_update()
        ea, eb = F.normalize(p.embed(a).mean(0), dim=0), F.normalize(p.embed(b).mean(0), dim=0)
    return p, ea, eb


def test_memory_zero_uses_only_the_batch():
    p0, ea, eb = _two_batches(0)
    assert p0.memory.bank.numel() == 0
    assert float(p0.means[0, 0] @ eb) > 0.9999  # the second M-step saw batch b only
    p_mem, ea, eb = _two_batches(1000)
    both = F.normalize(ea + eb, dim=0)
    assert float(p_mem.means[0, 0] @ both) > 0.9999  # the bank still holds batch a
    assert float(p_mem.memory.stat_count[0]) == 100


# ---------------------------------------------------------------------- discriminative
def test_discriminative_means_and_stds_learn_by_gradient_only():
    p = _build(DISCRIMINATIVE=True)
    names = {n for n, _ in p.named_parameters()}
    assert {"means", "std_param"} <= names and "stds" not in dict(p.named_buffers())
    assert p.memory.capacity == 0 and p.memory.bank.numel() == 0
    assert torch.allclose(p.current_stds(), torch.ones(K, 2, D), atol=1e-5)  # same start as EM
    x, labels = _data()
    before_means, before_std = p.means.detach().clone(), p.std_param.detach().clone()
    out, _ = _train_step(p, x, labels, update=False)
    assert p.means.grad is not None and p.means.grad.abs().sum() > 0
    assert p.std_param.grad is not None and p.std_param.grad.abs().sum() > 0
    stepped_means, stepped_std = p.means.detach().clone(), p.std_param.detach().clone()
    assert not torch.equal(stepped_means, before_means) and not torch.equal(stepped_std, before_std)
    # the hook's calls are no-ops: nothing set aside, em_update leaves the parameters alone
    assert p._pending == [] and p.flush() == 0
    p(x, labels)
    p.em_update()
    assert torch.equal(p.means.detach(), stepped_means) and torch.equal(
        p.std_param.detach(), stepped_std
    )
    assert int(p.num_em_updates) == 0
    # stds stay above the floor whatever the parameter does
    with torch.no_grad():
        p.std_param.fill_(-50.0)
    assert (p.current_stds() >= 0.01**0.5 - 1e-6).all()


def test_generative_default_keeps_means_out_of_the_optimizer():
    p = _build()
    assert "means" not in {n for n, _ in p.named_parameters()}
    assert not p.means.requires_grad and not p.current_stds().requires_grad
