"""Trained vs refitted Gaussians of a finished run (studies/refit_study.py): tools/refit_gmm.py
writes <run>/<tag>/model_refit.pth (no retraining), which is evaluated like the trained model
(runs.evaluate_checkpoint)."""

import json
import os
from typing import Dict, Optional, Sequence, Tuple

from .processes import run_logged, tool_command
from .runs import evaluate_checkpoint
from .tables import metrics_of

__all__ = ["refit_and_evaluate"]


def refit_and_evaluate(
    config: str,
    run: str,
    dataset: str,
    opts: Sequence[str],
    tag: str = "refit",
    rounds: int = 10,
    variance_floor: Optional[float] = None,
) -> Tuple[Dict, Dict]:
    """(metrics of the trained model, metrics of the refitted one) on `dataset`, metrics_of both.

    `run`: a study's run folder with model_final.pth and results.json (runs.run_one; the trained
    figures are read from there). The refit (refit_gmm.py's output in <run>/<tag>/refit_stdout.txt)
    and its evaluation (<run>/<tag>/results.json, its files in <run>/<tag>/eval/) are reused when
    on disk. `opts`: the overrides the run was trained with."""
    run, config = (
        os.path.abspath(run),
        os.path.abspath(config),
    )  # the tools run from the repository root
    out_dir = os.path.join(run, tag)
    weights = os.path.join(out_dir, "model_refit.pth")
    result_path = os.path.join(out_dir, "results.json")
    if not os.path.exists(result_path):
        if not os.path.exists(weights):
            os.makedirs(out_dir, exist_ok=True)
            floor = [] if variance_floor is None else ["--variance-floor", str(variance_floor)]
            cmd = tool_command(
                "refit_gmm.py",
                "--config-file",
                config,
                "--output",
                weights,
                "--rounds",
                str(rounds),
                *floor,
                *opts,
                "MODEL.WEIGHTS",
                os.path.join(run, "model_final.pth"),
            )
            run_logged(cmd, os.path.join(out_dir, "refit_stdout.txt"), f"refitting {run}", env={})
        result = evaluate_checkpoint(
            config, opts, weights, [dataset], os.path.join(out_dir, "eval")
        )
        with open(result_path, "w") as f:
            json.dump(result, f, default=float)
    with open(result_path) as f:
        refitted = metrics_of(json.load(f), dataset)
    with open(os.path.join(run, "results.json")) as f:
        trained = metrics_of(json.load(f), dataset)
    return trained, refitted
