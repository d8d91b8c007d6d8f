"""studies/gmm_state_report.py (gmmseg.analysis.em_state): the EM facts read from a checkpoint,
on a hand-made state whose fill, updates and gain are counted here."""

import pytest
import torch
from _scripts import load_script

gmm_state_report = load_script("studies/gmm_state_report.py")


def _state(prefix="head."):
    # K = 2 classes x M = 2 components, D = 3, capacity 5 rows per component
    # filled [3, 0 | 5, 5]: 13 of 20 rows; class 0 holds 3 / 10 = 30 %, class 1 10 / 10 = 100 %
    # updates [2, 0 | 0, 0]: one component moved, class 1 never; gain [1, 3]: mean 2
    s = {
        "means": torch.zeros(2, 2, 3),
        "stds": torch.ones(2, 2, 3),
        "updates_per_component": torch.tensor([2, 0, 0, 0]),
        "num_em_updates": torch.tensor(2),
        "class_norm.weight": torch.tensor([1.0, 3.0]),
        "memory.bank": torch.zeros(4, 5, 3),
        "memory.filled": torch.tensor([3, 0, 5, 5]),
        "memory.stat_count": torch.tensor([3, 0, 5, 5]),
        "memory.stat_sum": torch.ones(4, 3, dtype=torch.long),
        "memory.stat_sumsq": torch.ones(4, 3, dtype=torch.long),
    }
    return {prefix + k: v for k, v in s.items()}


def test_report_of_a_hand_made_head(tmp_path, capsys):
    path = tmp_path / "model_0000099.pth"
    torch.save({"model": {**_state(), "backbone.w": torch.zeros(1)}, "iteration": 99}, path)
    gmm_state_report.main([str(path)])
    row = [line for line in capsys.readouterr().out.splitlines() if "(iter 100)" in line]
    assert len(row) == 1
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    assert cells[1:10] == [
        "head",
        "2 x 2 x 3",
        "13 / 20 (65 %)",
        "30 / 100 %",
        "1 / 4",
        "1",
        "0 / 0 / 2",
        "2",
        "2.00 [1.00, 3.00]",
    ]
    assert cells[10:12] == ["-", "-"]  # a checkpoint without the coverage counters
    assert float(cells[12]) >= 0


def test_report_names_a_class_locked_out(tmp_path, capsys):
    # the same head with its coverage counters: class 0 pushed 7 + 1 rows (5 + 1 real of 10),
    # class 1 none; class 1 labelled 40 times and never classified correctly
    state = _state()
    state["head.rows_pushed"] = torch.tensor([7, 1, 0, 0])
    state["head.training_pixels"] = torch.tensor([[60, 40], [50, 0], [90, 10]])
    path = tmp_path / "model_final.pth"
    torch.save({"model": state}, path)
    gmm_state_report.main([str(path), "--no-timing"])
    row = [line for line in capsys.readouterr().out.splitlines() if "model_final.pth" in line][0]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[10] == "0 / 60 %"
    assert cells[11] == (
        "1 never: recall 0.00 % of 40 labelled training pixels, predicted 10 times; "
        "1 rows: 0 of its 10 memory rows are real (median class: 3)"
    )


def test_report_refuses_a_checkpoint_without_em_head(tmp_path):
    path = tmp_path / "softmax.pth"
    torch.save({"model": {"backbone.w": torch.zeros(1)}}, path)
    with pytest.raises(SystemExit, match="softmax.pth holds no EM head"):
        gmm_state_report.main([str(path)])
    with pytest.raises(SystemExit, match="no such checkpoint file: .*missing.pth"):
        gmm_state_report.main([str(tmp_path / "missing.pth")])
