#!/usr/bin/env python
"""Train or evaluate GMMSeg (and its softmax twin) with detectron2.

    python tools/train_net.py --config-file configs/demo/fpn_r18_gmm.yaml
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth
    python tools/train_net.py --config-file ... --num-gpus 2          # 2 processes (GLOO on CPU)
    python tools/train_net.py --config-file ... --resume              # continue from last_checkpoint

All of detectron2's default_argument_parser options apply; trailing KEY VALUE pairs override the config.
"""
import os

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results

from gmmseg import add_gmmseg_config
from gmmseg.checkpoint import check_checkpoint_matches_config
from gmmseg.engine import Trainer


def setup(args):
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        check_checkpoint_matches_config(cfg.MODEL.WEIGHTS, model)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            raise NotImplementedError("TEST.AUG (test-time augmentation) is not supported by this project")
        verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv=None):
    args = default_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    # torchrun sets these; detectron2's launch() would otherwise spawn its own workers
    if "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ:
        from gmmseg.engine.launch import main_from_torchrun

        return main_from_torchrun(main, args)
    return launch(
        main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
        dist_url=args.dist_url, args=(args,),
    )


if __name__ == "__main__":
    cli()
