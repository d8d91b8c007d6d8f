"""Export a prepared per-pixel model (prepare.py) by tracing: TorchScript or ONNX.

The model is wrapped in detectron2's TracingAdapter, which turns its list-of-dicts interface into
tensors: the exported module takes one image (3, H, W) float32, 0..255, channels in
cfg.INPUT.FORMAT, any H and W (normalisation and padding to the backbone's size divisibility are
inside), and returns the tensors of its output dict in sorted key order, at the input resolution:

    "anomaly_score" (H, W)     GMM only: -max_c log p(x|c)
    "sem_seg"       (K, H, W)  class scores (logits)

The names and the order are in the file's metadata ("outputs"); in ONNX they are also the graph's
output names. ONNX uses torch's TorchScript-based exporter (dynamo=False): it exports what
tracing records, with the image's height and width as dynamic axes. A model that traces for one
input size only (Mask2Former, see prepare.py) gets fixed axes and the metadata "input_size"
[H, W]; the runtime then refuses other sizes.
"""

import os
import warnings
from typing import List, Tuple

import torch
from detectron2.export import TracingAdapter
from detectron2.export.flatten import DictSchema, ListSchema
from torch import nn

from .metadata import METADATA_KEY, TORCHSCRIPT_EXTRA_FILE, dumps
from .prepare import has_dynamic_input_size

__all__ = [
    "FORMATS",
    "ONNX_OPSET",
    "trace_adapter",
    "export_torchscript",
    "export_onnx",
    "export_model",
]

FORMATS = {"torchscript": ".ts", "onnx": ".onnx"}
ONNX_OPSET = 17  # LayerNormalization is an ONNX operator from opset 17 on
# output name -> its (height, width) axes, dynamic in ONNX
_SPATIAL_AXES = {"sem_seg": (1, 2), "anomaly_score": (0, 1)}


def trace_adapter(model: nn.Module, image: torch.Tensor) -> Tuple[TracingAdapter, List[str]]:
    """TracingAdapter of `model` (eval mode) for one image (3, H, W); its output names in order."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"the sample image must be (3, H, W), got {tuple(image.shape)}")
    adapter = TracingAdapter(model, [{"image": image}]).eval()
    with torch.no_grad():
        adapter(*adapter.flattened_inputs)  # records the output schema
    schema = adapter.outputs_schema
    if not (
        isinstance(schema, ListSchema)
        and len(schema.schemas) == 1
        and isinstance(schema.schemas[0], DictSchema)
    ):
        raise TypeError(
            f"expected the model to return one dict per image, got the output schema {schema}"
        )
    names = list(schema.schemas[0].keys)
    unknown = sorted(set(names) - set(_SPATIAL_AXES))
    if unknown:
        raise ValueError(
            f"the model returns {names}; export knows the outputs {sorted(_SPATIAL_AXES)}, not {unknown}"
        )
    return adapter, names


def export_torchscript(adapter: TracingAdapter, path: str, metadata: dict) -> str:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(adapter, adapter.flattened_inputs)
    torch.jit.save(traced, path, _extra_files={TORCHSCRIPT_EXTRA_FILE: dumps(metadata)})
    return path


def export_onnx(
    adapter: TracingAdapter, path: str, metadata: dict, names: List[str], opset: int = ONNX_OPSET
) -> str:
    """metadata["input_size"] None: the height and width are dynamic axes; [H, W]: fixed."""
    import onnx

    dynamic_axes = None
    if metadata.get("input_size") is None:
        dynamic_axes = {"image": {1: "height", 2: "width"}}
        dynamic_axes.update({n: dict(zip(_SPATIAL_AXES[n], ("height", "width"))) for n in names})
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter(
            "ignore", DeprecationWarning
        )  # dynamo=False is torch's TorchScript exporter
        torch.onnx.export(
            adapter,
            adapter.flattened_inputs,
            path,
            dynamo=False,
            opset_version=opset,
            input_names=["image"],
            output_names=names,
            dynamic_axes=dynamic_axes,
        )
    proto = onnx.load(path)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, dumps(metadata)
    onnx.save(proto, path)
    return path


def export_model(model: nn.Module, image: torch.Tensor, fmt: str, path: str, metadata: dict) -> str:
    """Trace the prepared `model` on `image` and write it to `path` in format `fmt`
    ("torchscript" or "onnx") with `metadata` (metadata.export_metadata; its "outputs" are set here)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {sorted(FORMATS)}")
    adapter, names = trace_adapter(model, image)
    fixed_size = (
        None if has_dynamic_input_size(model) else [int(image.shape[1]), int(image.shape[2])]
    )
    metadata = {**metadata, "outputs": names, "input_size": fixed_size}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if fmt == "torchscript":
        return export_torchscript(adapter, path, metadata)
    return export_onnx(adapter, path, metadata, names)
