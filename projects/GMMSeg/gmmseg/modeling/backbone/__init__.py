"""Backbones added to detectron2's BACKBONE_REGISTRY: build_timm_backbone, build_mit_backbone.
(DeepLab's ResNet, build_resnet_deeplab_backbone, is registered by detectron2.projects.deeplab.)"""
from .mit import MIT_SETTINGS, MixVisionTransformer, build_mit_backbone, convert_mit_state_dict, load_mit_checkpoint
from .timm_backbone import TimmBackbone, build_timm_backbone, feature_level_names
