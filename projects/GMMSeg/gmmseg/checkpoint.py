"""Safe checkpoint loading, and a check that a checkpoint fits the model its config builds.

Safety: every checkpoint the project reads goes through `GMMSegCheckpointer` (training, `--resume`,
`MODEL.WEIGHTS`, `--eval-only`): `.pth` files with torch.load(weights_only=True) (tensors and
plain containers only, never code); detectron2 model-zoo `.pkl` files with an unpickler that
accepts only NumPy arrays and plain containers. What the trainer saves (model, optimizer,
scheduler, iteration, the project's resume state) is all tensors, numbers, strings, lists and
dicts, so its checkpoints load that way.

Memory: local `.pth` files are memory-mapped (torch.load(mmap=True)), for training (--resume,
MODEL.WEIGHTS) as for inference: loading does not read the file into host memory first, every
tensor is copied from the mapping into the model, the bank slice by slice, and the pages are
the page cache's (shared by the ranks of a machine, dropped under memory pressure). A GMM built
for inference (MODEL.GMM.MEMORY_LAYOUT "none", used by --eval-only) has no memory bank: the
bank's entries are skipped, so they are never read. A model with sharded GMM memories saves the
full bank (gathered from every rank). Files in torch's legacy (non-zip) format cannot be mapped
and are read whole.

Fit: detectron2's checkpointer skips tensors whose shapes differ with only a warning; for a GMM
that silently leaves means, stds or the memory at their initial values. Here a mismatch stops
with an error that names the config key(s) and both values, e.g.
"MODEL.GMM.NUM_COMPONENTS: checkpoint 5, config 3", and the tensors concerned (which key fixes
which dimension: modeling/predictors.py DIMENSION_KEYS).
"""

import io
import logging
import os
import pickle
import zipfile
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

from .gmm import MEMORY_STATE_NAMES, em_modules, named_em_modules
from .modeling.predictors import tensor_setting_keys

__all__ = [
    "GMMSegCheckpointer",
    "load_state_dict_safely",
    "check_state_dict_matches_model",
    "safe_pickle_load",
    "strip_for_inference",
]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- reading files
def _load_local_file(local: str, name: str):
    """torch.load(weights_only=True) of a local file, memory-mapped unless it is in torch's legacy
    (non-zip) format, which cannot be mapped."""
    return _torch_load_weights_only(local, name, mmap=zipfile.is_zipfile(local))


