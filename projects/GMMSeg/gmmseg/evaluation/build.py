"""build_open_world_evaluators: the calibration / anomaly evaluators that apply to a dataset."""

import logging
from typing import List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator

from .anomaly import AnomalyEvaluator
from .calibration import CalibrationEvaluator

__all__ = ["build_open_world_evaluators", "model_display_name"]

logger = logging.getLogger(__name__)

_PREDICTOR_NAMES = {"gmm": "GMMSeg", "softmax": "Softmax", "protoseg": "ProtoSeg"}


def model_display_name(cfg) -> str:
    """A short model name for plot titles, e.g. "GMMSeg (FPNDecoder)"."""
    predictor = cfg.MODEL.PREDICTOR.NAME if "PREDICTOR" in cfg.MODEL else ""
    name = _PREDICTOR_NAMES.get(predictor, predictor or cfg.MODEL.META_ARCHITECTURE)
    decoder = cfg.MODEL.SEM_SEG_HEAD.get("DECODER", None)
    return f"{name} ({decoder})" if decoder else name


def _has_anomaly_masks(dataset_name: str, first: Optional[dict]) -> bool:
    meta = MetadataCatalog.get(dataset_name)
    for key in ("anomaly_eval", "has_anomaly_masks"):
        flag = getattr(meta, key, None)
        if flag is not None:
            return bool(flag)
    return first is not None and "anomaly_mask_file_name" in first


def build_open_world_evaluators(
    cfg, dataset_name: str, output_dir: Optional[str] = None, distributed: bool = True
) -> List[DatasetEvaluator]:
    """Evaluators for `dataset_name` beyond mIoU:

    * CalibrationEvaluator when the dataset's dicts have "sem_seg_file_name";
    * AnomalyEvaluator when its metadata says anomaly_eval=True (or has_anomaly_masks=True), or,
      if neither is set, when its first dict has "anomaly_mask_file_name".
    Empty when cfg.TEST.OPEN_WORLD.ENABLED is False. Resolution, the memory of the component
    metrics (COMPONENT_MAX_MB) and plots from cfg.TEST.OPEN_WORLD.
    """
    ow = cfg.TEST.OPEN_WORLD
    if not ow.ENABLED:
        return []
    dicts = DatasetCatalog.get(dataset_name)
    first = dicts[0] if len(dicts) else None
    model_name = model_display_name(cfg)
    evaluators: List[DatasetEvaluator] = []
    if first is not None and "sem_seg_file_name" in first:
        evaluators.append(
            CalibrationEvaluator(
                dataset_name,
                output_dir,
                num_bins=ow.CALIBRATION_BINS,
                distributed=distributed,
                model_name=model_name,
                plots=ow.PLOTS,
            )
        )
    if _has_anomaly_masks(dataset_name, first):
        evaluators.append(
            AnomalyEvaluator(
                dataset_name,
                output_dir,
                distributed=distributed,
                max_bins=ow.ANOMALY_MAX_BINS,
                component_max_bytes=int(ow.COMPONENT_MAX_MB * 2**20),
                model_name=model_name,
                plots=ow.PLOTS,
            )
        )
    logger.info(
        f"open-world evaluators for {dataset_name}: {[type(e).__name__ for e in evaluators]}"
    )
    return evaluators
