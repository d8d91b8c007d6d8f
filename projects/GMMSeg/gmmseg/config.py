"""add_gmmseg_config(cfg): every config key the project adds to detectron2's, with its default.

Defaults are the authors' release (METHOD.md) unless a comment says otherwise and why.
"""
from detectron2.config import CfgNode as CN
from detectron2.projects.deeplab import add_deeplab_config

__all__ = ["add_gmmseg_config"]


def add_gmmseg_config(cfg):
    """Add the GMMSeg keys to a detectron2 config (in place). Idempotent."""
    if hasattr(cfg.MODEL, "GMM"):
        return cfg
    # ---- which classifier turns embeddings into class logits ("softmax", "gmm", ...) -------
    cfg.MODEL.PREDICTOR = CN()
    cfg.MODEL.PREDICTOR.NAME = "gmm"

    # ---- the Gaussian mixture classifier ------------------------------------------------------
    cfg.MODEL.GMM = CN()
    cfg.MODEL.GMM.EMBED_DIM = 64  # D: the decoder feature is projected, LayerNorm'd, L2-normalised
    cfg.MODEL.GMM.NUM_COMPONENTS = 5  # M Gaussians per class (paper Table 5b)
    cfg.MODEL.GMM.MEMORY_SIZE = 32000  # FIFO entries per (class, component); 0 = batch statistics only
    cfg.MODEL.GMM.MEMORY_DTYPE = "float32"  # "float32", "bfloat16" or "float16" bank storage
    cfg.MODEL.GMM.MEMORY_INIT = "random"  # "random" (release: unit vectors counted as data) | "empty"
    cfg.MODEL.GMM.PUSHES_PER_STEP = 20  # at most this many new embeddings per (class, component) per step
    cfg.MODEL.GMM.PUSH_CORRECT_ONLY = True  # only pixels the model classifies correctly enter the memory
    cfg.MODEL.GMM.UPDATE_INTERVAL = 5  # iterations between M-steps (the EM hook's period)
    cfg.MODEL.GMM.MEAN_MOMENTUM = 0.999  # mu <- normalise(m * mu + (1 - m) * new mean)
    cfg.MODEL.GMM.STD_MOMENTUM = 0.0  # release: the std is replaced at every M-step
    cfg.MODEL.GMM.MOMENTUM_WARMUP = False  # True: the t-th update of a component uses min(m, t/(t+1))
    cfg.MODEL.GMM.VARIANCE_FLOOR = 0.01  # added to the variance before the square root
    cfg.MODEL.GMM.EM_ALGORITHM = "sinkhorn"  # E-step: "sinkhorn" (equipartition) | "vanilla"
    cfg.MODEL.GMM.SINKHORN_ITERS = 3
    cfg.MODEL.GMM.SINKHORN_EPSILON = 0.05
    cfg.MODEL.GMM.AUX_LOSS_WEIGHT = 0.01  # component-level cross-entropy (target: E-step assignment)
    cfg.MODEL.GMM.SEED = 0  # initial means and random memory

    # ---- the per-pixel semantic segmentation head (decoder + predictor) ------------------------
    # MODEL.SEM_SEG_HEAD.NAME = "PerPixelHead" selects it; the decoder comes from a registry.
    cfg.MODEL.SEM_SEG_HEAD.DECODER = "FPNDecoder"  # see gmmseg.modeling.sem_seg.DECODER_REGISTRY
    # DeepLabV3+ decoder keys, LR poly schedule and crop keys: detectron2.projects.deeplab's own
    add_deeplab_config(cfg)

    # ---- data ---------------------------------------------------------------------------------
    cfg.INPUT.DEMO = CN()
    cfg.INPUT.DEMO.SEED = 0  # the built-in demo dataset is generated from this seed
    return cfg
