"""Deployment: the inference-only form of a trained per-pixel model, its export by tracing
(TorchScript, ONNX) with the anomaly map, and a runner for the exported file (runtime.py)."""

from .export import FORMATS, export_model, trace_adapter
from .gmm_classifier import GMMClassifier
from .metadata import export_metadata
from .prepare import prepare_for_export, state_bytes
from .runtime import ExportedSegmenter

__all__ = [
    "FORMATS",
    "export_model",
    "trace_adapter",
    "GMMClassifier",
    "export_metadata",
    "prepare_for_export",
    "state_bytes",
    "ExportedSegmenter",
]
