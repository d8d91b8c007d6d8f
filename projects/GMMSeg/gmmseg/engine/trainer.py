"""Trainer: detectron2's DefaultTrainer with the project's model pieces, EM hook and evaluators.

Differences from DefaultTrainer, each for a reason:
- DDP on CPU: detectron2's create_ddp_model passes device_ids=[local_rank], which
  DistributedDataParallel rejects for CPU modules; here device_ids is None on CPU.
- the EM hook runs right after the optimizer step and before the checkpointer, and checks at
  every checkpoint period and at the end that all ranks hold the same EM state;
- checkpoints are read safely and checked against the config (gmmseg.checkpoint.GMMSegCheckpointer);
  every rank runs the checkpointer hook (saving a sharded GMM memory gathers it), rank 0 writes;
  only the newest SOLVER.CHECKPOINT_MAX_TO_KEEP periodic ones stay on disk (each holds the GMM bank);
- `--resume` continues exactly: the sampler skips the images the first run consumed, all random
  generators are seeded per iteration, and the seeds are checkpointed (gmmseg.engine.resume);
- the dataset mapper validates label values and names the file of a bad one;
- SOLVER.AMP.ENABLED: mixed precision in SOLVER.AMP.PRECISION "fp16" or "bf16", on CUDA or the CPU
  (engine/amp.py; detectron2's AMPTrainer is float16 and CUDA only);
- evaluators: detectron2's SemSegEvaluator, which also warns about a labelled class never predicted
  (evaluation/sem_seg.py), + the open-world evaluators when they are available;
- LR schedules from detectron2.projects.deeplab (WarmupPolyLR) as well as detectron2's own.
"""

import logging
import os
import weakref

from detectron2.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data.build import _train_loader_from_config
from detectron2.engine import DefaultTrainer, TrainerBase
from detectron2.engine import hooks as d2_hooks
from detectron2.evaluation import DatasetEvaluators
from detectron2.projects.deeplab import build_lr_scheduler as build_deeplab_lr_scheduler
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import GMMSegCheckpointer
from ..data import SemSegDatasetMapper, build_class_balanced_sampler, make_sem_seg_loading_fn
from ..data.mapper import build_sem_seg_test_loader
from ..evaluation import CheckedSemSegEvaluator, build_open_world_evaluators
from ..gmm import em_modules, named_em_modules
from ..solver import build_optimizer
from .amp import build_step_trainer
from .em_hook import EMHook
from .resume import IterationSeedHook, ResumableSampler, consumed_per_rank, shared_run_seed

__all__ = ["Trainer", "create_ddp_model", "memory_buffer_names"]


def memory_buffer_names(model):
    """Fully qualified names of every GMM memory buffer (bank, pointers, statistics) of `model`."""
    return [
        f"{name}.{buffer}" if name else buffer
        for name, module in named_em_modules(model)
        for buffer in module.memory_buffer_names()
    ]


