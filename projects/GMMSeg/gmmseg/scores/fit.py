"""Known-pixel statistics of the anomaly scores: what the fitted scores of the table standardise with.

`KnownPixelStatistics` accumulates, over labelled pixels of a training split, the count, sum and
sum of squares (float64) of every score, per predicted class and over all pixels; `result()` gives
{score: {"mean": [K], "std": [K], "count": [K], "mean_all": m, "std_all": s, "count_all": n}},
the format `table.fitted_scores` and MODEL.ANOMALY_FIT read. A class never predicted on the sampled
pixels gets the statistics of all pixels (so every predicted class has a finite standardisation).
"""

import json
import math
from typing import Dict

import torch

__all__ = ["KnownPixelStatistics", "load_fit", "FIT_KEY"]

FIT_KEY = "MODEL.ANOMALY_FIT"
_MIN_STD = 1e-6


class KnownPixelStatistics:
    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self._sums: Dict[
            str, torch.Tensor
        ] = {}  # score -> (3, K) float64: count, sum, sum of squares

    def add(self, scores: Dict[str, torch.Tensor], predicted: torch.Tensor) -> None:
        """scores: {name: (P,) values at P known pixels}; predicted: (P,) the predicted class there."""
        predicted = predicted.long().flatten().cpu()
        for name, values in scores.items():
            v = values.detach().flatten().double().cpu()
            if v.numel() != predicted.numel():
                raise ValueError(
                    f"score {name!r} has {v.numel()} values for {predicted.numel()} pixels"
                )
            acc = self._sums.setdefault(name, torch.zeros(3, self.num_classes, dtype=torch.float64))
            for row, x in enumerate((torch.ones_like(v), v, v * v)):
                acc[row].index_add_(0, predicted, x)

    def result(self) -> Dict[str, Dict]:
        out = {}
        for name, (count, s1, s2) in self._sums.items():
            n = float(count.sum())
            if n == 0:
                continue
            mean_all = float(s1.sum()) / n
            std_all = max(math.sqrt(max(float(s2.sum()) / n - mean_all**2, 0.0)), _MIN_STD)
            seen = count > 0
            mean = torch.where(
                seen, s1 / count.clamp_min(1), torch.tensor(mean_all, dtype=torch.float64)
            )
            var = torch.where(
                seen,
                s2 / count.clamp_min(1) - mean**2,
                torch.tensor(std_all**2, dtype=torch.float64),
            )
            std = var.clamp_min(0).sqrt().clamp_min(_MIN_STD)
            out[name] = {
                "mean": mean.tolist(),
                "std": std.tolist(),
                "count": count.long().tolist(),
                "mean_all": mean_all,
                "std_all": std_all,
                "count_all": int(n),
            }
        return out


def load_fit(path: str, num_classes: int) -> Dict[str, Dict]:
    """A file written by tools/fit_scores.py, checked against the model's K: {"scores": {score:
    statistics}, "background": {"weights", "means", "stds"} (per-pixel GMM models)}; errors name
    the file and the key."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise FileNotFoundError(f"{FIT_KEY} {path!r} cannot be read: {e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{FIT_KEY} {path!r} is not JSON: {e}") from None
    stats = data.get("scores") if isinstance(data, dict) else None
    if not isinstance(stats, dict):
        raise ValueError(
            f"{FIT_KEY} {path!r} has no 'scores' entry: not a file of tools/fit_scores.py"
        )
    for name, s in stats.items():
        if len(s.get("mean", [])) != num_classes:
            raise ValueError(
                f"{FIT_KEY} {path!r}: score {name!r} was fitted for {len(s.get('mean', []))} classes, "
                f"the model has {num_classes}"
            )
    return {"scores": stats, "background": data.get("background")}
