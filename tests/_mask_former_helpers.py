"""Shared by the tests/test_mask_former_*.py files: a tiny Mask2Former config and inputs."""

import torch
from detectron2.config import get_cfg

from gmmseg import add_gmmseg_config

NUM_CLASSES = 4


def tiny_mask_former_cfg(predictor: str = "gmm"):
    """R18 (narrow stem), 32-wide pixel and transformer decoders, 6 queries, 2 decoder layers."""
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.merge_from_list(
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.WEIGHTS",
            "",
            "MODEL.META_ARCHITECTURE",
            "MaskFormer",
            "MODEL.BACKBONE.NAME",
            "build_resnet_backbone",
            "MODEL.BACKBONE.FREEZE_AT",
            0,
            "MODEL.RESNETS.DEPTH",
            18,
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            64,
            "MODEL.RESNETS.STEM_OUT_CHANNELS",
            16,
            "MODEL.RESNETS.NORM",
            "BN",
            "MODEL.RESNETS.OUT_FEATURES",
            ["res2", "res3", "res4", "res5"],
            "MODEL.SEM_SEG_HEAD.NAME",
            "MaskFormerHead",
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
            NUM_CLASSES,
            "MODEL.SEM_SEG_HEAD.CONVS_DIM",
            32,
            "MODEL.SEM_SEG_HEAD.MASK_DIM",
            32,
            "MODEL.SEM_SEG_HEAD.NORM",
            "GN",
            "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME",
            "MSDeformAttnPixelDecoder",
            "MODEL.SEM_SEG_HEAD.IN_FEATURES",
            ["res2", "res3", "res4", "res5"],
            "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS",
            1,
            "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD",
            64,
            "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE",
            "multi_scale_pixel_decoder",
            "MODEL.MASK_FORMER.HIDDEN_DIM",
            32,
            "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES",
            6,
            "MODEL.MASK_FORMER.NHEADS",
            4,
            "MODEL.MASK_FORMER.DIM_FEEDFORWARD",
            64,
            "MODEL.MASK_FORMER.DEC_LAYERS",
            3,
            "MODEL.MASK_FORMER.DROPOUT",
            0.0,
            "MODEL.MASK_FORMER.TRAIN_NUM_POINTS",
            256,
            "MODEL.MASK_FORMER.CLASS_WEIGHT",
            2.0,
            "MODEL.MASK_FORMER.MASK_WEIGHT",
            5.0,
            "MODEL.MASK_FORMER.DICE_WEIGHT",
            5.0,
            "MODEL.PREDICTOR.NAME",
            predictor,
            "MODEL.GMM.EMBED_DIM",
            16,
            "MODEL.GMM.NUM_COMPONENTS",
            3,
            "MODEL.GMM.MEMORY_SIZE",
            40,
            "MODEL.GMM.MEMORY_INIT",
            "empty",
            "MODEL.GMM.PUSH_ROWS",
            "all",
            "MODEL.GMM.PROJECTION",
            "linear",
            "MODEL.GMM.UPDATE_START",
            4,  # as Base-Mask2Former
        ]
    )
    return cfg


def blocky_inputs(n: int = 2, size=(64, 64), seed: int = 0):
    """Images whose label map is a few rectangles of different classes (+ some ignore pixels);
    the image colour encodes the class, so the task is learnable."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    out = []
    for _ in range(n):
        label = torch.zeros(h, w, dtype=torch.long)
        for c in range(1, NUM_CLASSES):
            y0, x0 = (
                int(torch.randint(0, h // 2, (1,), generator=g)),
                int(torch.randint(0, w // 2, (1,), generator=g)),
            )
            label[y0 : y0 + h // 3, x0 : x0 + w // 3] = c
        label[:3] = 255
        image = (label.clamp_max(NUM_CLASSES - 1).float() * 60.0 + 20)[None].repeat(3, 1, 1)
        image = image + 5 * torch.randn(3, h, w, generator=g)
        out.append({"image": image, "sem_seg": label})
    return out
