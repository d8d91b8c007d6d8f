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
