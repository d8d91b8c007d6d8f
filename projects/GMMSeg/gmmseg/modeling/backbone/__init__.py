"""Backbones added to detectron2's BACKBONE_REGISTRY: build_timm_backbone, build_mit_backbone.
(DeepLab's ResNet, build_resnet_deeplab_backbone, is registered by detectron2.projects.deeplab.)"""

from .efficientnet_lite_weights import (
    convert_efficientnet_lite_state_dict,
    load_efficientnet_lite_weights,
)
from .mit import (
    MIT_SETTINGS,
    MixVisionTransformer,
    build_mit_backbone,
    convert_mit_state_dict,
    load_mit_checkpoint,
)
from .packaged_weights import resolve_weights_file
from .timm_backbone import TimmBackbone, build_timm_backbone, feature_level_names
