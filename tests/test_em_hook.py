"""EMHook's schedule: the release runs the M-step when its counter (from 0) is a multiple of the
interval, after that iteration's push."""
from types import SimpleNamespace

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


def _locked_out_head(push_correct_only):
    """K = 3 classes, M = 2, empty memory; five labelled steps of classes 0 and 1 whose logits
    always say class 0: class 1 is never classified correctly, class 2 never appears."""
    import torch

    from gmmseg.gmm import GMMPredictor

    torch.manual_seed(0)
    head = GMMPredictor(4, 3, embed_dim=4, num_components=2, memory_size=10, memory_init="empty",
                        push_correct_only=push_correct_only)
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

    head = _locked_out_head(push_correct_only=True)
    assert int(head.num_em_updates) == 5
    assert head.never_updated_classes() == [1, 2]
    with caplog.at_level("WARNING", logger="gmmseg.engine.em_hook"):
        assert warn_never_updated([head], 99) == [[1, 2]]
    assert "classes [1, 2] have never been updated" in caplog.text and "PUSH_CORRECT_ONLY" in caplog.text
    # every labelled row enters: only the absent class 2 stays random, and nothing is logged for a
    # head whose classes have all moved
    assert _locked_out_head(push_correct_only=False).never_updated_classes() == [2]
    assert warn_never_updated([_Recorder()], 0) == [[]]
