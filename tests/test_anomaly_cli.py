"""The anomaly benchmarks from the command line, as docs/DATASETS_ANOMALY.md writes it:
`tools/train_net.py --eval-only ... DATASETS.TEST '("road_anomaly",)'` on a tiny fake of the Road
Anomaly release, with the demo GMM model (untrained: the command, not the numbers, is tested)."""

import json
import os

from test_eval_datasets import make_road_anomaly

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "demo", "fpn_r18_gmm.yaml")


def test_eval_only_on_an_anomaly_benchmark(tmp_path, monkeypatch):
    datasets = tmp_path / "datasets"
    make_road_anomaly(str(datasets))
    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets))
    monkeypatch.syspath_prepend(os.path.join(ROOT, "tools"))
    import train_net

    out = tmp_path / "out"
    args = train_net.argument_parser().parse_args(
        [
            "--config-file",
            CONFIG,
            "--eval-only",
            "MODEL.WEIGHTS",
            "",
            "MODEL.GMM.MEMORY_SIZE",
            "20",
            "DATASETS.TEST",
            "('road_anomaly',)",
            "OUTPUT_DIR",
            str(out),
        ]
    )
    results = train_net.main(args)
    metrics = results["anomaly"]  # one dataset: detectron2 returns its results unwrapped
    for score in ("likelihood", "msp", "entropy", "max_logit"):
        assert 0 <= metrics[f"{score}_AUROC"] <= 100
    saved = json.loads(
        (out / "inference" / "road_anomaly" / "anomaly_road_anomaly.json").read_text()
    )
    assert saved  # the metrics, pixel counts and error bounds, next to the curves and plots
