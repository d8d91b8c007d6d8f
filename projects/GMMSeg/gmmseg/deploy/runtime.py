"""Run an exported model (ONNX through ONNX Runtime, or TorchScript) from its file alone.

    segmenter = ExportedSegmenter("output/export/model.onnx")
    out = segmenter(image_bgr)      # (H, W, 3) uint8, as cv2.imread / detectron2's read_image(format="BGR")
    out["sem_seg"]                  # (K, H, W) float32 class scores at the image's size
    out["anomaly_score"]            # (H, W) float32, GMM models only: -max_c log p(x|c)

Pre- and post-processing are DefaultPredictor's, read from the file's metadata: channels in the
model's input format, the test-time resize (shortest edge to MIN_SIZE_TEST, longest edge at most
MAX_SIZE_TEST, bilinear; Pillow, as detectron2's ResizeTransform), and the outputs resized back
to the image's size (bilinear, half-pixel centres, as detectron2's sem_seg_postprocess).
Its code uses numpy, Pillow and onnxruntime (ONNX) or torch (TorchScript), not detectron2 (the
gmmseg package around it does import detectron2).
"""

import os
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image

from .metadata import METADATA_KEY, TORCHSCRIPT_EXTRA_FILE, loads

__all__ = ["ExportedSegmenter", "resized_shape", "preprocess", "resize_outputs"]


def resized_shape(height: int, width: int, short_edge: int, max_size: int) -> Tuple[int, int]:
    """(h, w) after scaling the shorter edge to `short_edge` and then, if the longer edge exceeds
    `max_size`, scaling down to fit; rounded to the nearest integer. short_edge 0: unchanged."""
    if short_edge == 0:
        return height, width
    scale = short_edge / min(height, width)
    h, w = height * scale, width * scale
    if max(h, w) > max_size:
        fit = max_size / max(h, w)
        h, w = h * fit, w * fit
    return int(h + 0.5), int(w + 0.5)


def preprocess(
    image_bgr: np.ndarray, input_format: str, min_size: int, max_size: int
) -> np.ndarray:
    """(H, W, 3) uint8 BGR -> the model's input (3, h, w) float32."""
    if image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(
            f"expected an (H, W, 3) uint8 BGR image, got {image_bgr.dtype} {image_bgr.shape}"
        )
    if input_format == "RGB":
        image = image_bgr[:, :, ::-1]
    elif input_format == "BGR":
        image = image_bgr
    else:
        raise ValueError(
            f"input_format {input_format!r} (cfg.INPUT.FORMAT): the runtime reads RGB or BGR models"
        )
    h, w = resized_shape(*image.shape[:2], min_size, max_size)
    if (h, w) != image.shape[:2]:
        image = np.asarray(
            Image.fromarray(np.ascontiguousarray(image)).resize((w, h), Image.BILINEAR)
        )
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)


def _linear_axis(src: int, dst: int):
    """Indices i0, i1 (dst,) and weights w (dst,) of a linear resize from src to dst samples with
    half-pixel centres (torch's align_corners=False): x = (j + 0.5) * src / dst - 0.5, clamped at 0."""
    x = np.maximum((np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5, 0.0)
    i0 = np.minimum(np.floor(x).astype(np.int64), src - 1)
    return i0, np.minimum(i0 + 1, src - 1), (x - i0).astype(np.float32)


def _resize_chw(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """(C, h, w) -> (C, height, width), bilinear, separable (rows, then columns)."""
    r0, r1, wr = _linear_axis(x.shape[1], height)
    c0, c1, wc = _linear_axis(x.shape[2], width)
    rows = x[:, r0] * (1 - wr)[:, None] + x[:, r1] * wr[:, None]
    return rows[:, :, c0] * (1 - wc) + rows[:, :, c1] * wc


def resize_outputs(
    outputs: Dict[str, np.ndarray], height: int, width: int
) -> Dict[str, np.ndarray]:
    """Outputs (K, h, w) / (h, w) -> (K, height, width) / (height, width), bilinear."""
    resized = {}
    for name, x in outputs.items():
        if x.shape[-2:] == (height, width):
            resized[name] = x
        elif x.ndim == 2:
            resized[name] = _resize_chw(x[None], height, width)[0]
        else:
            resized[name] = _resize_chw(x, height, width)
    return resized


class ExportedSegmenter:
    """An exported GMMSeg model (.onnx or .ts) and the pre- / post-processing its metadata describes."""

    def __init__(self, path: str, threads: Optional[int] = None):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"exported model {path!r}: no such file")
        self.path = path
        if path.endswith(".onnx"):
            self._load_onnx(path, threads)
        elif path.endswith((".ts", ".pt")):
            self._load_torchscript(path, threads)
        else:
            raise ValueError(f"{path}: expected an .onnx (ONNX Runtime) or .ts (TorchScript) file")
        self.outputs = list(self.metadata["outputs"])
        self.has_anomaly = "anomaly_score" in self.outputs

    def _load_onnx(self, path, threads):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.metadata = loads(
            self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY), path
        )
        self.backend = "onnxruntime"

    def _load_torchscript(self, path, threads):
        import torch

        if threads:
            torch.set_num_threads(threads)
        extra = {TORCHSCRIPT_EXTRA_FILE: ""}
        self.module = torch.jit.load(path, map_location="cpu", _extra_files=extra)
        self.metadata = loads(extra[TORCHSCRIPT_EXTRA_FILE], path)
        self.backend = "torchscript"

    def run(self, image_chw: np.ndarray) -> Dict[str, np.ndarray]:
        """The exported network alone: (3, h, w) float32 input -> its outputs at (h, w)."""
        fixed = self.metadata.get("input_size")
        if fixed and list(image_chw.shape[1:]) != list(fixed):
            raise ValueError(
                f"{self.path} was exported for inputs of {fixed[0]}x{fixed[1]} only (a model that traces "
                f"for one size, e.g. Mask2Former), got {image_chw.shape[1]}x{image_chw.shape[2]} after the "
                "test-time resize: export it again with --sample-size H W of your images"
            )
        if self.backend == "onnxruntime":
            values = self.session.run(self.outputs, {"image": image_chw})
        else:
            import torch

            with torch.no_grad():
                values = [v.numpy() for v in self.module(torch.from_numpy(image_chw))]
        return dict(zip(self.outputs, values))

    def __call__(self, image_bgr: np.ndarray) -> Dict[str, np.ndarray]:
        """(H, W, 3) uint8 BGR image -> {"sem_seg": (K, H, W), "anomaly_score": (H, W) if GMM}."""
        m = self.metadata
        x = preprocess(image_bgr, m["input_format"], m["min_size_test"], m["max_size_test"])
        return resize_outputs(self.run(x), *image_bgr.shape[:2])
