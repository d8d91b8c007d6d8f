"""The one way the project puts a dataset in detectron2's catalogs, and what it lists from them.

    register_dataset(name, load, metadata, official_size=None)

registers `name` in DatasetCatalog (lazily: `load()` is called at DatasetCatalog.get(name)) and
sets its metadata in MetadataCatalog; a name registered before is replaced, so calling a module's
register function again (another root, another seed) just works. Every dataset module of the
project (demo, CamVid, COCO-Stuff, the anomaly benchmarks, the folder dataset) registers through
it; `unregister_datasets` serves the registrations made by detectron2's own functions (ADE20K,
Cityscapes), which refuse a name twice.

`official_size` is the number of images of the official split; the dataset check
(gmmseg/data/check.py) compares the record count with it. `semantic_segmentation_datasets()` lists
the semantic-segmentation names of DatasetCatalog (what tools/check_dataset.py --list prints).
"""

from typing import Callable, Dict, Iterable, List, Mapping, Optional

__all__ = [
    "register_dataset",
    "unregister_datasets",
    "declare_official_sizes",
    "official_size",
    "semantic_segmentation_datasets",
]

_OFFICIAL_SIZES: Dict[str, int] = {}


def unregister_datasets(names: Iterable[str]) -> None:
    """Forget each of `names` in DatasetCatalog and MetadataCatalog (absent names are skipped)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for name in names:
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)


def declare_official_sizes(sizes: Mapping[str, int]) -> None:
    """Record the official number of images of splits registered elsewhere (name -> count)."""
    for name, count in sizes.items():
        if int(count) < 1:
            raise ValueError(
                f"official size of dataset {name!r} must be a positive count, got {count!r}"
            )
        _OFFICIAL_SIZES[name] = int(count)


def official_size(name: str) -> Optional[int]:
    """The official number of images of split `name`, None when none was declared."""
    return _OFFICIAL_SIZES.get(name)


def register_dataset(
    name: str,
    load: Callable[[], List[dict]],
    metadata: Mapping[str, object],
    *,
    official_size: Optional[int] = None,
) -> str:
    """Register `name`: `load()` -> list of dataset dicts, called at DatasetCatalog.get(name);
    `metadata` set now in MetadataCatalog. A previous registration of `name` (dicts and metadata)
    is replaced. Returns `name`."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if not callable(load):
        raise TypeError(
            f"dataset {name!r}: `load` must be a function returning the dataset dicts, got {load!r}"
        )
    unregister_datasets([name])
    _OFFICIAL_SIZES.pop(name, None)
    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(**dict(metadata))
    if official_size is not None:
        declare_official_sizes({name: official_size})
    return name


def semantic_segmentation_datasets() -> List[str]:
    """Sorted names in DatasetCatalog whose metadata has `stuff_classes` and no evaluator_type,
    or one that names semantic segmentation ("sem_seg", "cityscapes_sem_seg"): what the dataset
    check can verify. detectron2's instance and panoptic sets are left out. No entry is created."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    names = []
    for name in DatasetCatalog.list():
        if name not in MetadataCatalog:
            continue
        meta = MetadataCatalog.get(name)
        if meta.get("stuff_classes", None) and "sem_seg" in meta.get("evaluator_type", "sem_seg"):
            names.append(name)
    return sorted(names)
