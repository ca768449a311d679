"""scripts/compare_methods.py (issue 12): several attribution methods on one trained model.

A tiny trained session (resnet18 at 48 px, 1 epoch of 2 steps) and three methods (cam,
gradient, occlusion with a small window), maps at one scale without flip. To keep the file
fast, the stage commands run in this process (``runpy``, the scripts' own ``__main__``: the
commands the stage runner would start) and the figures of the ECE and VICE stages (a dozen
per method, tested in their own files) are written as 1-pixel PNGs; compare_methods.png is real.
"""
from __future__ import annotations

import hashlib
import json
import math
import runpy
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import dywsss.stages as stages_mod
import dywsss.viz.compare_methods  # noqa: F401  (binds the real save_figure before the stages' is stubbed)
import dywsss.viz.map_metrics
import dywsss.viz.reliability
import dywsss.viz.vice_plot
from dywsss import provenance
from dywsss.config import load_config
from dywsss.engine.train import train
from dywsss.errors import ConfigError, StaleError
from dywsss.mapfile import read_stamp

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["cam", "gradient", "occlusion"]
OPTIONS = ["insdel_steps=4", "occlusion_window=16", "occlusion_stride=8", "rise_masks=64", "bootstrap=50",
           "cam_scales=[1.0]", "cam_flip=False"]


