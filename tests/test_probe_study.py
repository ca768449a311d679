"""The probe study end to end on a tiny setup: probes trained by the stage runner's training stage,
the per-sample CSV of a CE probe, the table against the files it reads, a failing probe, a rerun.

One study (resnet18 from scratch at 48 px, 2 probe epochs, Grad-CAM) is run once for the module:
probes linear/bce and linear/ce run for real (each is seven stage processes); the two mlp2 probes
fail (their cells exit 1 at once, through the runner hook, to keep the run short).
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dywsss.errors import ConfigError, InputError, MissingInputError
from dywsss.study.cells import Cell, CellResult, run_cell
from dywsss.study.probes import load_probe_study, probe_cells, run_probe_study

torch.set_num_threads(1)
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


# ------------------------------------------------------------------ checks before any work (issue 13 review)
@pytest.fixture(scope="module")
def tiny(demo_voc, tmp_path_factory):
    """The tiny config alone (no study run): for the checks made before any work."""
    return dict(config=tiny_config(demo_voc, tmp_path_factory.mktemp("tiny")), demo=demo_voc)

def test_user_options_replace_earlier_values_of_their_keys(tiny, tmp_path):
    s = load_probe_study(tiny["config"], "x", heads=["linear"], losses=["bce"], methods=["gradcam"],
                         options=["probe_epochs=10", "gridpg_n_grids=20", "probe_epochs=3"], work_dir=tmp_path)
    assert s.options == ("probe_epochs=3", "gridpg_n_grids=20")
    cmd = probe_cells(s)[0].command
    assert "probe_epochs=3" in cmd and "probe_epochs=10" not in cmd and "gridpg_n_grids=20" in cmd


def test_run_sh_probes_keeps_the_users_options(tmp_path):
    """run.sh's demo options come first, the user's after: the user's key wins, the demo's other keys stay."""
    done = subprocess.run(["bash", "run.sh", "probes", "--dry-run", "--heads", "linear", "--losses", "bce",
                           "--methods", "cam", "--work-dir", str(tmp_path / "w"), "--options", "probe_epochs=30"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    cell = next(line for line in done.stdout.splitlines() if "run_stages.py" in line and "--session linear_bce" in line)
    assert "probe_epochs=30" in cell and "probe_epochs=10" not in cell
    assert "gridpg_n_grids=20" in cell and "gridpg_min_conf=0.5" in cell
    assert not (tmp_path / "w").exists()  # a dry run writes nothing


def test_demo_data_out_must_be_where_the_config_reads(tiny, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    with pytest.raises(ConfigError) as err:
        load_probe_study(tiny["config"], "x", heads=["linear"], losses=["bce"], methods=["gradcam"],
                         demo_args=f"--out {elsewhere} --train 8 --val 4", work_dir=tmp_path / "w")
    msg = str(err.value)
    assert f"--demo-data --out {elsewhere}" in msg and f"voc12_root={tiny['demo'] / 'VOC2012'}" in msg
    assert f"train_list={tiny['demo'] / 'train_aug.txt'}" in msg and "\n" not in msg
    assert not (tmp_path / "w").exists() and not elsewhere.exists()
    # the --out the config reads: the set is there, so no data cell, and its files were checked
    s = load_probe_study(tiny["config"], "x", heads=["linear"], losses=["bce"], methods=["gradcam"],
                         demo_args=f"--out {tiny['demo']} --train 8 --val 4", work_dir=tmp_path / "w")
    assert [c.name for c in probe_cells(s)] == ["linear_bce", "linear_bce_gridpg"]


def test_images_and_masks_are_checked_before_any_work(tiny, tmp_path):
    import shutil

    from dywsss.data.voc import read_image_list

    demo = tmp_path / "demo"
    shutil.copytree(tiny["demo"], demo)
    config = tiny_config(demo, tmp_path)
    kw = dict(heads=["linear"], losses=["bce"], methods=["gradcam"], work_dir=tmp_path / "w")
    train_image = demo / "VOC2012" / "JPEGImages" / f"{read_image_list(demo / 'train_aug.txt')[3]}.jpg"
    train_image.unlink()
    with pytest.raises(InputError, match=f"train_aug.txt: 1 bad file.*{train_image.name}"):
        load_probe_study(config, "x", **kw)
    shutil.copy(tiny["demo"] / "VOC2012" / "JPEGImages" / train_image.name, train_image)
    mask = demo / "VOC2012" / "SegmentationClassAug" / f"{read_image_list(demo / 'val.txt')[0]}.png"
    mask.unlink()
    with pytest.raises(InputError, match=f"{mask}: mask not found"):
        load_probe_study(config, "x", **kw)
    shutil.copy(tiny["demo"] / "VOC2012" / "SegmentationClassAug" / mask.name, mask)
    load_probe_study(config, "x", **kw)  # whole again
    assert not (tmp_path / "w").exists()


@pytest.mark.skipif((REPO / "voc12" / "VOC2012").exists(), reason="VOC 2012 is present here")
def test_shipped_lists_without_the_voc_tree_stop_the_study_at_once(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the config's data paths are relative to the checkout
    with pytest.raises(MissingInputError, match="voc12/VOC2012: dataset root not found"):
        load_probe_study(REPO / "config" / "resnet50.py", "x", heads=["linear"], losses=["bce"], methods=["gradcam"],
                         work_dir=tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_map_metrics_must_include_epg(tiny, tmp_path):
    want = r"probe linear_bce: map_metrics=\('gini',\).*reads epg.*map_metrics=\[epg,gini\]"
    with pytest.raises(ConfigError, match=want):
        load_probe_study(tiny["config"], "x", heads=["linear"], losses=["bce"], methods=["gradcam"],
                         options=["map_metrics=[gini]"], work_dir=tmp_path)


def test_a_method_the_probe_cannot_use_fails_before_training(tiny, tmp_path):
    with pytest.raises(ConfigError) as err:
        load_probe_study(tiny["config"], "x", heads=["linear", "mlp2"], losses=["bce"],
                         methods=["gradcam", "transformer_attribution"], work_dir=tmp_path / "w")
    msg = str(err.value)
    # a ResNet probe has no ViT blocks: both heads named, gradcam not
    assert "probe linear, cam_method=transformer_attribution" in msg
    assert "probe mlp2, cam_method=transformer_attribution" in msg
    assert "VisionTransformer" in msg and "cam_method=gradcam" not in msg
    assert not (tmp_path / "w").exists()


def test_gridpg_cell_runs_gridpg_then_the_report(tiny, tmp_path):
    from dywsss.stages import study_stages, without_stages

    def stages_run(cell: Cell) -> list[str]:
        cmd = list(cell.command)
        skip = cmd[cmd.index("--skip") + 1:cmd.index("--options")]
        opts = cmd[cmd.index("--options") + 1:]
        plan = study_stages(cmd[2], cmd[cmd.index("--session") + 1], opts, cmd[cmd.index("--list") + 1],
                            cmd[cmd.index("--weights") + 1])
        return [st.name for st in without_stages(plan.stages, skip)]

    kw = dict(heads=["linear"], losses=["bce"], methods=["gradcam", "cam"], work_dir=tmp_path)
    cells = {c.name: c for c in probe_cells(load_probe_study(tiny["config"], "x", **kw))}
    assert stages_run(cells["linear_bce"]) == ["train", "maps", "ji_curve", "blob_maps", "blob_curve", "per_sample",
                                               "ece", "vice", "report"]
    assert stages_run(cells["linear_bce_gridpg"]) == ["gridpg", "report"]  # the report again, after GridPG
    assert cells["linear_bce_gridpg"].depends == ("linear_bce",)
    session = tmp_path / "runs" / "linear_bce"
    grid_outputs = cells["linear_bce_gridpg"].outputs
    assert grid_outputs == (session / "eval" / "val_best" / "gridpg.json", session / "report.html")
    assert cells["linear_bce_cam_gridpg"].outputs[1] == session / "report_cam.html"
    assert "map_tag=cam" in cells["linear_bce_cam_gridpg"].command
    no_report = {c.name: c for c in probe_cells(load_probe_study(tiny["config"], "x", skip_stages=["sanity", "report"],
                                                                 **kw))}
    assert stages_run(no_report["linear_bce_gridpg"]) == ["gridpg"]
    assert len(no_report["linear_bce_gridpg"].outputs) == 1


# ------------------------------------------------------------------ collection (issue 13 review)
def test_ce_cap_note_in_the_summary(study):  # needs the study's run
    from dywsss.data.voc import load_cls_labels, read_image_list

    labels = load_cls_labels(study["demo"] / "cls_labels.json")
    counts = [int(np.asarray(labels[n]).sum()) for n in read_image_list(study["demo"] / "val.txt")]
    pos, total = sum(c > 0 for c in counts), sum(counts)
    summary = (study["study"].root / "summary.md").read_text()
    assert "## Reading a CE probe" in summary
    assert "pred_threshold=0.5 it predicts at most one class per image" in summary
    assert (f"Here {sum(c > 1 for c in counts)} of the {len(counts)} evaluation images have more than one class: a CE "
            f"probe can find at most {pos} of the {total} labels (recall <= {100 * pos / total:.2f}%, micro-F1 <= "
            f"{200 * pos / (pos + total):.2f}%)") in summary
    assert json.loads((study["study"].root / "probe_study.json").read_text())["ce_note"] in summary


def test_single_class_cap_by_hand():
    from dywsss.report.probes import micro_f1, single_class_cap

    labels = ["0 3", "5", "", "1 2 4"]  # 4 images, 6 labels, 3 labelled, 2 with more than one class
    cap = single_class_cap(labels)
    assert (cap["n_images"], cap["n_multi"], cap["n_labels"], cap["max_tp"]) == (4, 2, 6, 3)
    assert cap["max_recall"] == pytest.approx(3 / 6) and cap["max_f1"] == pytest.approx(2 * 3 / (3 + 6))
    best = pd.DataFrame(dict(label=labels, prediction=["3", "5", "", "2"]))  # one right class per labelled image
    assert micro_f1(best) == pytest.approx(cap["max_f1"])


def _eval_dir(where: Path, names: list[str], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    where.mkdir(parents=True)
    n = len(names)
    pd.DataFrame(dict(name_image=names, loss=rng.uniform(0.1, 1, n), probe_loss=rng.uniform(0.1, 1, n),
                      miou=rng.uniform(0, 1, n), epg=rng.uniform(0, 1, n), label=["1"] * n,
                      prediction=["1"] * n)).to_csv(where / "per_sample.csv", index=False)
    return where


def test_bce_vs_ce_reports_a_pair_with_other_images_and_goes_on(tmp_path):
    from dywsss.report.probes import answer_lines, bce_vs_ce, comparison_table

    names = [f"im{i}" for i in range(12)]
    dirs = {("linear", "bce"): _eval_dir(tmp_path / "lb", names, 0),
            ("linear", "ce"): _eval_dir(tmp_path / "lc", names, 1),
            ("mlp2", "bce"): _eval_dir(tmp_path / "mb", names, 2),
            ("mlp2", "ce"): _eval_dir(tmp_path / "mc", names[:-1] + ["other"], 3)}  # one image differs
    values = dict(map=0.5, f1=0.4, best_miou=0.3, epg=0.4, gridpg=None, vice=0.1, vice_epg=0.1,
                  vice_probe=0.1, vice_probe_epg=0.1)
    csvs = {k: pd.read_csv(d / "per_sample.csv") for k, d in dirs.items()}
    rows = [dict(values, probe=f"{h}_{loss}", head=h, loss=loss, method="gradcam", eval_dir=str(d),
                 ji=float(csvs[h, loss]["miou"].mean())) for (h, loss), d in dirs.items()]
    comp = bce_vs_ce(rows, n_boot=99, n_permutations=99).set_index("head")
    assert list(comp.index) == ["linear", "mlp2"]
    note = comp.loc["mlp2", "note"]
    assert note.startswith("not comparable: ") and str(dirs["mlp2", "ce"] / "per_sample.csv") in note
    assert "1 only in A, 1 only in B; e.g. 'im11' is in" in note  # the image the CE probe lacks
    assert all(pd.isna(comp.loc["mlp2", c]) for c in ("d_ji", "d_ji_ci_low", "d_vice", "d_vice_p", "map_bce"))
    diff = csvs["linear", "bce"]["miou"] - csvs["linear", "ce"]["miou"]  # same image order in both files
    assert comp.loc["linear", "note"] == ""
    assert comp.loc["linear", "d_ji"] == pytest.approx(diff.mean(), rel=1e-12)
    assert comp.loc["linear", "d_ji_ci_low"] < diff.mean() < comp.loc["linear", "d_ji_ci_high"]
    answer = answer_lines(comp.reset_index())
    assert answer[0].startswith("mlp2/gradcam: not comparable: ") and "left out of the counts" in answer[0]
    assert answer[1] == "mAP: BCE > CE in 0 of 1 (head, method) pairs"  # only the comparable pair counts
    assert any(a.startswith(f"JI: BCE > CE in {int(diff.mean() > 0)} of 1 (head, method) pairs") for a in answer)
    shown = comparison_table(comp.reset_index(), False)
    assert shown["note"].tolist() == ["", note]
    assert comparison_table(comp.reset_index(), True)["note"].tolist() == ["", note]
