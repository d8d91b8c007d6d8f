"""Under bfloat16 autocast the (class, component) id of every row the GMM sets aside for its
memory must stay exact (K = 150 classes x M = 5 components: ids up to 749; bfloat16 holds
integers exactly only up to 256), also when the embeddings themselves are bfloat16.

The expected ids are recomputed here from the same bfloat16 embeddings: class * M + the
component the E-step (Sinkhorn, on the float32 likelihoods of those embeddings) picks.
"""

import pytest
import torch

from gmmseg.gmm import GMMPredictor
from gmmseg.gmm.assignment import sinkhorn_assign

K, M = 150, 5


def _predictor():
    return GMMPredictor(
        32,
        K,
        embed_dim=16,
        num_components=M,
        memory_size=8,
        pushes_per_step=2,
        push_rows="all",
        memory_init="empty",
    ).train()


def _batch(n=2048, first_class=100):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 32, generator=g)
    y = first_class + torch.arange(n) % (K - first_class)  # classes 100..149: ids 500..749
    return x, y


def test_ids_of_rows_set_aside_under_bf16_autocast_are_exact():
    p, (x, y) = _predictor(), _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p(x, y)
        e = p.embed(x)
    assert e.dtype == torch.float32  # the projection runs in bfloat16, the normalisation not
    own = p.component_log_likelihood(e).gather(1, y.view(-1, 1, 1).expand(-1, 1, M)).squeeze(1)
    expected = y * M + sinkhorn_assign(own, y, K).argmax(1)
    rows = torch.cat(p._pending)
    assert rows.dtype == torch.float32
    assert torch.equal(rows[:, 0], expected.float())
    assert torch.equal(rows[:, 1:], e.float())


def test_rows_enter_the_memory_of_their_own_class_under_bf16_autocast():
    p, (x, y) = _predictor(), _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p(x, y)
    assert p.flush() == 2 * (K - 100) * M  # 2 rows per (class, component): every group got some
    received = p.received_data.view(K, M)
    assert received[100:].all() and not received[:100].any()
    assert torch.equal(p.memory.filled.view(K, M)[100:], torch.full((K - 100, M), 2))
    assert not p.memory.filled.view(K, M)[:100].any()


def test_ids_are_exact_with_bf16_embeddings():
    p, (x, y) = _predictor(), _batch()
    e = p.embed(x).detach().bfloat16()
    assignment = torch.arange(y.numel()) % M
    logits = torch.zeros(y.numel(), K)
    p._set_aside(e, y, assignment, logits)
    rows = torch.cat(p._pending)
    assert torch.equal(rows[:, 0], (y * M + assignment).float()) and torch.equal(
        rows[:, 1:], e.float()
    )


def test_too_many_groups_for_float32_ids_is_refused():
    with pytest.raises(ValueError, match="num_classes \\* num_components"):
        GMMPredictor(4, 1 << 22, embed_dim=2, num_components=5, memory_size=0, memory_init="empty")