def create_ddp_model(model, **kwargs):
    """DistributedDataParallel when several processes train; on CPU without device_ids.

    DDP broadcasts rank 0's parameters and buffers once, at construction; the GMM memories are
    left out: a sharded memory's bank differs by design on every rank, and a replicated one is
    built identically on every rank from MODEL.GMM.SEED (no GB-sized broadcast)."""
    if comm.get_world_size() == 1:
        return model
    device = next(model.parameters()).device
    if device.type == "cuda":
        kwargs.setdefault("device_ids", [comm.get_local_rank()])
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        model, memory_buffer_names(model)
    )
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
        for em_module in em_modules(
            model
        ):  # refuses e.g. a GMM built for inference (no memory bank)
            em_module.check_trainable()
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        # broadcast_buffers=False: the GMM buffers (the bank: GBs) are never broadcast; EM keeps
        # them identical. DDP still syncs all parameters and buffers from rank 0 once, here.
        model = create_ddp_model(model, broadcast_buffers=False)
        # SOLVER.AMP.ENABLED: autocast in SOLVER.AMP.PRECISION, the GMM in float32 (engine/amp.py)
        self._trainer = build_step_trainer(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = GMMSegCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        # resume state (gmmseg.engine.resume): the sampler to fast-forward and the run seed
        self._resumable_sampler = getattr(data_loader, "resumable_sampler", None)
        self._run_seed = shared_run_seed(cfg.SEED)
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume=True):
        """DefaultTrainer.resume_or_load (safe, checked loading), then fast-forward the sampler
        past the images iterations 0 .. start_iter - 1 consumed."""
        super().resume_or_load(resume=resume)
        if self._resumable_sampler is not None:
            self._resumable_sampler.start = consumed_per_rank(
                self.start_iter, self.cfg.SOLVER.IMS_PER_BATCH, comm.get_world_size()
            )
            if self.start_iter > 0:
                logging.getLogger(__name__).info(
                    "Resuming at iteration %d: the sampler skips the first %d images of this rank's stream (seed %s)",
                    self.start_iter,
                    self._resumable_sampler.start,
                    self._resumable_sampler.seed,
                )

    def state_dict(self):
        ret = super().state_dict()
        sampler = self._resumable_sampler
        ret["gmmseg"] = {
            "run_seed": int(self._run_seed),
            "sampler_seed": None if sampler is None or sampler.seed is None else int(sampler.seed),
            "ims_per_batch": int(self.cfg.SOLVER.IMS_PER_BATCH),
            "world_size": int(comm.get_world_size()),
        }
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        saved = state_dict.get("gmmseg")
        if not saved:  # a checkpoint from before this state existed: resume as detectron2 does
            return
        self._run_seed = int(saved["run_seed"])
        for h in self._hooks:
            if isinstance(h, IterationSeedHook):
                h.run_seed = self._run_seed
        if self._resumable_sampler is not None:
            self._resumable_sampler.seed = saved.get("sampler_seed")
        if saved.get("ims_per_batch") != self.cfg.SOLVER.IMS_PER_BATCH:
            logging.getLogger(__name__).warning(
                "Resuming with SOLVER.IMS_PER_BATCH=%s, the checkpoint was trained with %s: the data stream "
                "is continued at iteration * batch size, not where the first run stopped",
                self.cfg.SOLVER.IMS_PER_BATCH,
                saved.get("ims_per_batch"),
            )

    def build_hooks(self):
        hooks = super().build_hooks()
        # keep the newest SOLVER.CHECKPOINT_MAX_TO_KEEP periodic checkpoints (each holds the GMM bank: GBs)
        keep = self.cfg.SOLVER.CHECKPOINT_MAX_TO_KEEP
        if keep < 0:
            raise ValueError(
                f"SOLVER.CHECKPOINT_MAX_TO_KEEP is {keep}; give the number of periodic checkpoints "
                f"to keep (0 keeps all)"
            )
        hooks = [
            d2_hooks.PeriodicCheckpointer(
                self.checkpointer, self.cfg.SOLVER.CHECKPOINT_PERIOD, max_to_keep=keep or None
            )
            if isinstance(h, d2_hooks.PeriodicCheckpointer)
            else h
            for h in hooks
        ]
        if not any(isinstance(h, d2_hooks.PeriodicCheckpointer) for h in hooks):
            # detectron2 gives the checkpointer hook to rank 0 only; saving a sharded GMM memory is a
            # collective (every rank sends its shard), so the other ranks take part too: they
            # write and delete nothing (save_to_disk is False on them, no retention)
            at = next(
                (i for i, h in enumerate(hooks) if isinstance(h, d2_hooks.EvalHook)), len(hooks)
            )
            hooks.insert(
                at,
                d2_hooks.PeriodicCheckpointer(self.checkpointer, self.cfg.SOLVER.CHECKPOINT_PERIOD),
            )
        # The EM hook right after the optimizer step (IterationTimer, LRScheduler), before
        # PreciseBN / checkpointer / evaluation / writers: a checkpoint holds this iteration's pushes.
        later = (
            d2_hooks.PreciseBN,
            d2_hooks.PeriodicCheckpointer,
            d2_hooks.EvalHook,
            d2_hooks.PeriodicWriter,
        )
        at = next((i for i, h in enumerate(hooks) if isinstance(h, later)), len(hooks))
        names = self.cfg.DATASETS.TRAIN
        classes = MetadataCatalog.get(names[0]).get("stuff_classes") if names else None
        # the first coverage check after a tenth of the schedule (at most 1,000 iterations)
        early = min(max(self.cfg.SOLVER.MAX_ITER // 10, 1), 1000)
        hooks.insert(
            at,
            EMHook(
                self.cfg.MODEL.GMM.UPDATE_INTERVAL,
                verify_period=self.cfg.SOLVER.CHECKPOINT_PERIOD,
                start=self.cfg.MODEL.GMM.UPDATE_START,
                early_check=early,
                class_names=classes,
            ),
        )
        # first of all: seed the generators for this iteration, before its data are loaded
        hooks.insert(0, IterationSeedHook(self._run_seed))
        g = self.cfg.MODEL.GMM
        if g.EM_LOOPS > 1 and self.cfg.SOLVER.CHECKPOINT_PERIOD % g.UPDATE_INTERVAL != 0:
            logging.getLogger(__name__).warning(
                "MODEL.GMM.EM_LOOPS > 1 keeps the rows of the current EM window outside the checkpoint: "
                "a run resumed from a checkpoint between M-steps is not exact. Make SOLVER.CHECKPOINT_PERIOD "
                "a multiple of MODEL.GMM.UPDATE_INTERVAL (%d).",
                g.UPDATE_INTERVAL,
            )
        return hooks

    @classmethod
    def build_train_loader(cls, cfg):
        """detectron2's train loader with the checked mapper, the class-balanced sampler when
        DATALOADER.SAMPLER_TRAIN names it, and the sampler wrapped in a ResumableSampler (kept
        as the loader's `resumable_sampler` attribute)."""
        mapper = SemSegDatasetMapper(cfg, is_train=True)
        if cfg.DATALOADER.SAMPLER_TRAIN == "ClassBalancedSampler":
            # detectron2's loader does not know this sampler by name: pass it explicitly
            dicts = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=False)
            kwargs = _train_loader_from_config(
                cfg, mapper, dataset=dicts, sampler=build_class_balanced_sampler(cfg, dicts)
            )
        else:
            kwargs = _train_loader_from_config(cfg, mapper)
        sampler = kwargs["sampler"]
        if sampler is not None:
            kwargs["sampler"] = ResumableSampler(sampler)
        loader = build_detection_train_loader(**kwargs)
        loader.resumable_sampler = kwargs["sampler"]
        return loader

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_sem_seg_test_loader(cfg, dataset_name)

    @classmethod
    def build_optimizer(cls, cfg, model):
        # SGD or AdamW (SOLVER.OPTIMIZER), backbone lr multiplier, no decay on norms/embeddings
        return build_optimizer(cfg, model)

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
        if has_labels and meta.get("evaluator_type", "sem_seg") in (
            "sem_seg",
            "cityscapes_sem_seg",
        ):
            evaluators.append(
                CheckedSemSegEvaluator(
                    dataset_name,
                    distributed=True,
                    output_dir=output_folder,
                    sem_seg_loading_fn=make_sem_seg_loading_fn(dataset_name),
                )
            )
        evaluators.extend(build_open_world_evaluators(cfg, dataset_name, output_folder))
        if not evaluators:
            raise ValueError(
                f"No evaluator applies to dataset {dataset_name!r}: it has neither semantic "
                f"labels (sem_seg_file_name) nor anomaly masks"
            )
        return DatasetEvaluators(evaluators)
