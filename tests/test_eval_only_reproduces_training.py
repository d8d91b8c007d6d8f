"""`tools/train_net.py --eval-only MODEL.WEIGHTS <out>/model_final.pth` reproduces what the
training run reported at its end, for a per-pixel GMM model and a Mask2Former GMM model: mIoU (and every other number of the final evaluation: per-class
IoU, calibration, the anomaly AUROC / AP / FPR95 of every score) on the val and anomaly splits.

The training run evaluates its in-memory model after the last iteration (detectron2's EvalHook,
TEST.EVAL_PERIOD 0 = only at the end) and writes the results to metrics.json; the eval-only run
builds a new model and loads model_final.pth. They agree only if the checkpoint holds everything
the model evaluates with (weights, BN statistics, the GMM's means / stds after the last M-step)
and nothing changes the model between the checkpoint and the final evaluation. The schedule puts
an M-step on the last iteration (EM at iterations 0, 3, 6 of 7), so a checkpoint written before
the EM hook's update would show here.

Both runs are single-process on CPU with one thread and the same data order, so the numbers
are expected to be bitwise equal; the comparison allows 1e-6 relative.

Run as a script, this file is the eval-only run: train_net's `main` (what `cli` -> detectron2's
`launch` calls for one process; launch drops its return value) with the returned results
written as JSON to --dump-results.
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(ROOT, "tools", "train_net.py")
CONFIG = os.path.join(ROOT, "configs", "demo", "fpn_r18_gmm.yaml")
DATASETS = ("gmmseg_demo_val", "gmmseg_demo_anomaly")
OPTS = [
    "SOLVER.IMS_PER_BATCH",
    "2",
    "INPUT.MIN_SIZE_TRAIN",
    "(48,)",
    "SOLVER.MAX_ITER",
    "7",
    "SOLVER.WARMUP_ITERS",
    "2",
    "SOLVER.CHECKPOINT_PERIOD",
    "100",
    "MODEL.GMM.MEMORY_SIZE",
    "40",
    "MODEL.GMM.UPDATE_INTERVAL",
    "3",
    "MODEL.GMM.PUSH_ROWS",
    "all",
    "DATASETS.TEST",
    "(" + ",".join(f"'{d}'" for d in DATASETS) + ",)",
    "TEST.EVAL_PERIOD",
    "0",
    "TEST.OPEN_WORLD.PLOTS",
    "False",
    "DATALOADER.NUM_WORKERS",
    "0",
    "SEED",
    "11",
]
# (config, extra options, the GMM's name in the state dict); Mask2Former: M-steps at 0, 3, 6 as above
CASES = {
    "per_pixel": (CONFIG, [], "sem_seg_head.predictor"),
    "mask2former": (
        os.path.join(ROOT, "configs", "demo", "mask2former_r18_gmm.yaml"),
        ["MODEL.GMM.UPDATE_START", "0", "SOLVER.STEPS", "(5,)"],
        "sem_seg_head.predictor.class_embed",
    ),
}


def _env(demo_datasets_root):
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        DETECTRON2_DATASETS=str(demo_datasets_root),
        PYTHONWARNINGS="ignore",
    )
    env.pop("LOCAL_RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _run(cmd, env, log_path, timeout=900):
    with open(log_path, "w") as log:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout
        )
    with open(log_path) as f:
        assert proc.returncode == 0, f.read()[-5000:]


@pytest.fixture(scope="module", params=sorted(CASES))
def train_then_eval_only(request, tmp_path_factory, demo_datasets_root):
    config, extra, gmm = CASES[request.param]
    opts = OPTS + extra
    tmp = tmp_path_factory.mktemp(f"eval_only_{request.param}")
    train_dir, eval_dir = tmp / "train", tmp / "eval_only"
    env = _env(demo_datasets_root)
    _run(
        [sys.executable, TRAIN_NET, "--config-file", config]
        + opts
        + ["OUTPUT_DIR", str(train_dir)],
        env,
        str(train_dir) + ".stdout",
    )
    dump = tmp / "eval_only_results.json"
    _run(
        [
            sys.executable,
            os.path.abspath(__file__),
            "--dump-results",
            str(dump),
            "--config-file",
            config,
            "--eval-only",
        ]
        + opts
        + ["MODEL.WEIGHTS", str(train_dir / "model_final.pth"), "OUTPUT_DIR", str(eval_dir)],
        env,
        str(eval_dir) + ".stdout",
    )
    with open(train_dir / "metrics.json") as f:
        records = [json.loads(line) for line in f if line.strip()]
    with open(dump) as f:
        eval_only = json.load(f)
    return train_dir, records, eval_only, gmm


def _final_evaluation(records):
    """The metrics.json record of the final evaluation: the one with '<dataset>/...' keys."""
    evals = [r for r in records if any(k.startswith(DATASETS[0] + "/") for k in r)]
    assert len(evals) == 1, f"expected one evaluation record in metrics.json, got {len(evals)}"
    return {k: v for k, v in evals[0].items() if k != "iteration"}


def _flatten(results):
    from detectron2.evaluation.testing import flatten_results_dict

    return {k: float(v) for k, v in flatten_results_dict(results).items()}


def test_eval_only_reproduces_the_final_evaluation_of_training(train_then_eval_only, request):
    train_dir, records, eval_only, _ = train_then_eval_only
    reported = _final_evaluation(records)
    reproduced = _flatten(eval_only)
    # the model's default anomaly map: the per-pixel GMM's likelihood, the query GMM's query_likelihood
    case = request.node.callspec.params["train_then_eval_only"]
    density = f"gmmseg_demo_anomaly/anomaly/{'query_likelihood' if case == 'mask2former' else 'likelihood'}_AUROC"

    # the numbers the issue names are there, and are not degenerate
    for key in (
        "gmmseg_demo_val/sem_seg/mIoU",
        "gmmseg_demo_anomaly/sem_seg/mIoU",
        density,
        "gmmseg_demo_anomaly/anomaly/msp_AUROC",
        "gmmseg_demo_val/calibration/ECE",
    ):
        assert key in reported, sorted(reported)
        assert math.isfinite(reported[key]) and 0 < reported[key] < 100, (key, reported[key])
    assert reported[density] != 50.0

    assert reported.keys() == reproduced.keys(), sorted(set(reported) ^ set(reproduced))
    differ = {
        k: (reported[k], reproduced[k])
        for k in reported
        if not reproduced[k] == pytest.approx(reported[k], rel=1e-6, abs=1e-9)
    }
    assert not differ, f"eval-only differs from the training run's final evaluation: {differ}"


def test_the_checkpoint_holds_a_trained_gmm(train_then_eval_only):
    """What makes the comparison above meaningful: model_final.pth is the last iteration's model
    with EM having moved the GMM (a checkpoint without the GMM state would then evaluate another
    model), and the last logged iteration is the last one."""
    train_dir, records, _, gmm = train_then_eval_only
    ckpt = torch.load(train_dir / "model_final.pth", map_location="cpu", weights_only=True)
    assert ckpt["iteration"] == 6
    model = ckpt["model"]
    assert int(model[f"{gmm}.num_em_updates"]) >= 2
    stds = model[f"{gmm}.stds"]
    assert not torch.allclose(
        stds, torch.ones_like(stds)
    )  # M-steps changed the stds from their start
    assert max(r.get("iteration", -1) for r in records if "total_loss" in r) == 6


# --------------------------------------------------------------------------- the eval-only run
def _eval_only(argv):
    i = argv.index("--dump-results")
    dump, argv = argv[i + 1], argv[:i] + argv[i + 2 :]
    from _scripts import load_script
    from detectron2.engine import default_argument_parser

    train_net = load_script("tools/train_net.py")

    args = default_argument_parser().parse_args(argv)
    assert args.eval_only and args.num_gpus == 1
    results = train_net.main(args)
    with open(dump, "w") as f:
        json.dump(results, f, default=float)


if __name__ == "__main__":
    _eval_only(sys.argv[1:])
