"""What the dataset preparation tools (tools/prepare_*.py) share: where a dataset's folder is by
default, the --workers / --overwrite options, a progress-bar job runner with optional worker
processes, label maps read with a check and written so that a file is either absent or complete
(an interrupted preparation never leaves a truncated PNG that a later run would skip), the
lookup-table conversion of a label file, and the end of every tool: a clear error or a count of
the files written.

A job returns "written" or "skipped" (the output existed and --overwrite was not given).
Preparation is the only place that writes under the datasets root; the loaders only read.
"""

import os
import sys
import tempfile
from typing import Callable, List, Optional

import numpy as np
from PIL import Image

from .common import datasets_root

__all__ = [
    "dataset_folder",
    "add_preparation_arguments",
    "run_jobs",
    "save_png_atomic",
    "read_label_map",
    "remap_label_file",
    "run_preparation",
]


def dataset_folder(name: str, given: Optional[str] = None) -> str:
    """`given` if set, else the folder `name` under the datasets root ($DETECTRON2_DATASETS,
    else ./datasets)."""
    return given or os.path.join(datasets_root(), name)


def add_preparation_arguments(parser) -> None:
    """--workers N (processes, 0: this one) and --overwrite (rewrite existing outputs)."""
    parser.add_argument("--workers", type=int, default=0, help="processes (0: this one)")
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing outputs")


def run_jobs(fn, jobs, workers: int, desc: str):
    """[fn(job) for job in jobs], in `workers` processes if > 0, with a tqdm progress bar."""
    from tqdm import tqdm

    if workers > 0 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.Pool(workers) as pool:
            return list(tqdm(pool.imap(fn, jobs, chunksize=16), total=len(jobs), desc=desc))
    return [fn(j) for j in tqdm(jobs, total=len(jobs), desc=desc)]


def save_png_atomic(image, path: str) -> None:
    """Write a uint8 image (array or PIL image: label map or RGB) under a unique temporary name in
    its folder (created), then rename it: concurrent writers and interruptions never leave a
    partial file under `path`."""
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image).astype(np.uint8))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=folder)
    os.close(fd)
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_label_map(path: str, what: str = "annotation") -> np.ndarray:
    """A single-channel uint8 label file as an (H, W) array; anything else stops with a ValueError
    naming the file, its dtype and shape."""
    with Image.open(path) as im:
        raw = np.asarray(im)
    if raw.ndim != 2 or raw.dtype != np.uint8:
        raise ValueError(
            f"{path}: expected a single-channel uint8 {what}, got {raw.dtype} {raw.shape}"
        )
    return raw


def remap_label_file(job) -> str:
    """(input png, output png, lut, overwrite, what): write lut[label] to the output unless it
    exists (and not overwrite). lut: (256,) uint8, raw value -> written value; what: the kind of
    input, for the error about a file that is not a single-channel uint8 map."""
    src, dst, lut, overwrite, what = job
    if os.path.exists(dst) and not overwrite:
        return "skipped"
    save_png_atomic(np.asarray(lut, np.uint8)[read_label_map(src, what)], dst)
    return "written"


def run_preparation(prepare: Callable[[], List[str]], what: str, where: str) -> int:
    """The end of a preparation tool: run `prepare()` (-> a "written" / "skipped" per output);
    a FileNotFoundError or ValueError is printed as one error line (exit code 1), otherwise the
    counts are printed (exit code 0)."""
    try:
        results = prepare()
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    written = results.count("written")
    print(f"{written} {what} written, {len(results) - written} already present, under {where}")
    return 0
