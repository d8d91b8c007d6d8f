"""Sliding-window inference: run a model on overlapping windows and average where they overlap.

Pure PyTorch (no detectron2). Window placement follows MMSegmentation's "slide" mode: windows
start every `stride` pixels, the last row/column of windows is shifted back to end exactly at
the image border, and a window never extends outside the image (an image smaller than the
window is processed as one smaller window). Every pixel is covered at least once.

Config keys (gmmseg.config.add_gmmseg_config): TEST.SLIDING_WINDOW.ENABLED,
.SIZE (height, width) and .STRIDE (height, width).
"""

from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

__all__ = ["sliding_window_positions", "sliding_window_inference"]

ModelOutput = Union[
    torch.Tensor, Tuple[torch.Tensor, Optional[torch.Tensor]], Dict[str, torch.Tensor]
]


def _pair(value, what: str) -> Tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) <= 0:
        raise ValueError(f"{what} must be a positive int or (height, width), got {value!r}")
    return value


def _starts(length: int, window: int, stride: int) -> List[int]:
    """Window start offsets along one axis (the last one ends at `length`)."""
    if length <= window:
        return [0]
    count = (length - window + stride - 1) // stride + 1
    return [min(i * stride, length - window) for i in range(count)]


def sliding_window_positions(
    height: int, width: int, window: Union[int, Sequence[int]], stride: Union[int, Sequence[int]]
) -> List[Tuple[int, int, int, int]]:
    """The windows of an image, as (y0, y1, x0, x1) half-open boxes, row by row.

    window, stride: int or (height, width). A stride larger than the window is rejected (it would
    leave pixels uncovered).
    """
    (wh, ww), (sh, sw) = _pair(window, "window"), _pair(stride, "stride")
    if sh > wh or sw > ww:
        raise ValueError(f"stride {(sh, sw)} larger than window {(wh, ww)} leaves pixels uncovered")
    boxes = []
    for y0 in _starts(height, wh, sh):
        for x0 in _starts(width, ww, sw):
            boxes.append((y0, min(y0 + wh, height), x0, min(x0 + ww, width)))
    return boxes


def _split_output(out: ModelOutput) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    if isinstance(out, torch.Tensor):
        return out, None
    if isinstance(out, dict):
        if "logits" not in out:
            raise KeyError(f"model_fn returned a dict without 'logits' (keys: {sorted(out)})")
        return out["logits"], out.get("anomaly")
    if isinstance(out, (tuple, list)) and len(out) == 2:
        return out[0], out[1]
    raise TypeError(
        f"model_fn must return logits, (logits, anomaly) or {{'logits', 'anomaly'}}; got {type(out).__name__}"
    )


@torch.no_grad()
def sliding_window_inference(
    model_fn: Callable[[torch.Tensor], ModelOutput],
    image: torch.Tensor,
    window: Union[int, Sequence[int]],
    stride: Union[int, Sequence[int]],
    num_classes: int,
    windows_per_batch: int = 1,
) -> Dict[str, torch.Tensor]:
    """Dense predictions of a whole image from overlapping windows, averaged where they overlap.

    Args:
        model_fn: crops (B, C, h, w) -> logits (B, K, h, w), or (logits, anomaly) or
            {"logits": ..., "anomaly": ...} with anomaly (B, h, w), or (B, S, h, w) for S score maps
            (e.g. -max_c log p(x|c)), or None. Outputs must be at the crop's resolution; the model is
            responsible for any padding to its size divisibility. B = windows x images.
        image: (C, H, W) or (N, C, H, W), already normalised as model_fn expects.
        window, stride: int or (height, width), in pixels of `image`.
        num_classes: K, checked against the model output.
        windows_per_batch: how many windows go through model_fn at once.
    Returns:
        {"logits": (N, K, H, W) float32 average of the window logits,
         "count": (H, W) number of windows covering each pixel,
         "anomaly": (N, H, W) or (N, S, H, W) (as model_fn returns it) average of the window
         scores, only if model_fn returns one}.
        N = 1 for an unbatched image.
    """
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4:
        raise ValueError(f"image must be (C, H, W) or (N, C, H, W), got shape {tuple(image.shape)}")
    n, _, height, width = image.shape
    boxes = sliding_window_positions(height, width, window, stride)
    device = image.device
    logits_sum = torch.zeros(n, num_classes, height, width, dtype=torch.float32, device=device)
    count = torch.zeros(height, width, dtype=torch.float32, device=device)
    anomaly_sum: Optional[torch.Tensor] = None

    step = max(1, int(windows_per_batch))
    for start in range(0, len(boxes), step):
        group = boxes[start : start + step]
        # all windows have the same size: `window`, clipped to the image along an axis where
        # the image is smaller (and then there is a single start along that axis)
        crops = torch.cat([image[:, :, y0:y1, x0:x1] for (y0, y1, x0, x1) in group], dim=0)
        logits, anomaly = _split_output(model_fn(crops))
        h, w = crops.shape[-2:]
        if logits.shape != (crops.shape[0], num_classes, h, w):
            raise ValueError(
                f"model_fn returned logits of shape {tuple(logits.shape)} for crops "
                f"{tuple(crops.shape)}; expected ({crops.shape[0]}, {num_classes}, {h}, {w})"
            )
        if anomaly is not None:
            if (
                anomaly.shape[0] != crops.shape[0]
                or anomaly.shape[-2:] != (h, w)
                or anomaly.dim() not in (3, 4)
            ):
                raise ValueError(
                    f"model_fn returned an anomaly map of shape {tuple(anomaly.shape)}; "
                    f"expected ({crops.shape[0]}, {h}, {w}) or ({crops.shape[0]}, S, {h}, {w})"
                )
            if anomaly_sum is None:
                if start > 0:
                    raise ValueError("model_fn returned an anomaly map for some windows only")
                anomaly_sum = torch.zeros(
                    n, *anomaly.shape[1:-2], height, width, dtype=torch.float32, device=device
                )
        elif anomaly_sum is not None:
            raise ValueError("model_fn returned an anomaly map for some windows only")
        for i, (y0, y1, x0, x1) in enumerate(group):
            part = slice(i * n, (i + 1) * n)
            logits_sum[:, :, y0:y1, x0:x1] += logits[part].float()
            count[y0:y1, x0:x1] += 1
            if anomaly is not None:
                anomaly_sum[..., y0:y1, x0:x1] += anomaly[part].float()

    out = {"logits": logits_sum / count, "count": count}
    if anomaly_sum is not None:
        out["anomaly"] = anomaly_sum / count
    return out
