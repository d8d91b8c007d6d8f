"""Refit a trained per-pixel GMM model's Gaussians on a labelled dataset, no retraining.

`collect_class_embeddings` runs the model (eval mode, test-time images: no augmentation) over a
loader and keeps, per image, a random subset of the labelled pixels' embeddings at the feature
grid with their classes; then at most `rows_per_class` rows of each class. `refit_model` feeds
them to gmm.refit_gmm (EM without momentum, from the trained means). The result is the same
network with converged Gaussians (tools/refit_gmm.py saves it as a checkpoint).
"""

import torch

from ..gmm.refit import refit_gmm
from .head_hooks import PredictorInputs, gmm_head, labels_to_grid

__all__ = ["collect_class_embeddings", "refit_model"]


@torch.no_grad()
def collect_class_embeddings(
    model,
    loader,
    ignore_value: int = 255,
    pixels_per_image: int = 2000,
    rows_per_class: int = 50000,
    seed: int = 0,
):
    """model: per-pixel GMM model in eval mode; loader: detectron2 test loader (batch 1) of a
    dataset with "sem_seg" labels. Returns (e (N, D) float32 embeddings, y (N,) classes)."""
    head = gmm_head(model, "refitting")
    hooks, stride = PredictorInputs(head), head.common_stride
    gen = torch.Generator().manual_seed(seed)
    es, ys = [], []
    try:
        for batch in loader:
            if len(batch) != 1 or "sem_seg" not in batch[0]:
                raise ValueError(
                    "collect_class_embeddings needs a loader of batch 1 with 'sem_seg' labels "
                    f"(image {batch[0].get('file_name', '?')!r} has none)"
                )
            model(batch)
            y = labels_to_grid(batch[0]["sem_seg"], hooks.shape, stride, ignore_value).reshape(-1)
            labelled = (y != ignore_value).nonzero().squeeze(1)
            pick = labelled[torch.randperm(labelled.numel(), generator=gen)[:pixels_per_image]]
            es.append(head.predictor.embed(hooks.x[pick.to(hooks.x.device)]).float().cpu())
            ys.append(y[pick])
    finally:
        hooks.remove()
    if not es:
        raise ValueError("collect_class_embeddings: the loader gave no image")
    e, y = torch.cat(es), torch.cat(ys)
    keep = []
    for c in y.unique().tolist():  # at most rows_per_class rows of each class, chosen at random
        rows = (y == c).nonzero().squeeze(1)
        keep.append(rows[torch.randperm(rows.numel(), generator=gen)[:rows_per_class]])
    keep = torch.cat(keep).sort().values
    return e[keep], y[keep]


def refit_model(
    model,
    loader,
    ignore_value: int = 255,
    rounds: int = 10,
    variance_floor: float = None,
    pixels_per_image: int = 2000,
    rows_per_class: int = 50000,
    seed: int = 0,
):
    """Collect embeddings (collect_class_embeddings) and refit the model's GMM in place.
    Returns {"rows_per_class": {class: rows}, "own_class_ll": [mean log p(x|y) per round]}."""
    e, y = collect_class_embeddings(
        model, loader, ignore_value, pixels_per_image, rows_per_class, seed
    )
    predictor = gmm_head(model, "refitting").predictor
    history = refit_gmm(
        predictor,
        e.to(predictor.means.device),
        y.to(predictor.means.device),
        rounds,
        variance_floor,
    )
    counts = torch.bincount(y, minlength=predictor.num_classes)
    return {
        "rows_per_class": {int(c): int(n) for c, n in enumerate(counts)},
        "own_class_ll": history,
    }
