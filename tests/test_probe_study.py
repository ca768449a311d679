"""The probe study end to end on a tiny setup: probes trained by the stage runner's training stage,
the per-sample CSV of a CE probe, the table against the files it reads, a failing probe, a rerun.

One study (resnet18 from scratch at 48 px, 2 probe epochs, Grad-CAM) is run once for the module:
probes linear/bce and linear/ce run for real (each is seven stage processes); the two mlp2 probes
fail (their cells exit 1 at once, through the runner hook, to keep the run short).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dywsss.errors import ConfigError
from dywsss.study.cells import Cell, CellResult, run_cell
from dywsss.study.probes import load_probe_study, probe_cells, run_probe_study

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def tiny_config(demo: Path, where: Path) -> Path:
    cfg = where / "probe_tiny.py"
    cfg.write_text("\n".join([
        f'_base_ = ["{REPO / "config" / "_base_.py"}"]',
        f'list_root = "{demo}"', f'voc12_root = "{demo / "VOC2012"}"',
        f'gt_dir = "{demo / "VOC2012" / "SegmentationClassAug"}"', f'cls_label = "{demo / "cls_labels.json"}"',
        f'train_list = "{demo / "train_aug.txt"}"', *(f'{k} = "{demo / "val.txt"}"' for k in
                                                   ("val_list", "infer_list", "eval_list")),
        'network = "resnet18"', "pretrained = False", "crop_size = 48", "num_workers = 0", 'device = "cpu"',
        "batch_size = 8", "probe_epochs = 2", "probe_batch_size = 8", "probe_hidden = 8", "bootstrap = 50",
        'map_metrics = ("epg",)', "cam_flip = False", ""]))
    return cfg


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def study(demo_voc, tmp_path_factory):
    where = tmp_path_factory.mktemp("probe_study")
    config = tiny_config(demo_voc, where)
    s = load_probe_study(config, "tiny", heads=["linear", "mlp2"], losses=["bce", "ce"], methods=["gradcam"],
                         work_dir=where / "study", skip_stages=["sanity", "blob_maps", "blob_curve", "report",
                                                                "gridpg"],
                         n_boot=50, n_permutations=99, jobs=2)
    logs: list[str] = []
    state, out = run_probe_study(s, log=logs.append, runner=failing_mlp2)
    return dict(study=s, state=state, out=out, logs=logs, config=config, demo=demo_voc,
                table=pd.read_csv(s.root / "probe_table.csv"))


def failing_mlp2(cell: Cell, env=None) -> CellResult:
    """Run a cell, except the mlp2 probes' cells: they fail with exit status 3 and a log line."""
    if cell.meta.get("head") != "mlp2":
        return run_cell(cell, env)
    cell.log.parent.mkdir(parents=True, exist_ok=True)
    cell.log.write_text("[test] this probe fails\n")
    return CellResult(cell.name, 3, 0.0, "")


def test_probe_sessions_train_through_the_stage_runner(study):
    s, state = study["study"], study["state"]
    assert state["linear_bce"] == state["linear_ce"] == "done"
    for name in ("linear_bce", "linear_ce"):
        root = s.runs_dir / name
        ckpt = torch.load(root / "model" / "last.pth", map_location="cpu", weights_only=True)
        head, loss = name.split("_")
        assert ckpt["epoch"] == 2 and ckpt["arch"]["head"]["type"] == head and ckpt["probe"]["loss"] == loss
        stamps = json.loads((root / "log" / "stages.json").read_text())
        train_cmd = stamps["train"]["command"]
        assert "train_multi_scale=True" in train_cmd and f"probe={head}" in train_cmd
        assert (s.root / "feature_cache").is_dir()  # the study's shared cache


