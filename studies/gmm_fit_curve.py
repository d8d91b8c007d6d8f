#!/usr/bin/env python
"""Does the GMM fit the features? Held-out log-likelihood along a training run.

For every checkpoint of a per-pixel GMM run (model_XXXXXXX.pth, model_final.pth), on held-out
images: the mean log-likelihood of known pixels under their own class, log p(x | y) (max over
the class's components, as the model scores), the same under the best class, and, on an anomaly
split, the best-class log-likelihood of the anomaly pixels. Also the mean GMM std. A GMM that
fits the features makes the first rise during training while the anomaly pixels stay behind.

    python studies/gmm_fit_curve.py --config-file configs/demo/fpn_r18_gmm.yaml \
        --run output/study_demo_a/release_bootstrap --known gmmseg_demo_val --anomaly gmmseg_demo_anomaly

Prints a Markdown table and writes <run>/fit_curve.json (gmmseg.analysis.gmm_fit does the work).
"""

import argparse
import json
import os

from gmmseg.analysis.gmm_fit import fit_curve, fit_curve_table
from gmmseg.inference import inference_setup


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config-file", "--config", dest="config", required=True, metavar="FILE")
    ap.add_argument(
        "--run",
        required=True,
        help="OUTPUT_DIR of a finished run with periodic checkpoints (trained "
        "with SOLVER.CHECKPOINT_MAX_TO_KEEP 0 to keep them all)",
    )
    ap.add_argument("--known", required=True, help="held-out dataset with sem_seg labels")
    ap.add_argument("--anomaly", default=None, help="dataset with anomaly masks (optional)")
    ap.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config overrides the run was trained with"
    )
    args = ap.parse_args()
    cfg = inference_setup(args.config, args.opts)
    if cfg.MODEL.PREDICTOR.NAME != "gmm":
        raise SystemExit(
            f"{args.config}: MODEL.PREDICTOR.NAME is {cfg.MODEL.PREDICTOR.NAME!r}; this measures a GMM"
        )
    results = fit_curve(cfg, args.run, args.known, args.anomaly)
    json.dump(results, open(os.path.join(args.run, "fit_curve.json"), "w"), indent=1)
    print(fit_curve_table(results))


if __name__ == "__main__":
    main()
