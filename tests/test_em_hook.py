"""EMHook's schedule: the release runs the M-step when its counter (from 0) is a multiple of the
interval, after that iteration's push."""

from types import SimpleNamespace

import torch
from torch import nn

from gmmseg.engine.em_hook import EMHook
from gmmseg.gmm import EMModule


class _Recorder(EMModule):
    def __init__(self):
        super().__init__(in_channels=2, num_classes=2, embed_dim=2, ignore_value=255)
        self.calls = []

    def flush(self):
        self.calls.append("flush")

    def em_update(self):
        self.calls.append("m_step")


def test_m_steps_at_iterations_0_5_10():
    rec = _Recorder()
    hook = EMHook(period=5)
    hook.trainer = SimpleNamespace(model=nn.Sequential(rec), iter=0)
    hook.before_train()
    for it in range(12):
        hook.trainer.iter = it
        hook.after_step()
    assert [i for i, c in enumerate(rec.calls) if c == "m_step"] == [0, 5, 10]
    assert len(rec.calls) == 12  # one call per iteration (em_update flushes first itself)


def test_a_later_first_m_step():
    rec = _Recorder()
    hook = EMHook(period=5, start=4)
    hook.trainer = SimpleNamespace(model=nn.Sequential(rec), iter=0)
    hook.before_train()
    for it in range(15):
        hook.trainer.iter = it
        hook.after_step()
    assert [i for i, c in enumerate(rec.calls) if c == "m_step"] == [4, 9, 14]


def _locked_out_head(push_rows):
    """K = 3 classes, M = 2, empty memory; five labelled steps of classes 0 and 1 whose logits
    always say class 0: class 1 is never classified correctly, class 2 never appears."""
    import torch

    from gmmseg.gmm import GMMPredictor

    torch.manual_seed(0)
    head = GMMPredictor(
        4,
        3,
        embed_dim=4,
        num_components=2,
        memory_size=10,
        memory_init="empty",
        push_rows=push_rows,
    )
    e = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    logits = torch.tensor([[5.0, 0.0, 0.0]]).expand(8, 3)
    for _ in range(5):
        head.learn(e, head.component_log_likelihood(e), logits, labels)
        head.em_update()
    return head


def test_never_updated_classes_name_the_locked_out_class(caplog):
    # correct-only pushes into an empty memory: class 1's rows are all dropped, so no M-step ever
    # moves it (the Mask2Former GMM on CamVid: building and road, docs/MASK2FORMER.md)
    from gmmseg.engine.em_hook import warn_never_updated

    head = _locked_out_head(push_rows="correct")
    assert int(head.num_em_updates) == 5
    assert head.never_updated_classes() == [1, 2]
    with caplog.at_level("WARNING", logger="gmmseg.engine.em_hook"):
        assert warn_never_updated([head], 99) == [[1, 2]]
    assert "classes [1, 2] have never been updated" in caplog.text and "PUSH_ROWS" in caplog.text
    # every labelled row enters: only the absent class 2 stays random, and nothing is logged for a
    # head whose classes have all moved
    assert _locked_out_head(push_rows="all").never_updated_classes() == [2]
    assert warn_never_updated([_Recorder()], 0) == [[]]


def test_a_class_with_some_components_updated_is_not_never_updated():
    # K = 3, M = 2: class 0 both components moved, class 1 only its second, class 2 none (a min over
    # the components instead of a max would name class 1 too)
    from gmmseg.gmm import GMMPredictor

    head = GMMPredictor(4, 3, embed_dim=4, num_components=2, memory_size=10)
    head.updates_per_component.copy_(torch.tensor([3, 1, 0, 2, 0, 0]))
    assert head.never_updated_classes() == [2]


def test_the_hook_checks_coverage_early_at_every_period_and_at_the_end(monkeypatch):
    import gmmseg.engine.em_hook as em_hook

    checked = []
    monkeypatch.setattr(
        em_hook, "warn_locked_out", lambda mods, it, prev, names: checked.append(it) or []
    )
    monkeypatch.setattr(em_hook, "verify_em_state_across_ranks", lambda *a, **k: "")
    hook = EMHook(period=5, verify_period=10, early_check=3, verify_at_end=False)
    hook.trainer = SimpleNamespace(model=nn.Sequential(_Recorder()), iter=0, max_iter=25)
    hook.before_train()
    for it in range(25):
        hook.trainer.iter = it
        hook.after_step()
    hook.trainer.iter = 25
    hook.after_train()
    assert checked == [2, 9, 19, 24]
