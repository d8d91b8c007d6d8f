"""No class left behind: the release's correct-only pushes can lock a class out of a GMM whose
memory starts random, silently; PUSH_ROWS "correct_first" cannot; the coverage counters and the
hook's warning show it (gmm/coverage.py, engine/em_hook.py)."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gmmseg.engine.em_hook import warn_locked_out
from gmmseg.gmm import GMMPredictor
from gmmseg.gmm.coverage import class_coverage, coverage_warnings

D = 4
V0 = torch.tensor([1.0, -1.0, 0.0, 0.0]) / math.sqrt(2)
# class 1's pixels lie 15 degrees from class 0's, towards U: near enough for class 0's tight
# Gaussian to out-score class 1's broad one, fitted to random rows, at class 1's own pixels
U = torch.tensor([0.0, 0.0, 1.0, -1.0]) / math.sqrt(2)
V1 = math.cos(math.radians(15)) * V0 + math.sin(math.radians(15)) * U


def _head(push_rows):
    head = GMMPredictor(
        D,
        2,
        embed_dim=D,
        num_components=1,
        memory_size=20,
        pushes_per_step=5,
        push_rows=push_rows,
        memory_init="random",
        mean_momentum=0.0,
        seed=3,
        projection=nn.Identity(),
    )
    # the state after the first M-steps of a release run: both classes fitted to the random rows the
    # memory starts with; then class 0 learnt (its Gaussian on its pixels), class 1 not yet
    count, s1, s2 = head.memory.statistics()
    head._m_step(count, s1, s2, torch.ones(2, dtype=torch.bool))
    with torch.no_grad():
        head.means[0, 0] = V0
        head.stds[0, 0] = 0.1
    return head.train()


def _batch(gen, v1):
    """10 pixels of each class around V0 / v1 (zero-mean rows: LayerNorm keeps their direction)."""
    noise = 0.03 * torch.randn(20, D, generator=gen)
    noise -= noise.mean(1, keepdim=True)
    x = torch.cat([V0.expand(10, D), v1.expand(10, D)]) + noise
    return x, torch.tensor([0] * 10 + [1] * 10)


def _train(head, steps=30, v1=V1):
    gen = torch.Generator().manual_seed(0)
    recall = []
    for _ in range(steps):
        x, y = _batch(gen, v1)
        out = head(x, y)
        recall.append(float((out["logits"][10:].argmax(1) == 1).float().mean()))
        head.em_update()  # flush + M-step every step
    return recall


def test_correct_only_pushes_lock_a_class_out_silently():
    head = _head("correct")
    recall = _train(head)
    # class 1 is never predicted: it never receives a real row, and every M-step "updates" it from
    # the random initial rows, so it is not "never updated" and its Gaussian stays broad
    assert max(recall) == 0.0
    assert int(head.rows_pushed[1]) == 0 and int(head.rows_pushed[0]) > 0
    assert head.never_updated_classes() == []
    assert float(head.stds[1].mean()) > 3 * float(head.stds[0].mean())
    # the training counters: 30 steps x 10 labelled pixels per class, class 1 never right
    assert head.training_pixels[:, 1].tolist() == [300, 0, 0]
    assert head.training_pixels[0, 0] == 300 and head.training_pixels[1, 0] == 300


def test_correct_first_pushes_train_the_class():
    head = _head("correct_first")
    recall = _train(head)
    assert recall[0] == 0.0 and recall[-1] == 1.0  # locked out at first, learnt after M-steps
    assert int(head.rows_pushed[1]) == 30 * 5  # the quota every step, from misclassified rows first
    assert float(F.cosine_similarity(head.means[1, 0], V1, dim=0)) > 0.99
    cov = head.coverage()
    assert cov.real_rows.tolist() == [20, 20] and coverage_warnings(cov) == []


def test_correct_first_equals_correct_where_every_group_has_enough_correct_rows():
    # class 1 90 degrees away, its Gaussian set on its pixels: every pixel is classified right from
    # the start, so the two rules push the same rows and reach bitwise the same state
    heads = [_head(rule) for rule in ("correct", "correct_first")]
    for h in heads:
        with torch.no_grad():
            h.means[1, 0], h.stds[1, 0] = U, 0.1
        assert min(_train(h, steps=8, v1=U)) == 1.0
        assert h.training_pixels[1].tolist() == [80, 80]
    a, b = (dict(h.named_buffers()) for h in heads)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_the_hook_warns_about_the_locked_out_class(caplog):
    head = _head("correct")
    _train(head)
    with caplog.at_level("WARNING", logger="gmmseg.engine.em_hook"):
        now = warn_locked_out([head], 29, class_names=["road", "bicyclist"])
    assert (
        "class 1 (bicyclist): (nearly) no real rows: 0 of its 20 memory rows are real (median class: 10)"
        in caplog.text
    )
    assert "class 1 (bicyclist): (nearly) never predicted: recall 0.00 % of 300" in caplog.text
    assert "class 0" not in caplog.text and "PUSH_ROWS 'correct_first'" in caplog.text
    # the next check looks at the pixels since this one: 5 more steps, 50 more labelled pixels
    caplog.clear()
    _train(head, steps=5)
    with caplog.at_level("WARNING", logger="gmmseg.engine.em_hook"):
        warn_locked_out([head], 34, previous=now)
    assert "recall 0.00 % of 50 labelled" in caplog.text
    caplog.clear()
    fixed = _head("correct_first")
    _train(fixed)
    with caplog.at_level("WARNING", logger="gmmseg.engine.em_hook"):
        warn_locked_out([fixed], 29)
    assert caplog.text == ""


def test_class_coverage_by_hand():
    # K = 3, M = 2, rings of 10: class 0 pushed 30 + 4 rows (10 + 4 real), class 1 6 + 0, class 2 0
    cov = class_coverage(
        torch.tensor([30, 4, 6, 0, 0, 0]),
        torch.tensor([[100, 50, 0], [90, 1, 0], [95, 2, 3]]),
        num_components=2,
        memory_size=10,
    )
    assert cov.real_rows.tolist() == [14, 6, 0] and cov.capacity == 20
    # class 2 is not labelled: nothing said about it; class 1 has 6 real rows against a median of
    # 10 (over classes 0 and 1): enough; its recall 1 / 50 = 2 % is above 1 %
    assert coverage_warnings(cov) == []
    assert [c for c, _ in coverage_warnings(cov, min_share=0.5)] == []
    assert [c for c, _ in coverage_warnings(cov, min_share=0.7)] == [1]
    assert [c for c, _ in coverage_warnings(cov, min_recall=0.03)] == [1]
    later = class_coverage(
        torch.tensor([30, 4, 6, 0, 0, 0]),
        torch.tensor([[200, 150, 0], [190, 1, 0], [195, 2, 103]]),
        2,
        10,
    )
    window = later.since(cov)
    assert window.labelled.tolist() == [100, 100, 0] and window.correct.tolist() == [100, 0, 0]
    assert [c for c, _ in coverage_warnings(later, window)] == [1]  # 0 of its last 100 pixels right


@pytest.mark.parametrize("bad", ["correct_only", True])
def test_a_bad_push_rule_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="push_rows must be one of"):
        GMMPredictor(D, 2, embed_dim=D, push_rows=bad)
