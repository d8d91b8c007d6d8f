"""`tools/train_net.py --register MODULE`: import the user's own dataset registrations.

A registration module is ordinary Python that calls detectron2's DatasetCatalog.register /
MetadataCatalog.get(name).set(...) when imported. train_net imports it in every training process
(the workers spawned by --num-gpus start from scratch and would not see a registration made
before launch). MODULE is a dotted module name importable from the working directory or
PYTHONPATH (`my_project.datasets`), or the path of a .py file (`path/to/my_datasets.py`).
"""

import importlib
import importlib.util
import os
import sys
from typing import Iterable, List

__all__ = ["import_registration_modules"]


def _import_file(path: str):
    name = "gmmseg_user_registration_" + os.path.splitext(os.path.basename(path))[0]
    if name in sys.modules:  # imported already in this process: registering twice would fail
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def import_registration_modules(specs: Iterable[str]) -> List[object]:
    """Import every module of `specs` (dotted names or .py paths); returns the modules.

    A module that cannot be found stops with an ImportError naming it and what was tried.
    """
    modules = []
    for spec in specs:
        if spec.endswith(".py") or os.sep in spec:
            if not os.path.isfile(spec):
                raise ImportError(f"--register {spec!r}: no such file ({os.path.abspath(spec)!r})")
            modules.append(_import_file(os.path.abspath(spec)))
            continue
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(
                0, os.getcwd()
            )  # `python tools/train_net.py` puts tools/, not the cwd, on the path
        try:
            modules.append(importlib.import_module(spec))
        except ModuleNotFoundError as e:
            if e.name and spec.startswith(e.name):
                raise ImportError(
                    f"--register {spec!r}: no module named {e.name!r} on the Python path (the working "
                    f"directory {os.getcwd()!r} and PYTHONPATH); give a module name or a .py file"
                ) from e
            raise
    return modules