def test_ce_probe_csv_has_softmax_probabilities_and_its_own_loss(study):
    from dywsss.data.transforms import prediction_transform
    from dywsss.data.voc import image_path, load_cls_labels, load_image, read_image_list
    from dywsss.metrics.per_sample import PROB_COLUMNS, ids_to_multi_hot
    from dywsss.models.spec import load_trained_model

    s = study["study"]
    root = s.runs_dir / "linear_ce"
    df = pd.read_csv(root / "eval" / "val_best" / "per_sample.csv", dtype={"label": str, "name_image": str})
    trained = load_trained_model(root / "model" / "best.pth")
    tf = prediction_transform("center_crop", 48, trained.spec.mean, trained.spec.std)  # the per-sample input
    demo = study["demo"] / "VOC2012"
    names = read_image_list(study["demo"] / "val.txt")
    assert list(df["name_image"]) == names
    with torch.no_grad():
        z = trained.model(torch.stack([tf(load_image(image_path(demo, n))) for n in names])).double().numpy()
    y = ids_to_multi_hot(df["label"].fillna("").tolist())
    softmax = np.exp(z - z.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    np.testing.assert_allclose(df[list(PROB_COLUMNS)].to_numpy(), softmax, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(df[list(PROB_COLUMNS)].sum(axis=1), 1.0, rtol=1e-6)
    log_softmax = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    ce = -((y / y.sum(1, keepdims=True)) * log_softmax).sum(1)
    np.testing.assert_allclose(df["probe_loss"].to_numpy(), ce, rtol=1e-5, atol=1e-7)
    bce = np.mean(np.logaddexp(0, z) - y * z, axis=1)  # Eq. 7 stays in the loss column
    np.testing.assert_allclose(df["loss"].to_numpy(), bce, rtol=1e-5, atol=1e-7)
    labels = load_cls_labels(study["demo"] / "cls_labels.json")
    assert all(sorted(np.flatnonzero(labels[n]).tolist()) == np.flatnonzero(r).tolist() for n, r in zip(names, y))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))


def test_table_numbers_equal_the_files_they_come_from(study):
    s = study["study"]
    table = study["table"]
    assert sorted(zip(table["probe"], table["method"])) == [("linear_bce", "gradcam"), ("linear_ce", "gradcam")]
    for _, row in table.iterrows():
        root = s.runs_dir / row["probe"]
        ev = root / "eval" / "val_best"
        ece = json.loads((ev / "ece.json").read_text())
        vice = json.loads((ev / "vice.json").read_text())
        vepg = json.loads((ev / "vice_epg.json").read_text())
        curve = json.loads((ev / "ji_curve.json").read_text())
        mm = json.loads((ev / "map_metrics.json").read_text())
        assert row["map"] == pytest.approx(100 * ece["mAP"], rel=1e-12)
        assert row["acc_ml"] == pytest.approx(100 * ece["acc_ml"], rel=1e-12)
        assert row["ece_ml"] == pytest.approx(100 * ece["ece_ml"], rel=1e-12)
        assert row["best_miou"] == pytest.approx(100 * curve["best_miou"], rel=1e-12)
        assert row["epg"] == pytest.approx(100 * mm["metrics"]["epg"]["mean"], rel=1e-12)
        assert (row["vice"], row["vice_ci_low"], row["vice_ci_high"]) == pytest.approx(
            (vice["vice"], vice["ci_low"], vice["ci_high"]), rel=1e-12)
        assert row["vice_epg"] == pytest.approx(vepg["vice"], rel=1e-12)
        csv = pd.read_csv(ev / "per_sample.csv", dtype={"label": str, "prediction": str}, keep_default_na=False)
        assert row["vice_probe"] == pytest.approx(_pearson(-csv["probe_loss"].to_numpy(), csv["miou"].to_numpy()),
                                                  rel=1e-9)
        assert row["ji"] == pytest.approx(100 * csv["miou"].mean(), rel=1e-9)
        y, p = (np.array([[c in str(v).split() for c in map(str, range(20))] for v in csv[col]])
                for col in ("label", "prediction"))  # ids are written as space-separated numbers
        tp = (y & p).sum()
        assert row["f1"] == pytest.approx(100 * 2 * tp / (2 * tp + (~y & p).sum() + (y & ~p).sum()), rel=1e-12)
        assert row["weights_sha256"] == sha256(root / "model" / "best.pth")
        assert np.isnan(row["gridpg"])  # GridPG left out of this study
    comp = pd.read_csv(s.root / "bce_vs_ce.csv")
    assert list(zip(comp["head"], comp["method"])) == [("linear", "gradcam")]
    by = table.set_index("probe")
    assert comp["d_epg"].iloc[0] == pytest.approx(by.loc["linear_bce", "epg"] - by.loc["linear_ce", "epg"], rel=1e-9)
    assert comp["d_epg_ci_low"].iloc[0] <= comp["d_epg"].iloc[0] <= comp["d_epg_ci_high"].iloc[0]
    assert comp["d_vice"].iloc[0] == pytest.approx(by.loc["linear_bce", "vice"] - by.loc["linear_ce", "vice"])
    record = json.loads((s.root / "probe_study.json").read_text())
    srcs = {r["probe"]: r["sources"] for r in record["rows"]}
    best = s.runs_dir / "linear_ce" / "model" / "best.pth"
    assert srcs["linear_ce"][str(best)] == sha256(best)
    from dywsss.provenance import read_png_provenance

    png = read_png_provenance(s.root / "figures" / "epg.png")
    assert {r["weights_sha256"] for r in png["rows"]} == set(table["weights_sha256"])
    assert "| linear_ce | linear | ce | gradcam |" in (s.root / "probe_table.md").read_text()
    assert "\\begin{tabular}" in (s.root / "probe_table.tex").read_text()