def _torch_load_weights_only(path_or_file, name: str, mmap: bool = False):
    try:
        return torch.load(path_or_file, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # pickle with objects, truncated file, not a torch file
        raise ValueError(
            f"Checkpoint {name!r} cannot be read with torch.load(weights_only=True) "
            f"(tensors and plain containers only; nothing in it is executed): "
            f"{type(e).__name__}: {e}"
        ) from e


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays/scalars; refuses every other global."""

    _ALLOWED = {
        ("collections", "OrderedDict"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a weights file")


def safe_pickle_load(f, name: str = "<file>"):
    """pickle.load(f, encoding="latin1") that accepts only NumPy arrays and plain containers
    (what detectron2's model-zoo .pkl files hold)."""
    try:
        return _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except Exception as e:
        raise ValueError(
            f"{name!r} is not a plain weights pickle (NumPy arrays and containers only): {type(e).__name__}: {e}"
        ) from e


def load_state_dict_safely(path: str) -> dict:
    """The model state dict of a .pth checkpoint (detectron2's {"model": ...} or a bare one)."""
    local = PathManager.get_local_path(path)
    if not os.path.isfile(local):
        raise FileNotFoundError(f"MODEL.WEIGHTS={path!r}: no such file")
    ckpt = _load_local_file(local, path)
    return ckpt.get("model", ckpt) if isinstance(ckpt, dict) else ckpt


# ----------------------------------------------------------------------------- fit to the config
def _explain(
    keys: Tuple[Optional[str], ...], ckpt_shape: Tuple[int, ...], model_shape: Tuple[int, ...]
) -> List[Tuple[str, str, str]]:
    """[(config key, checkpoint value, config value)] for each dimension that differs and that a
    config key fixes (`keys`, one per dimension; None: no key)."""
    if len(ckpt_shape) != len(model_shape):
        return []
    return [
        (key, str(a), str(b)) for key, a, b in zip(keys, ckpt_shape, model_shape) if key and a != b
    ]


def check_state_dict_matches_model(
    state: Dict[str, torch.Tensor], model: torch.nn.Module, source: str = "checkpoint"
):
    """Raise ValueError if a tensor of `state` has another shape than the model's tensor of the
    same name. The message names the config keys that explain it (checkpoint vs config value)
    first, then every tensor concerned."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    model_state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # a sharded GMM memory is in a checkpoint with its full layout, which its state_dict() omits
    for name, module in named_em_modules(model):
        model_state.update(
            {f"{name}.{k}" if name else k: shape for k, shape in module.checkpoint_shapes().items()}
        )
    setting_keys = tensor_setting_keys(model)
    problems, reasons = [], {}
    for key, value in state.items():
        if key not in model_state or not hasattr(value, "shape"):
            continue
        a, b = tuple(value.shape), model_state[key]
        if a == b:
            continue
        why = _explain(setting_keys.get(key, ()), a, b)
        for name, va, vb in why:
            reasons.setdefault(name, (va, vb))
        problems.append(
            f"  {key}: checkpoint {a} vs model {b}"
            + (
                " (" + "; ".join(f"{n}: checkpoint {va}, config {vb}" for n, va, vb in why) + ")"
                if why
                else ""
            )
        )
    if problems:
        head = "; ".join(f"{n}: checkpoint {va}, config {vb}" for n, (va, vb) in reasons.items())
        raise ValueError(
            f"Checkpoint {source} does not match the model built from the config"
            + (f" ({head})" if head else "")
            + ". Tensors that differ:\n"
            + "\n".join(problems)
            + "\nSet the config to the checkpoint's values, or load another checkpoint."
        )


# ----------------------------------------------------------------------------- the checkpointer
class GMMSegCheckpointer(DetectionCheckpointer):
    """detectron2's DetectionCheckpointer with safe loading and the fit check (module docstring).

    Saving is unchanged. Loading `.pth` (and `.pyth`) uses torch.load(weights_only=True); `.pkl`
    uses a NumPy-only unpickler; a checkpoint whose tensors do not fit the model stops with
    ValueError before anything is copied into the model.
    """

    def _load_file(self, filename):
        if filename.endswith(".pkl"):
            with PathManager.open(filename, "rb") as f:
                data = safe_pickle_load(f, filename)
            if "model" in data and "__author__" in data:  # detectron2 model-zoo format
                self.logger.info("Reading a file from '{}'".format(data["__author__"]))
                return data
            if "blobs" in data:  # Caffe2 / Detectron1 model zoo
                data = data["blobs"]
            data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
            return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}
        if filename.endswith(".pyth"):  # pycls
            with PathManager.open(filename, "rb") as f:
                data = _torch_load_weights_only(io.BytesIO(f.read()), filename)
            if "model_state" not in data:
                raise ValueError(
                    f"Cannot load .pyth file {filename}; pycls checkpoints must contain 'model_state'."
                )
            state = {
                k: v
                for k, v in data["model_state"].items()
                if not k.endswith("num_batches_tracked")
            }
            return {"model": state, "__author__": "pycls", "matching_heuristics": True}
        return super()._load_file(filename)  # -> self._torch_load for everything else

    def _torch_load(self, f):
        local = PathManager.get_local_path(f)
        if os.path.isfile(local):
            # memory-mapped: the bank (GBs) is not read into host memory in every rank before the
            # model copies it (slice by slice); a model for inference skips it, never reading it
            return _load_local_file(local, f)
        with PathManager.open(f, "rb") as fh:
            return _torch_load_weights_only(fh, f)

    def save(self, name, **kwargs):
        """Collective when the model has sharded GMM memories: every rank sends its shard to the
        saving rank (slice by slice), which writes the full bank into the checkpoint; a
        checkpoint is then the same whatever the number of ranks that wrote it. Every rank calls
        save() (detectron2's PeriodicCheckpointer does)."""
        modules = em_modules(self.model)
        if not self.save_dir or not modules:
            return super().save(name, **kwargs)
        try:
            for m in modules:
                m.gather_for_checkpoint()
            super().save(name, **kwargs)
        finally:
            for m in modules:
                m.release_checkpoint()

    def _load_model(self, checkpoint):
        if not checkpoint.get("matching_heuristics", False):
            src = (
                self._parsed_url_during_load.geturl()
                if getattr(self, "_parsed_url_during_load", None)
                else "checkpoint"
            )
            check_state_dict_matches_model(checkpoint["model"], self.model, src)
        return super()._load_model(checkpoint)


# ----------------------------------------------------------------------------- inference copies
def _is_memory_entry(key: str) -> bool:
    return any(key == f"memory.{n}" or key.endswith(f".memory.{n}") for n in MEMORY_STATE_NAMES)


def strip_for_inference(src: str, dst: str) -> dict:
    """Write to `dst` the inference part of checkpoint `src`: its model weights, GMM means and
    stds and counters, without the GMM memory (bank, ring pointers, statistics) and without the
    optimizer, scheduler and resume state. The iteration is kept. `src` is memory-mapped: only
    what is kept is read. Returns {"src_bytes", "dst_bytes", "dropped": [keys]}.

    The copy loads wherever a model is built for inference (--eval-only, tools/demo.py); it
    cannot resume training."""
    local = PathManager.get_local_path(src)
    if not os.path.isfile(local):
        raise FileNotFoundError(f"{src!r}: no such checkpoint")
    ckpt = _torch_load_weights_only(local, src, mmap=True)
    model = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(model, dict):
        raise ValueError(f"{src!r} holds no model state dict")
    dropped = [k for k in model if _is_memory_entry(k)]
    out = {"model": {k: v for k, v in model.items() if not _is_memory_entry(k)}}
    if "iteration" in ckpt:
        out["iteration"] = ckpt["iteration"]
    with PathManager.open(dst, "wb") as f:
        torch.save(out, f)
    return {
        "src_bytes": os.path.getsize(local),
        "dst_bytes": os.path.getsize(PathManager.get_local_path(dst)),
        "dropped": dropped,
    }
