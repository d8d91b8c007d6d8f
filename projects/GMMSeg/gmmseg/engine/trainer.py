"""Trainer: detectron2's DefaultTrainer with the project's model pieces, EM hook and evaluators.

Differences from DefaultTrainer, each for a reason:
- DDP on CPU: detectron2's create_ddp_model passes device_ids=[local_rank], which
  DistributedDataParallel rejects for CPU modules; here device_ids is None on CPU.
- the EM hook runs right after the optimizer step and before the checkpointer;
- the dataset mapper validates label values and names the file of a bad one;
- evaluators: SemSegEvaluator (+ the open-world evaluators when they are available);
- LR schedules from detectron2.projects.deeplab (WarmupPolyLR) as well as detectron2's own.
"""
import logging
import weakref

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.evaluation import DatasetEvaluators, SemSegEvaluator
from detectron2.projects.deeplab import build_lr_scheduler as build_deeplab_lr_scheduler
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from ..data.mapper import SemSegDatasetMapper
from .em_hook import EMHook

__all__ = ["Trainer", "create_ddp_model"]


def create_ddp_model(model, **kwargs):
    """DistributedDataParallel when several processes train; on CPU without device_ids."""
    if comm.get_world_size() == 1:
        return model
    device = next(model.parameters()).device
    if device.type == "cuda":
        kwargs.setdefault("device_ids", [comm.get_local_rank()])
    return DistributedDataParallel(model, **kwargs)


class Trainer(DefaultTrainer):
    def __init__(self, cfg):
        # DefaultTrainer.__init__, with the project's create_ddp_model (see module docstring).
        TrainerBase.__init__(self)
        logger = logging.getLogger("detectron2")
        if not logger.isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        hooks = super().build_hooks()
        # right after IterationTimer and LRScheduler, before PreciseBN / checkpointer / eval
        hooks.insert(2, EMHook(self.cfg.MODEL.GMM.UPDATE_INTERVAL))
        return hooks

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=SemSegDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=SemSegDatasetMapper(cfg, is_train=False))

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_deeplab_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        import os

        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluators = []
        meta = MetadataCatalog.get(dataset_name)
        if meta.get("evaluator_type", "sem_seg") == "sem_seg":
            evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
        try:
            from ..evaluation import build_open_world_evaluators
        except ImportError:
            build_open_world_evaluators = None
        if build_open_world_evaluators is not None:
            evaluators.extend(build_open_world_evaluators(cfg, dataset_name, output_folder))
        return DatasetEvaluators(evaluators)