def test_failing_probe_is_reported_and_the_others_finish(study):
    state = study["state"]
    assert (state["mlp2_bce"], state["mlp2_ce"], state["linear_bce"], state["linear_ce"]) == (
        "failed", "failed", "done", "done")
    fails = study["out"]["failures"]
    assert [(f["probe"], f["status"], f["reason"]) for f in fails] == [("mlp2_bce", "failed", "exit status 3"),
                                                                     ("mlp2_ce", "failed", "exit status 3")]
    assert Path(fails[0]["log"]).read_text() == "[test] this probe fails\n"
    summary = (study["study"].root / "summary.md").read_text()
    assert "mlp2_ce/gradcam: failed (exit status 3)" in summary and "2 (probe, method) evaluations finished" in summary
    assert any("mlp2_ce" in line and "FAILED" in line for line in study["logs"])
    status = json.loads((study["study"].root / "status.json").read_text())
    assert status["cells"]["mlp2_bce"]["status"] == "failed" and status["cells"]["linear_ce"]["status"] == "done"


def test_rerun_skips_finished_work(study):
    s = study["study"]
    weights = {n: (s.runs_dir / n / "model" / "best.pth").stat().st_mtime_ns for n in ("linear_bce", "linear_ce")}
    ran: list[str] = []

    def record(cell, env=None):
        ran.append(cell.name)
        return failing_mlp2(cell, env)

    state, out = run_probe_study(s, log=lambda m: None, runner=record)
    assert state["linear_bce"] == state["linear_ce"] == "up_to_date"
    assert sorted(ran) == ["mlp2_bce", "mlp2_ce"]  # failed probes are retried (and fail again); nothing else runs
    assert {n: (s.runs_dir / n / "model" / "best.pth").stat().st_mtime_ns for n in weights} == weights
    assert len(out["rows"]) == 2 and pd.read_csv(s.root / "probe_table.csv").equals(study["table"])


def test_study_is_checked_before_any_work(study, tmp_path):
    config = study["config"]
    with pytest.raises(ConfigError, match="--heads: unknown mlp9"):
        load_probe_study(config, "x", heads=["mlp9"], work_dir=tmp_path)
    with pytest.raises(ConfigError, match="sets .*cam_method"):
        load_probe_study(config, "x", options=["cam_method=cam"], work_dir=tmp_path)
    with pytest.raises(ConfigError, match="probe_epochs"):
        load_probe_study(config, "x", options=["probe_epochs=0"], work_dir=tmp_path)
    with pytest.raises(ConfigError, match="--skip maps"):
        load_probe_study(config, "x", skip_stages=["maps"], work_dir=tmp_path)
    s = load_probe_study(config, "x", heads=["linear", "bcos_mlp2"], losses=["ce"], work_dir=tmp_path)
    cells = {c.name: c for c in probe_cells(s)}
    # cam explains the linear probe only, bcos the B-cos head only; the first method is the session's own
    assert list(cells) == ["linear_ce", "linear_ce_gridpg", "linear_ce_gradcam", "linear_ce_gradcam_gridpg",
                           "bcos_mlp2_ce", "bcos_mlp2_ce_gridpg", "bcos_mlp2_ce_bcos", "bcos_mlp2_ce_bcos_gridpg"]
    assert "cam_method=cam" in cells["linear_ce"].command and "map_tag=gradcam" in cells["linear_ce_gradcam"].command
    assert "cam_method=gradcam" in cells["bcos_mlp2_ce"].command
    assert cells["linear_ce_gradcam"].depends == ("linear_ce",)
    assert sys.executable == cells["linear_ce"].command[0]