class InProcess:
    """Stand-in for ``subprocess.run`` in the stage runner: runs ``python SCRIPT ARGS`` here, counting calls."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, cmd, cwd=None, stdout=None, stderr=None, env=None):
        script, *args = list(cmd)[1:]
        self.calls.append([script, *args])
        argv = sys.argv
        sys.argv = [script, *args]
        try:
            runpy.run_path(script, run_name="__main__")
            rc = 0
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.argv = argv
        return subprocess.CompletedProcess(cmd, rc)


def _pixel_png(fig, path, *args, **kwargs) -> Path:
    from PIL import Image

    Image.new("RGB", (1, 1)).save(path)
    return Path(path)


def _patch_stages(mp: pytest.MonkeyPatch) -> InProcess:
    runner = InProcess()
    mp.setattr(stages_mod.subprocess, "run", runner)
    for mod in (dywsss.viz.map_metrics, dywsss.viz.reliability, dywsss.viz.vice_plot):
        mp.setattr(mod, "save_figure", _pixel_png)
    return runner


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "locks" not in p.parts}


@pytest.fixture(scope="module")
def session(demo_voc, tmp_path_factory):
    """A trained session with the three methods compared once; returns its paths and the runner."""
    torch.set_num_threads(1)
    work = tmp_path_factory.mktemp("compare")
    d = demo_voc
    cfg = load_config(ROOT / "config/demo.py", dict(
        list_root=str(d), voc12_root=str(d / "VOC2012"), gt_dir=str(d / "VOC2012" / "SegmentationClassAug"),
        cls_label=str(d / "cls_labels.json"), train_list=str(d / "train_aug.txt"), val_list=str(d / "val.txt"),
        infer_list=str(d / "val.txt"), eval_list=str(d / "val.txt"), batch_size=8, max_epoches=1,
        max_steps_per_epoch=2, crop_size=48, resize_long=(48, 64), num_workers=0, device="cpu", deterministic=True,
        work_dir_root=str(work), session_name="s", cam_batch_size=4, network="resnet18", pretrained=False,
        train_multi_scale=True))
    train(cfg)
    from dywsss.study.methods import compare_methods

    with pytest.MonkeyPatch.context() as mp:
        runner = _patch_stages(mp)
        comparison = compare_methods(work / "s", ",".join(METHODS), options=OPTIONS, log=lambda s: None)
    return dict(root=work / "s", comparison=comparison, runner=runner)


def _eval(root: Path, method: str) -> Path:
    return root / "eval" / f"val_best_{method}"


def test_table_numbers_are_those_of_each_methods_files(session):
    root = session["root"]
    table = pd.read_csv(root / "compare_methods.csv")
    assert list(table["method"]) == METHODS
    record = json.loads((root / "compare_methods.json").read_text())
    weights_sha = hashlib.sha256((root / "model" / "best.pth").read_bytes()).hexdigest()
    assert record["weights_sha256"] == weights_sha
    md = (root / "compare_methods.md").read_text()
    for _, row in table.iterrows():
        m, ev = row["method"], _eval(root, row["method"])
        curve = json.loads((ev / "ji_curve.json").read_text())
        means = json.loads((ev / "map_metrics.json").read_text())["metrics"]
        vices = json.loads((ev / "vice_metrics.json").read_text())["metrics"]
        expect = {"best_miou": curve["best_miou"], "best_threshold": curve["best_threshold"],
                  "n": json.loads((ev / "vice.json").read_text())["n"]}
        for metric in ("epg", "pg", "insertion", "deletion"):
            expect[metric] = means[metric]["mean"]
        for metric in ("miou", "epg", "pg", "insertion", "deletion"):
            for key, col in (("vice", f"vice_{metric}"), ("ci_low", f"vice_{metric}_ci_low"),
                             ("ci_high", f"vice_{metric}_ci_high")):
                expect[col] = vices[metric][key]
        for col, value in expect.items():
            got = row[col]
            assert (value is None and math.isnan(got)) or got == pytest.approx(value, rel=1e-12, abs=0), (m, col)
        # the markdown row shows the same numbers at display precision
        line = next(s for s in md.splitlines() if s.startswith(f"| {m} |"))
        assert f"{100 * curve['best_miou']:.2f}" in line and f"{means['epg']['mean']:.3f}" in line
        assert f"{vices['deletion']['vice']:.3f} [{vices['deletion']['ci_low']:.3f}, " in line
        # the record: each method's maps stamp is the one every map file carries, and its CSV's sha256
        prov = record["methods"][m]
        maps = root / prov["maps_dir"]
        assert maps == root / "test" / f"cam_val_best_{m}"
        assert {read_stamp(p) for p in maps.glob("*.npz")} == {prov["maps_stamp"]}
        csv = ev / "per_sample.csv"
        assert prov["csv_sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()
        assert {"insertion", "deletion", "epg", "pg"} <= set(pd.read_csv(csv).columns)
        assert prov["metric_settings"]["insdel_steps"] == 4
    assert "\\begin{tabular}" in (root / "compare_methods.tex").read_text()
    assert provenance.read_png_provenance(root / "compare_methods.png")["weights_sha256"] == weights_sha


def test_methods_write_apart_and_the_session_trained_stages_never_run(session):
    root, calls = session["root"], session["runner"].calls
    scripts = [Path(c[0]).name for c in calls]
    assert "make_blob_maps.py" not in scripts and "gridpg.py" not in scripts and "sanity_checks.py" not in scripts
    assert all("train_multi_scale=True" not in c for c in calls)
    assert scripts.count("run_resnet50.py") == len(METHODS)  # one map stage per method
    assert not (root / "test" / "cam_val_best").exists()  # the untagged evaluation is left alone
    for m in METHODS:
        assert json.loads((root / "test" / f"cam_val_best_{m}" / "maps_meta.json").read_text())["method"] == m
        assert (root / "log" / f"stages_{m}.json").is_file()


def test_method_parameters_reach_only_their_method_and_metric_keys_only_the_metric_stages(session):
    root, calls = session["root"], session["runner"].calls
    maps_cmd = {next(o for o in c if o.startswith("map_tag=")).split("=")[1]: c
                for c in calls if Path(c[0]).name == "run_resnet50.py"}
    per_sample = [c for c in calls if Path(c[0]).name == "compute_each_image_loss.py"]
    assert "occlusion_window=16" in maps_cmd["occlusion"] and "occlusion_window=16" not in maps_cmd["cam"]
    assert "rise_masks=64" in maps_cmd["cam"]  # a parameter of no compared method reaches every method
    assert not any(o.startswith(("insdel_steps=", "map_metrics=")) for c in maps_cmd.values() for o in c)
    assert all("insdel_steps=4" in c and any(o.startswith("map_metrics=") and "insertion" in o for o in c)
               for c in per_sample) and len(per_sample) == len(METHODS)


def test_second_run_skips_finished_methods_and_changes_no_map(session):
    from dywsss.study.methods import compare_methods

    root = session["root"]
    before = {k: v for k, v in tree_hashes(root).items() if k.startswith("test/")}
    with pytest.MonkeyPatch.context() as mp:
        runner = _patch_stages(mp)
        compare_methods(root, ",".join(METHODS), options=OPTIONS, log=lambda s: None)
    assert runner.calls == []
    assert {k: v for k, v in tree_hashes(root).items() if k.startswith("test/")} == before and before


def test_unknown_method_is_a_one_line_config_error_before_any_work(session):
    root = session["root"]
    before = tree_hashes(root)
    done = subprocess.run([sys.executable, "scripts/compare_methods.py", str(root), "--methods", "cam,gradcamm"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "unknown attribution method 'gradcamm'; did you mean gradcam" in done.stderr
    assert tree_hashes(root) == before


def test_a_method_its_explainer_refuses_is_a_config_error_naming_it_before_any_work(session):
    from dywsss.study.methods import plan_methods

    root = session["root"]
    before = tree_hashes(root)
    with pytest.raises(ConfigError, match=r"^--methods occlusion: occlusion_stride=8: must not exceed"):
        plan_methods(root, ["cam", "occlusion"], options=["occlusion_window=4", "occlusion_stride=8"])
    with pytest.raises(ConfigError, match=r"--options map_tag=\.\.\.: set by compare_methods"):
        plan_methods(root, ["cam"], options=["map_tag=x"])
    assert tree_hashes(root) == before


def test_dry_run_with_several_jobs_writes_nothing(session, capsys):
    from dywsss.study.methods import compare_methods

    root = session["root"]
    before = tree_hashes(root)
    files = sorted(root.rglob("*"))
    assert compare_methods(root, ",".join(METHODS), options=OPTIONS, jobs=2, force=True, dry_run=True) is None
    assert sorted(root.rglob("*")) == files and tree_hashes(root) == before
    assert not list((root / "log").glob("compare_*.log"))
    out = capsys.readouterr().out
    assert all(f"[{m}] [maps] redo: forced" in out for m in METHODS)  # it did say what would run


def test_a_failing_stage_is_one_line_on_stderr_and_its_exit_status(session, capsys):
    """scripts/compare_methods.py as scripts/run_stages.py: the stage's status, no traceback, nothing recorded."""
    root = session["root"]
    before = tree_hashes(root)
    script = runpy.run_path(str(ROOT / "scripts" / "compare_methods.py"), run_name="compare_methods_cli")
    calls = []

    def failing(cmd, cwd=None, stdout=None, stderr=None, env=None):
        calls.append(list(cmd))
        return subprocess.CompletedProcess(cmd, 3)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stages_mod.subprocess, "run", failing)
        rc = script["main"]([str(root), "--methods", "cam", "--options", *OPTIONS, "--force", "cam"])
    err = capsys.readouterr().err
    assert rc == 3 and len(calls) == 1 and Path(calls[0][1]).name == "run_resnet50.py"
    assert err.startswith("compare_methods: stage maps failed (exit status 3): ") and err.count("\n") == 1, err
    assert "Traceback" not in err and tree_hashes(root) == before


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_table_comes_from_the_weights_the_stages_used(session, tmp_path):
    """A copy of the trained session with a last.pth that differs from best.pth, and no untagged evaluation.
    One method alone on it (its only evaluation is eval/val_best_cam, which must not be read as list
    'val_best', weights 'cam'), then the same method with --options weights=last.pth: the table must come
    from last.pth's evaluation, not from the session config's weights (best.pth)."""
    import shutil

    from dywsss.study.methods import compare_methods

    root, s2 = session["root"], tmp_path / "s2"
    (s2 / "model").mkdir(parents=True)
    shutil.copy2(root / "config.py", s2 / "config.py")
    shutil.copy2(root / "model" / "best.pth", s2 / "model" / "best.pth")
    ckpt = torch.load(root / "model" / "last.pth", map_location="cpu", weights_only=True)
    key = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][key] = ckpt["model"][key] + 1.0
    torch.save(ckpt, s2 / "model" / "last.pth")

    def check(comparison, weights: str) -> None:
        ev = s2 / "eval" / f"val_{weights}_cam"
        record = json.loads((s2 / "compare_methods.json").read_text())
        assert (record["list"], record["weights"]) == ("val", weights)
        assert record["weights_sha256"] == _sha(s2 / "model" / f"{weights}.pth")
        assert record["methods"]["cam"]["eval_dir"] == f"eval/val_{weights}_cam"
        maps_meta = json.loads((s2 / "test" / f"cam_val_{weights}_cam" / "maps_meta.json").read_text())
        assert maps_meta["weights_sha256"] == _sha(s2 / "model" / f"{weights}.pth")
        curve = json.loads((ev / "ji_curve.json").read_text())
        vices = json.loads((ev / "vice_metrics.json").read_text())["metrics"]
        table = pd.read_csv(s2 / "compare_methods.csv")
        assert list(table["method"]) == ["cam"] and list(comparison.frame["method"]) == ["cam"]
        assert table.loc[0, "best_miou"] == pytest.approx(curve["best_miou"], rel=1e-12, abs=0)
        assert table.loc[0, "vice_miou"] == pytest.approx(vices["miou"]["vice"], rel=1e-12, abs=0)

    with pytest.MonkeyPatch.context() as mp:
        _patch_stages(mp)
        check(compare_methods(s2, "cam", options=OPTIONS, log=lambda s: None), "best")
        assert not (s2 / "eval" / "val_best").exists()  # there is no untagged evaluation to fall back on
        check(compare_methods(s2, "cam", options=[*OPTIONS, "weights=last.pth"], log=lambda s: None), "last")
    assert _sha(s2 / "model" / "last.pth") != _sha(s2 / "model" / "best.pth")
    losses = [pd.read_csv(s2 / "eval" / f"val_{w}_cam" / "per_sample.csv")["loss"] for w in ("best", "last")]
    assert not losses[0].equals(losses[1])  # two evaluations of two models, the table took the second


