"""Class-balanced training sampler (the GMMSeg release's sampling): each sample is drawn by picking
a class uniformly among the classes present in the training set, then an image containing it
uniformly. Rare classes are then seen often enough to fill their GMM feature memories.

The class -> images index is computed once from the label maps (read, remapped and validated as
SemSegDatasetMapper does) and cached as JSON next to the dataset, in the parent folder of the
label folder(s): `class_index_<dataset names>_<hash>.json`. The hash covers the label files (paths,
sizes, modification times) and everything that changes the index (number of classes, ignore
value, label remaps, minimum pixel count), so a changed dataset is indexed again.

Select it with DATALOADER.SAMPLER_TRAIN = "ClassBalancedSampler"; the Trainer's
build_train_loader calls build_class_balanced_sampler(cfg, dataset_dicts).
"""

import hashlib
import itertools
import json
import logging
import os
import re
import tempfile
from typing import List, Optional, Sequence

import numpy as np
import torch
from detectron2.utils import comm
from torch.utils.data.sampler import Sampler

from .mapper import load_sem_seg_label

__all__ = [
    "ClassBalancedSampler",
    "compute_class_image_index",
    "class_image_index",
    "build_class_balanced_sampler",
]

logger = logging.getLogger(__name__)
_CACHE_VERSION = 1


def compute_class_image_index(
    dataset_dicts: Sequence[dict], num_classes: int, ignore_label: int = 255, min_pixels: int = 1
) -> List[List[int]]:
    """class c -> sorted indices of the dicts whose label map has >= `min_pixels` pixels of c."""
    index: List[List[int]] = [[] for _ in range(num_classes)]
    for i, d in enumerate(dataset_dicts):
        label = load_sem_seg_label(d, num_classes, ignore_label)
        counts = np.bincount(label.ravel(), minlength=max(num_classes, int(label.max()) + 1))[
            :num_classes
        ]
        for c in np.flatnonzero(counts >= min_pixels):
            index[int(c)].append(i)
    return index


def _cache_key(
    dataset_dicts: Sequence[dict], num_classes: int, ignore_label: int, min_pixels: int
) -> str:
    h = hashlib.sha1()
    h.update(json.dumps([_CACHE_VERSION, num_classes, ignore_label, min_pixels]).encode())
    for d in dataset_dicts:
        name = d["sem_seg_file_name"]
        st = os.stat(name)
        remap = sorted((int(k), int(v)) for k, v in (d.get("label_remap") or {}).items())
        h.update(json.dumps([os.path.abspath(name), st.st_size, st.st_mtime_ns, remap]).encode())
    return h.hexdigest()[:16]


def _default_cache_dir(dataset_dicts: Sequence[dict]) -> str:
    label_dirs = {os.path.dirname(os.path.abspath(d["sem_seg_file_name"])) for d in dataset_dicts}
    return os.path.dirname(os.path.commonpath(sorted(label_dirs)))


