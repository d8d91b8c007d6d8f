#!/usr/bin/env python
"""Which function of a trained GMM detects anomalies best? Candidates from one forward pass of a
finished run (gmmseg.analysis.gmm_scores), no retraining.

    python studies/gmm_score_study.py --config-file configs/camvid/segformer_lite0_openset_gmm.yaml \
        --run output/study/gmm/seed1 [--run ...] --dataset camvid_openset_val [KEY VALUE ...]

Each run's model_final.pth is evaluated; prints mean +- std over the runs and writes
<first run>/../score_study.json (score_study_floorF.json with --variance-floor F). Data: $DETECTRON2_DATASETS.
"""

import argparse
import json
import os

import torch


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config-file", "--config", dest="config", required=True, metavar="FILE")
    ap.add_argument("--run", action="append", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument(
        "--variance-floor",
        type=float,
        help="re-floor the trained stds before scoring: std' = sqrt(std^2 - trained floor + F)",
    )
    ap.add_argument("opts", nargs=argparse.REMAINDER)
    args = ap.parse_args()

    from detectron2.data import MetadataCatalog

    from gmmseg.analysis.gmm_scores import score_study
    from gmmseg.analysis.head_hooks import gmm_head
    from gmmseg.data.mapper import build_sem_seg_test_loader
    from gmmseg.inference import build_inference_model, inference_setup
    from gmmseg.studies.tables import score_table

    reports = {}
    for run in args.run:
        # the run's weights replace the ImageNet ones: do not load those first
        cfg = inference_setup(args.config, args.opts + ["MODEL.TIMM.EFFICIENTNET_LITE_WEIGHTS", ""])
        model = build_inference_model(cfg, os.path.join(run, "model_final.pth"))  # no memory bank
        if args.variance_floor is not None:
            p = gmm_head(model, "gmm_score_study --variance-floor").predictor
            with torch.no_grad():
                p.stds.copy_(
                    (p.stds.double() ** 2 - p.variance_floor + args.variance_floor)
                    .clamp_min(0)
                    .sqrt()
                )
        names = MetadataCatalog.get(args.dataset).stuff_classes
        reports[run] = score_study(model, build_sem_seg_test_loader(cfg, args.dataset), names)
        print(
            run,
            json.dumps(
                {k: v for k, v in reports[run].items() if k.startswith(("anomalies", "best"))}
            ),
        )
    print(score_table(reports))
    name = (
        "score_study.json"
        if args.variance_floor is None
        else f"score_study_floor{args.variance_floor:g}.json"
    )
    out = os.path.join(os.path.dirname(os.path.abspath(args.run[0])), name)
    with open(out, "w") as f:
        json.dump(reports, f, indent=1)


if __name__ == "__main__":
    main()
