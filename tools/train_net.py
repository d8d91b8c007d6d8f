#!/usr/bin/env python
"""Train or evaluate GMMSeg (and its softmax twin) with detectron2.

    python tools/train_net.py --config-file configs/demo/fpn_r18_gmm.yaml
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth
    python tools/train_net.py --config-file ... --num-gpus 2          # 2 processes (GLOO on CPU)
    python tools/train_net.py --config-file ... --resume              # continue from last_checkpoint
    # two machines (or two shells on one host), one command per machine:
    python tools/train_net.py --config-file ... --num-machines 2 --machine-rank 0 --dist-url tcp://HOST:PORT
    python tools/train_net.py --config-file ... --num-machines 2 --machine-rank 1 --dist-url tcp://HOST:PORT
    torchrun --nproc_per_node 2 tools/train_net.py --config-file ...  # environment-variable init
    # your own data: a folder dataset declared in the config (gmmseg/data/folder_dataset.py) ...
    python tools/train_net.py --config-file configs/user_data/fpn_r50_gmm.yaml DATASETS.FOLDER.ROOT /data/mine
    # ... or your own registration code, imported in every process
    python tools/train_net.py --register my_datasets.py --config-file ... DATASETS.TRAIN '("mine_train",)'

All of detectron2's default_argument_parser options apply, plus --register; trailing KEY VALUE
pairs override the config. The distributed backend follows MODEL.DEVICE (GLOO for "cpu", NCCL
for "cuda"; gmmseg/engine/launch.py). See docs/DISTRIBUTED.md.
"""

import logging
import os
import sys

from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from gmmseg import load_config
from gmmseg.data.folder_dataset import setup_folder_dataset
from gmmseg.data.registration_modules import import_registration_modules
from gmmseg.engine import Trainer
from gmmseg.engine.evaluate import evaluate_model, write_results
from gmmseg.engine.launch import launch, main_from_torchrun
from gmmseg.inference import build_inference_model


def argument_parser():
    parser = default_argument_parser()
    parser.add_argument(
        "--register",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE (dotted name or .py file) in every process before the datasets are "
        "used: your own DatasetCatalog registrations (repeatable)",
    )
    return parser


def build_config(args):
    """The config of the command line, not frozen, nothing registered."""
    return load_config(args.config_file, args.opts)


def setup(args):
    # runs in every training process: registrations made here reach the spawned workers too
    import_registration_modules(getattr(args, "register", []))
    cfg = build_config(args)
    setup_folder_dataset(cfg)  # DATASETS.FOLDER.* (and NUM_CLASSES 0 -> its class count)
    cfg.freeze()
    default_setup(cfg, args)
    # the project's own loggers (EM hook, predictors, data checks) into the console and log.txt
    setup_logger(
        cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="gmmseg", abbrev_name="gmmseg"
    )
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        # no GMM memory bank (MODEL.GMM.MEMORY_LAYOUT "none"): evaluation reads the means and stds only, and
        # the checkpoint is memory-mapped, so its bank is never read; weights-only loading; a checkpoint that
        # does not fit the config stops with the key and both values
        if cfg.TEST.AUG.ENABLED:
            raise NotImplementedError(
                "TEST.AUG (test-time augmentation) is not supported by this project"
            )
        model = build_inference_model(cfg, resume=args.resume)
        res = evaluate_model(cfg, model)  # {dataset: results}
        if comm.is_main_process():
            path = write_results(res, os.path.join(cfg.OUTPUT_DIR, "inference", "results.json"))
            logging.getLogger("gmmseg").info("Results written to %s", path)
        res = (
            res[cfg.DATASETS.TEST[0]] if len(res) == 1 else res
        )  # detectron2's form: one dataset unwrapped
        verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = argument_parser().parse_args(argv)
    # detectron2's default --dist-url is a fixed port per user: two runs on one machine would
    # collide. On a single machine without an explicit --dist-url, take a free port instead.
    if args.num_machines == 1 and not any(
        a == "--dist-url" or a.startswith("--dist-url=") for a in argv
    ):
        args.dist_url = "auto"
    print("Command Line Args:", args)
    device = build_config(args).MODEL.DEVICE  # the backend follows it (GLOO for cpu, NCCL for cuda)
    # torchrun sets these; launch() would otherwise spawn its own workers
    if "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ:
        if args.num_gpus != 1 or args.num_machines != 1:
            logging.getLogger(__name__).warning(
                "Started by torchrun: --num-gpus/--num-machines/--machine-rank are ignored; "
                "torchrun's --nnodes/--nproc_per_node decide the processes"
            )
        return main_from_torchrun(main, args, device)
    return launch(
        main,
        (args,),
        device=device,
        processes_per_machine=args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
    )


if __name__ == "__main__":
    cli()
