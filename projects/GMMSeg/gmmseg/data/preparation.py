"""Shared by the dataset preparation tools (tools/prepare_*.py): a progress-bar job runner with
optional worker processes, and label maps written so that a file is either absent or complete
(an interrupted preparation never leaves a truncated PNG that a later run would skip)."""

import os
import tempfile

import numpy as np
from PIL import Image

__all__ = ["run_jobs", "save_png_atomic"]


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
