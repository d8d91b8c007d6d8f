"""EMHook: runs the EM of every generative predictor in the model, outside back-propagation."""
import logging

from detectron2.engine import HookBase

__all__ = ["EMHook", "em_modules"]

logger = logging.getLogger(__name__)


def em_modules(model):
    """All submodules that take part in EM (`supports_em = True`), in a fixed order."""
    return [m for m in model.modules() if getattr(m, "supports_em", False)]


class EMHook(HookBase):
    """After every iteration: `flush()` (gather the embeddings set aside by every rank and push
    them into the memory). Every `period` iterations: `em_update()` (the M-step).

    Both are collectives when several processes train, and every rank calls them at the same
    iterations, so every rank's GMM stays identical. Register it before the checkpointer, so a
    checkpoint always holds the memory with this iteration's pushes.
    """

    def __init__(self, period: int):
        if period < 1:
            raise ValueError(f"MODEL.GMM.UPDATE_INTERVAL must be >= 1, got {period}")
        self.period = period
        self._modules = None

    def before_train(self):
        self._modules = em_modules(self.trainer.model)
        if self._modules:
            logger.info("EMHook: %d EM module(s), M-step every %d iterations", len(self._modules), self.period)

    def after_step(self):
        update = (self.trainer.iter + 1) % self.period == 0
        for m in self._modules:
            if update:
                m.em_update()  # flushes first
            else:
                m.flush()