def class_image_index(
    dataset_dicts: Sequence[dict],
    num_classes: int,
    *,
    ignore_label: int = 255,
    min_pixels: int = 1,
    dataset_name: str = "dataset",
    cache_dir: Optional[str] = None,
    use_cache: bool = True,
) -> List[List[int]]:
    """compute_class_image_index, cached in `cache_dir` (default: next to the label folders).

    An unwritable cache folder only costs a warning (the index is then recomputed next time).
    """
    if not dataset_dicts:
        raise ValueError(f"'{dataset_name}': no dataset dicts to build a class-balanced index from")
    if not use_cache:
        return compute_class_image_index(dataset_dicts, num_classes, ignore_label, min_pixels)
    key = _cache_key(dataset_dicts, num_classes, ignore_label, min_pixels)
    cache_dir = cache_dir or _default_cache_dir(dataset_dicts)
    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", dataset_name)[:80]
    path = os.path.join(cache_dir, f"class_index_{safe}_{key}.json")
    try:
        with open(path) as f:
            cached = json.load(f)
        if cached.get("key") == key and len(cached["class_to_images"]) == num_classes:
            logger.info("Class-balanced index of '%s' loaded from %s", dataset_name, path)
            return [list(map(int, v)) for v in cached["class_to_images"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    index = compute_class_image_index(dataset_dicts, num_classes, ignore_label, min_pixels)
    payload = {
        "key": key,
        "dataset": dataset_name,
        "num_images": len(dataset_dicts),
        "num_classes": num_classes,
        "ignore_label": ignore_label,
        "min_pixels": min_pixels,
        "class_to_images": index,
    }
    try:  # atomic: several ranks may write the same file at once
        fd, tmp = tempfile.mkstemp(prefix=".class_index-", suffix=".tmp", dir=cache_dir)
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f)
        os.replace(tmp, path)
        logger.info("Class-balanced index of '%s' written to %s", dataset_name, path)
    except OSError as e:
        logger.warning(
            "Could not cache the class-balanced index at %s (%s); it will be recomputed next time",
            path,
            e,
        )
    return index


class ClassBalancedSampler(Sampler):
    """Infinite stream of dataset indices: a class uniformly among those with images, then one of
    its images uniformly. Like detectron2's TrainingSampler, all ranks generate the same global
    stream from the shared seed and rank r keeps elements r, r + world_size, ... (so each rank
    sees a different stream and together they follow the global one)."""

    def __init__(
        self,
        class_to_images: Sequence[Sequence[int]],
        *,
        seed: Optional[int] = None,
        chunk_size: int = 1024,
    ):
        """
        Args:
            class_to_images: for every class, the indices of the images that contain it; classes
                without images are never picked.
            seed: shared by all ranks; None draws one shared random seed (as TrainingSampler).
        """
        nonempty = [sorted(set(int(i) for i in imgs)) for imgs in class_to_images if len(imgs)]
        if not nonempty:
            raise ValueError("ClassBalancedSampler: no class has any image")
        self._classes = [c for c, imgs in enumerate(class_to_images) if len(imgs)]
        self._counts = torch.tensor([len(v) for v in nonempty], dtype=torch.long)
        self._offsets = torch.cumsum(self._counts, 0) - self._counts
        self._flat = torch.tensor(list(itertools.chain.from_iterable(nonempty)), dtype=torch.long)
        self._seed = int(comm.shared_random_seed() if seed is None else seed)
        self._chunk = int(chunk_size)
        self._rank = comm.get_rank()
        self._world_size = comm.get_world_size()

    def __iter__(self):
        yield from itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)

    def _infinite_indices(self):
        g = torch.Generator()
        g.manual_seed(self._seed)
        while True:
            cls = torch.randint(len(self._counts), (self._chunk,), generator=g)
            pos = (
                torch.rand(self._chunk, generator=g, dtype=torch.float64) * self._counts[cls]
            ).long()
            pos = torch.minimum(pos, self._counts[cls] - 1)
            yield from self._flat[self._offsets[cls] + pos].tolist()


def build_class_balanced_sampler(cfg, dataset_dicts: Sequence[dict]) -> ClassBalancedSampler:
    """The sampler for DATALOADER.SAMPLER_TRAIN = "ClassBalancedSampler".

    Classes: MODEL.SEM_SEG_HEAD.NUM_CLASSES / IGNORE_VALUE; an image counts for a class when it has
    at least DATALOADER.CLASS_BALANCED.MIN_PIXELS pixels of it; DATALOADER.CLASS_BALANCED.CACHE
    turns the on-disk index cache on/off. The seed is shared across ranks as in TrainingSampler.
    """
    opts = cfg.DATALOADER.get("CLASS_BALANCED", None)
    min_pixels = int(opts.MIN_PIXELS) if opts is not None else 1
    use_cache = bool(opts.CACHE) if opts is not None else True
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    index = class_image_index(
        dataset_dicts,
        num_classes,
        ignore_label=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        min_pixels=min_pixels,
        dataset_name="+".join(cfg.DATASETS.TRAIN),
        use_cache=use_cache,
    )
    empty = [c for c, v in enumerate(index) if not v]
    logger.info("Class-balanced sampling: images per class %s", [len(v) for v in index])
    if empty:
        logger.warning(
            "Class-balanced sampling: classes %s appear in no training image and are never picked",
            empty,
        )
    return ClassBalancedSampler(index)