def test_outputs_of_other_weights_are_refused_and_the_report_says_so(session):
    """Weights replaced with an old mtime (copied with their time): the runner sees nothing newer, the chain
    check does; no table is written from them."""
    from dywsss.report.compare import comparison_problems
    from dywsss.study.methods import compare_methods

    root = session["root"]
    best = root / "model" / "best.pth"
    st = best.stat()
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    key = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][key] = ckpt["model"][key] + 1.0
    torch.save(ckpt, best)
    import os

    os.utime(best, ns=(st.st_atime_ns, st.st_mtime_ns))
    provenance._cache.clear()  # a new process would hash the file afresh
    outputs = {p: p.read_bytes() for p in root.glob("compare_methods.*")}
    with pytest.MonkeyPatch.context() as mp:
        runner = _patch_stages(mp)
        with pytest.raises(StaleError, match=r"stale outputs of 3 method\(s\), rerun them with --force: cam: .*"
                                             r"maps from weights [0-9a-f]{12} but .*best\.pth is [0-9a-f]{12}"):
            compare_methods(root, ",".join(METHODS), options=OPTIONS, log=lambda s: None)
    assert runner.calls == [] and {p: p.read_bytes() for p in outputs} == outputs
    record = json.loads((root / "compare_methods.json").read_text())
    new_sha = hashlib.sha256(best.read_bytes()).hexdigest()
    assert any("made from weights" in p for p in comparison_problems(root, record, new_sha))
