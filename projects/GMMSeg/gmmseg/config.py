"""add_gmmseg_config(cfg): every config key the project adds to detectron2's, with its default.

Defaults are the authors' release (METHOD.md) unless a comment says otherwise and why.

One entry point, `add_gmmseg_config` (what `load_config` calls). The keys of the GMM, the
predictor, the per-pixel head, the inference mode, checkpoints and the open-world evaluation are
here; four groups live beside the only code that reads them and are added from here: INPUT.AUG.*
(data/augmentation.py), DATASETS.FOLDER.* (data/folder_dataset.py), Mask2Former's official
MODEL.MASK_FORMER.* names (modeling/mask_former/config.py) and the model zoo's decoders and
backbones (zoo_config.py). Every adder can run twice.
"""

from detectron2.config import CfgNode as CN
from detectron2.projects.deeplab import add_deeplab_config

from .data.augmentation import add_augmentation_config
from .data.folder_dataset import add_folder_dataset_config
from .evaluation.metrics import CALIBRATION_BINS
from .modeling.mask_former.config import add_maskformer2_config
from .zoo_config import add_model_zoo_config

__all__ = ["add_gmmseg_config", "load_config"]


def add_gmmseg_config(cfg):
    """Add the GMMSeg keys to a detectron2 config (in place). Idempotent."""
    if hasattr(cfg.MODEL, "GMM"):
        return cfg
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
    cfg.MODEL.GMM.MEMORY_SIZE = 32000  # FIFO entries per (class, component); 0 = batch statistics only
    cfg.MODEL.GMM.MEMORY_DTYPE = "float32"  # "float32", "bfloat16" or "float16" bank storage
    cfg.MODEL.GMM.MEMORY_INIT = "random"  # "random" (release: unit vectors counted as data) | "empty"
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
    cfg.MODEL.GMM.UPDATE_INTERVAL = 5  # M-step at iterations 0, 5, 10, ... (release: counter % 5 == 0)
    cfg.MODEL.GMM.UPDATE_START = 0  # iteration of the first M-step (release 0; Base-Mask2Former: 4)
    cfg.MODEL.GMM.MEAN_MOMENTUM = 0.999  # mu <- normalise(m * mu + (1 - m) * new mean)
    cfg.MODEL.GMM.STD_MOMENTUM = 0.0  # release: the std is replaced at every M-step
    cfg.MODEL.GMM.MOMENTUM_WARMUP = False  # True: the t-th update of a component uses min(m, t/(t+1))
    cfg.MODEL.GMM.VARIANCE_FLOOR = 0.01  # added to the variance before the square root
    cfg.MODEL.GMM.EM_ALGORITHM = "sinkhorn"  # E-step: "sinkhorn" (equipartition) | "vanilla"
    cfg.MODEL.GMM.SINKHORN_ITERS = 3
    cfg.MODEL.GMM.SINKHORN_EPSILON = 0.05
    cfg.MODEL.GMM.AUX_LOSS_WEIGHT = 0.01  # component-level cross-entropy (target: E-step assignment)
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
    cfg.MODEL.PROTOSEG.MOMENTUM = 0.999  # p <- normalise(m p + (1 - m) normalised mean of assigned pixels)
    cfg.MODEL.PROTOSEG.TEMPERATURE = 0.1  # of the pixel-prototype contrastive loss
    cfg.MODEL.PROTOSEG.PPC_WEIGHT = 0.01  # pixel-prototype contrastive loss (CE over all prototypes)
    cfg.MODEL.PROTOSEG.PPD_WEIGHT = 0.001  # pixel-prototype distance loss (1 - cos)^2
    cfg.MODEL.PROTOSEG.SINKHORN_ITERS = 3  # within-class equipartition clustering
    cfg.MODEL.PROTOSEG.SINKHORN_EPSILON = 0.05
    cfg.MODEL.PROTOSEG.UPDATE_CORRECT_ONLY = True  # only correctly classified pixels update (release)
    cfg.MODEL.PROTOSEG.SEED = 0  # initial prototypes

    # ---- the per-pixel semantic segmentation head (decoder + predictor) ------------------------
    # MODEL.SEM_SEG_HEAD.NAME = "PerPixelHead" selects it; the decoder comes from a registry.
    cfg.MODEL.SEM_SEG_HEAD.DECODER = "FPNDecoder"  # see gmmseg.modeling.sem_seg.DECODER_REGISTRY
    # the cross-entropy's denominator: "all_pixels" (MMSegmentation 0.22.1, the release: mean over
    # every pixel, ignored ones counting 0) | "labelled_pixels" (mean over the labelled pixels)
    cfg.MODEL.SEM_SEG_HEAD.LOSS_NORMALIZATION = "all_pixels"
    # per-pixel segmentors and Mask2Former: weights and backbone input in channels-last layout (the same
    # computation up to float rounding; faster convolutions on CPU, docs/BENCHMARKS.md)
    cfg.MODEL.CHANNELS_LAST = False
    # DeepLabV3+ decoder keys, LR poly schedule and crop keys: detectron2.projects.deeplab's own
    add_deeplab_config(cfg)
    # training augmentation (INPUT.AUG.*) and inference mode (TEST.SLIDING_WINDOW.*); see
    # gmmseg/data/augmentation.py (needs INPUT.CROP.SINGLE_CATEGORY_MAX_AREA from deeplab's keys)
    add_augmentation_config(cfg)
    # Mask2Former: MODEL.MASK_FORMER.*, its MODEL.SEM_SEG_HEAD.* and SOLVER keys (official names)
    add_maskformer2_config(cfg)
    # model zoo: keys of the FCN / OCR / UPerNet / SegFormer decoders, the auxiliary FCN head,
    # MODEL.TIMM and MODEL.MIT backbones, SOLVER.OPTIMIZER ... (gmmseg/zoo_config.py)
    add_model_zoo_config(cfg)

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
    # your own data as a folder (images/, labels/, class names, ignore value): DATASETS.FOLDER.*,
    # registered by tools/train_net.py in every process (gmmseg/data/folder_dataset.py)
    add_folder_dataset_config(cfg)

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
    cfg.TEST.OPEN_WORLD.CALIBRATION_BINS = CALIBRATION_BINS  # equal-width bins of the ECE (paper: 15)
    # Streaming AUROC/AP/FPR95: most histogram bins per score (~20 bytes each). Exact (float32)
    # until the scores occupy more bins, then coarsened; errors < 0.001 percentage points at the
    # default, and the JSON reports a rigorous bound (gmmseg/evaluation/metrics.py).
    cfg.TEST.OPEN_WORLD.ANOMALY_MAX_BINS = 1048576
    # memory (MiB) for the score maps that the component-level anomaly metrics (sIoU, PPV, mean
    # F1) keep until the end; beyond it they are subsampled by 2 per axis
    # (gmmseg/evaluation/components.py); 0 = no component metrics
    cfg.TEST.OPEN_WORLD.COMPONENT_MAX_MB = 512
    cfg.TEST.OPEN_WORLD.PLOTS = True  # write ROC / PR / reliability PNGs
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
