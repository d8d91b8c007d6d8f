"""add_maskformer2_config(cfg): the Mask2Former keys, named as in the official release.

Key names and defaults follow the official `add_maskformer2_config`, so its semantic-segmentation
yaml files merge into a config that has them. Differences, each on purpose:
- SOLVER.OPTIMIZER defaults to "SGD" and SOLVER.BACKBONE_MULTIPLIER to 1.0 (official: "ADAMW" and
  0.1). The defaults are shared with the per-pixel models, whose recipes are SGD without a backbone
  multiplier; every Mask2Former config of this project sets "ADAMW" and 0.1 explicitly.
- keys of the official release that only its Swin backbone, instance/panoptic inference or LSJ
  augmentation read are still added (so official files merge) but are unused here; MODEL.SWIN is
  not added (Swin comes from timm, see MODEL.TIMM).
- MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD is new: the official pixel
  decoder hard-codes 1024, which stays the default; small test/demo models set it lower.
- MODEL.MASK_FORMER.TEST.CLASS_TEMPERATURE is new: a post-hoc temperature of the query class
  logits at inference, 1.0 (off) by default, so the release's behaviour is the default.
"""

from detectron2.config import CfgNode as CN

from ...zoo_config import set_default

__all__ = ["add_maskformer2_config"]


def add_maskformer2_config(cfg):
    """Add the Mask2Former keys to a detectron2 config (in place). Idempotent."""
    if hasattr(cfg.MODEL, "MASK_FORMER"):
        return cfg
    # ---- data (read by the official dataset mappers; kept for config compatibility) ---------
    set_default(cfg.INPUT, "DATASET_MAPPER_NAME", "mask_former_semantic")
    set_default(cfg.INPUT, "COLOR_AUG_SSD", False)
    set_default(cfg.INPUT.CROP, "SINGLE_CATEGORY_MAX_AREA", 1.0)
    set_default(cfg.INPUT, "SIZE_DIVISIBILITY", -1)
    set_default(cfg.INPUT, "IMAGE_SIZE", 1024)  # LSJ augmentation (instance/panoptic recipes)
    set_default(cfg.INPUT, "MIN_SCALE", 0.1)
    set_default(cfg.INPUT, "MAX_SCALE", 2.0)

    # ---- solver (read by gmmseg.solver.build_optimizer) ---------------
    set_default(cfg.SOLVER, "OPTIMIZER", "SGD")  # "SGD" | "ADAMW"; official default "ADAMW"
    set_default(cfg.SOLVER, "BACKBONE_MULTIPLIER", 1.0)  # lr factor of backbone.*; official 0.1
    set_default(cfg.SOLVER, "WEIGHT_DECAY_EMBED", 0.0)  # weight decay of nn.Embedding weights

    mf = cfg.MODEL.MASK_FORMER = CN()
    # ---- losses -----------------------------------------------------------------------------
    mf.DEEP_SUPERVISION = True  # losses on the prediction after every decoder layer
    mf.NO_OBJECT_WEIGHT = 0.1  # cross-entropy weight of the "no object" class
    mf.CLASS_WEIGHT = 1.0  # (the Mask2Former configs use 2.0, 5.0, 5.0)
    mf.DICE_WEIGHT = 1.0
    mf.MASK_WEIGHT = 20.0
    # ---- transformer decoder ----------------------------------------------------------------
    mf.NHEADS = 8  # also the heads of the deformable pixel-decoder encoder (as the release)
    mf.DROPOUT = 0.1  # pixel-decoder encoder only (decoder layers have none, as the release)
    mf.DIM_FEEDFORWARD = 2048
    mf.ENC_LAYERS = 0  # unused by Mask2Former (MaskFormer's transformer encoder)
    mf.DEC_LAYERS = 6  # predictions: the learnable queries + DEC_LAYERS - 1 decoder layers
    mf.PRE_NORM = False
    mf.HIDDEN_DIM = 256
    mf.NUM_OBJECT_QUERIES = 100
    mf.TRANSFORMER_IN_FEATURE = "res5"  # Mask2Former: "multi_scale_pixel_decoder"
    mf.ENFORCE_INPUT_PROJ = False
    mf.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"
    mf.SIZE_DIVISIBILITY = 32  # pad inputs to a multiple of this; < 0: the backbone's
    # ---- point-sampled mask losses and matching costs (PointRend sampling) -----------------
    mf.TRAIN_NUM_POINTS = 112 * 112
    mf.OVERSAMPLE_RATIO = 3.0
    mf.IMPORTANCE_SAMPLE_RATIO = 0.75
    # ---- inference ----------------------------------------------------------------------------
    mf.TEST = CN()
    mf.TEST.SEMANTIC_ON = True  # the only inference implemented here
    mf.TEST.INSTANCE_ON = False
    mf.TEST.PANOPTIC_ON = False
    mf.TEST.OBJECT_MASK_THRESHOLD = 0.0
    mf.TEST.OVERLAP_THRESHOLD = 0.0
    mf.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False
    # new key: post-hoc temperature T of the query class logits at inference, p_q = softmax(l_q / T),
    # in the semantic scores and the anomaly weights; 1.0 = off. Fitted on the training split after
    # training by tools/fit_temperature.py (docs/MASK2FORMER.md, section 4); training ignores it.
    mf.TEST.CLASS_TEMPERATURE = 1.0

    # ---- pixel decoder ------------------------------------------------------------------------
    h = cfg.MODEL.SEM_SEG_HEAD
    set_default(h, "MASK_DIM", 256)
    set_default(h, "TRANSFORMER_ENC_LAYERS", 0)
    set_default(h, "PIXEL_DECODER_NAME", "BasePixelDecoder")  # Mask2Former: "MSDeformAttnPixelDecoder"
    set_default(h, "DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES", ["res3", "res4", "res5"])
    set_default(h, "DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS", 4)
    set_default(h, "DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS", 8)  # official key; unused there and here
    set_default(h, "DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD", 1024)  # new key (see docstring)
    return cfg
