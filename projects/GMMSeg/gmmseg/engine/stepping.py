"""Step a Trainer by hand, one training iteration per call: for timing a training step in the
same process as another (benchmarks/bench_train_step.py, the demo's speed row)."""

from detectron2.engine import hooks as d2_hooks
from detectron2.utils.events import EventStorage

from .trainer import Trainer

__all__ = ["training_stepper"]


def training_stepper(cfg, quiet: bool = True):
    """A function that runs one training iteration of a Trainer built from `cfg` (data loading,
    forward, backward, optimizer step and the hooks: EM flush and M-step, LR schedule) per call.
    Its `trainer` attribute is the Trainer. `quiet`: without detectron2's periodic writer (its
    log lines and ETA mean nothing for a few timed steps)."""
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    if quiet:
        trainer._hooks = [h for h in trainer._hooks if not isinstance(h, d2_hooks.PeriodicWriter)]
    trainer.storage = EventStorage(0)
    trainer.iter = trainer.start_iter = 0
    with trainer.storage:
        trainer.before_train()

    def step():
        with trainer.storage:
            trainer.before_step()
            trainer.run_step()
            trainer.after_step()
        trainer.iter += 1
        trainer.storage.iter = trainer.iter

    step.trainer = trainer
    return step
