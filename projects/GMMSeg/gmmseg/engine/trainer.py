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
import os
import weakref

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import (DatasetCatalog, MetadataCatalog, build_detection_test_loader,
                             build_detection_train_loader, get_detection_dataset_dicts)
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.evaluation import DatasetEvaluators, SemSegEvaluator
from detectron2.projects.deeplab import build_lr_scheduler as build_deeplab_lr_scheduler
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from ..data import SemSegDatasetMapper, build_class_balanced_sampler, make_sem_seg_loading_fn
from ..evaluation import build_open_world_evaluators
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
        mapper = SemSegDatasetMapper(cfg, is_train=True)
        if cfg.DATALOADER.SAMPLER_TRAIN == "ClassBalancedSampler":
            # detectron2's loader does not know this sampler by name: pass it explicitly
            dicts = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=False)
            sampler = build_class_balanced_sampler(cfg, dicts)
            return build_detection_train_loader(cfg, mapper=mapper, dataset=dicts, sampler=sampler)
        return build_detection_train_loader(cfg, mapper=mapper)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=SemSegDatasetMapper(cfg, is_train=False))

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_deeplab_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluators = []
        meta = MetadataCatalog.get(dataset_name)
        first = DatasetCatalog.get(dataset_name)[:1]
        # mIoU wherever there are semantic labels (Cityscapes' train-id maps included: the same
        # 19-class mIoU as CityscapesSemSegEvaluator, without cityscapesscripts); the anomaly
        # benchmarks have none. The loading fn applies a dataset's label remapping (CamVid open set).
        has_labels = bool(first) and "sem_seg_file_name" in first[0]
        if has_labels and meta.get("evaluator_type", "sem_seg") in ("sem_seg", "cityscapes_sem_seg"):
            evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder,
                                              sem_seg_loading_fn=make_sem_seg_loading_fn(dataset_name)))
        evaluators.extend(build_open_world_evaluators(cfg, dataset_name, output_folder))
        if not evaluators:
            raise ValueError(f"No evaluator applies to dataset {dataset_name!r}: it has neither semantic "
                             f"labels (sem_seg_file_name) nor anomaly masks")
        return DatasetEvaluators(evaluators)


