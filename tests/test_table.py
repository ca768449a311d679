"""The cross-run table: its numbers equal each run's JSON summaries."""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

from dywsss.report.table import collect_rows, count_params, format_table, variant_of
from dywsss.errors import MissingInputError
from report_fixtures import make_data, make_run

NAMES = [f"im{i:02d}" for i in range(12)]
# fc.weight 20x8 + fc.bias 20 + bn.weight 3; BatchNorm running stats are not parameters
PARAMS = 20 * 8 + 20 + 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("table")
    voc, gt = make_data(tmp / "data", NAMES)
    a = make_run(tmp / "work_dirs", "run_a", voc, gt, NAMES, seed=0)
    b = make_run(tmp / "work_dirs", "run_b", voc, gt, NAMES, seed=1, network="vit_tiny_patch16_224",
                 extra_cfg="finetune = True\ncut_p = 0.5\n", ji_definition="paper")
    unfinished = tmp / "work_dirs" / "run_c"
    unfinished.mkdir()
    (unfinished / "config.py").write_text("session_name = 'run_c'\nnetwork = 'resnet18'\n")
    return [a, b, unfinished]


def _json(run: Path, name: str) -> dict:
    return json.loads((run / "eval" / "val_best" / name).read_text())


def test_csv_numbers_equal_the_json_summaries(runs):
    rows, notes = collect_rows(runs)
    assert [r.session for r in rows] == ["run_a", "run_b"]
    assert len(notes) == 1 and "run_c" in notes[0] and "unfinished" in notes[0]
    table = list(csv.DictReader(io.StringIO(format_table(rows, "csv"))))
    for run, line in zip(runs, table):
        ece, vice, ji = _json(run, "ece.json"), _json(run, "vice.json"), _json(run, "ji_curve.json")
        assert float(line["map"]) == pytest.approx(100 * ece["mAP"], abs=1e-9)
        assert float(line["acc_ml"]) == pytest.approx(100 * ece["acc_ml"], abs=1e-9)
        assert float(line["ece_ml"]) == pytest.approx(100 * ece["ece_ml"], abs=1e-9)
        assert float(line["vice"]) == vice["vice"]
        assert (float(line["vice_ci_low"]), float(line["vice_ci_high"])) == (vice["ci_low"], vice["ci_high"])
        assert float(line["best_miou"]) == pytest.approx(100 * ji["best_miou"], abs=1e-9)
        assert line["ji_definition"] == vice["ji_definition"]
        assert int(line["params"]) == PARAMS
    assert table[0]["model"] == "resnet18" and table[1]["model"] == "vit_tiny_patch16_224"


def test_markdown_cells_are_the_rounded_json_values(runs):
    rows, _ = collect_rows(runs[:2])
    lines = format_table(rows, "md").splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:4] == ["session", "model", "variant", "params (M)"] and "JI def." in header
    for run, line in zip(runs, lines[2:]):
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        ece, vice, ji = _json(run, "ece.json"), _json(run, "vice.json"), _json(run, "ji_curve.json")
        assert cells["mAP %"] == f"{100 * ece['mAP']:.2f}"
        assert cells["Acc %"] == f"{100 * ece['acc_ml']:.2f}"
        assert cells["ECE_ML %"] == f"{100 * ece['ece_ml']:.2f}"
        assert cells["VICE"] == f"{vice['vice']:.3f}"
        assert cells["VICE 95% CI"] == f"[{vice['ci_low']:.3f}, {vice['ci_high']:.3f}]"
        assert cells["JI (best mIoU %)"] == f"{100 * ji['best_miou']:.2f}"
        assert cells["JI def."] == vice["ji_definition"]
    assert "head only" in lines[3] and "random erasing p=0.5" in lines[3]


def test_latex_is_escaped(runs):
    rows, _ = collect_rows(runs[:2])
    tex = format_table(rows, "latex")
    assert tex.startswith("\\begin{tabular}") and "\\toprule" in tex and "\\bottomrule" in tex
    assert "vit\\_tiny\\_patch16\\_224" in tex and "ECE$_{ML}$ \\%" in tex
    assert all(line.count("&") == 11 for line in tex.splitlines() if line.endswith("\\\\"))
    with pytest.raises(ValueError, match="unknown table format 'xls'"):
        format_table(rows, "xls")


def test_count_params_and_recorded_count(runs, tmp_path):
    assert count_params(runs[0] / "model" / "best.pth") == PARAMS
    (runs[1] / "log" / "env.json").write_text(json.dumps({"num_params": 5_000_000}))
    try:
        rows, _ = collect_rows(runs[:2])
        assert [r.params for r in rows] == [PARAMS, 5_000_000]
    finally:
        (runs[1] / "log" / "env.json").unlink()
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth: cannot read checkpoint"):
        count_params(bad)


def test_variant_names_the_paper_factors():
    base = dict(network="resnet50", pretrained=True, finetune=False, optimizer=dict(weight_decay=5e-4), cut_p=0.0)
    assert variant_of(Config(base)) == "default"
    assert variant_of(Config({**base, "pretrained": "ckpt/resnet50_dino.pth"})) == "init resnet50_dino"
    assert variant_of(Config({**base, "finetune": True, "optimizer": dict(weight_decay=0)})) == \
        "fc only; no weight decay"


def test_cli(runs, tmp_path, capsys):
    sys.path.insert(0, str(Path("scripts").resolve()))
    import make_table

    out = tmp_path / "t.csv"
    assert make_table.main([*map(str, runs), "--format", "csv", "--out", str(out)]) == 0
    assert out.read_text().count("\n") == 3
    captured = capsys.readouterr()
    assert str(out) in captured.out and "run_c: unfinished" in captured.err
    with pytest.raises(MissingInputError, match="no finished, up-to-date runs"):
        make_table.main([str(runs[2])])
