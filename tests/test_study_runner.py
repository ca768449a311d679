"""The study runner: cells from a study config, skip/resume, failures reported without stopping the others,
submitit job arrays (local executor), and the preparation of derived sessions."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dywsss.errors import ConfigError
from dywsss.study import Cell, StudyStatus, expand, load_study, run_cell, run_cells, run_study
from dywsss.study.spec import format_option

ROOT = Path(__file__).resolve().parents[1]
# A fake cell: appends its name to a counter file, then writes its outputs (or exits 1 with "fail").
FAKE = ("import sys, pathlib; counter, name, *outs = sys.argv[1:]; "
        "open(counter, 'a').write(name + '\\n'); "
        "print('working on', name); "
        "sys.exit(1) if 'fail' in outs else [pathlib.Path(p).write_text(name) for p in outs]")


def fake(tmp: Path, name: str, outputs: list[str] | None = None, depends: tuple[str, ...] = (),
         fail: bool = False) -> Cell:
    outs = [tmp / o for o in (outputs if outputs is not None else [f"{name}.out"])]
    args = [str(p) for p in outs] + (["fail"] if fail else [])
    return Cell(name, (sys.executable, "-c", FAKE, str(tmp / "counter.txt"), name, *args), tuple(outs),
                tmp / "logs" / f"{name}.log", depends, meta=dict(kind="fake"))


def runs(tmp: Path) -> list[str]:
    path = tmp / "counter.txt"
    return path.read_text().split() if path.exists() else []


def status(tmp: Path) -> StudyStatus:
    return StudyStatus.open(tmp / "status.json", dict(study="t"))


def quiet(_: str) -> None:
    pass


def test_first_run_runs_everything_then_a_rerun_skips_it(tmp_path):
    cells = [fake(tmp_path, "a"), fake(tmp_path, "b", depends=("a",)), fake(tmp_path, "c")]
    state = run_cells(cells, status(tmp_path), jobs=2, log=quiet)
    assert state == dict(a="done", b="done", c="done")
    assert sorted(runs(tmp_path)) == ["a", "b", "c"]
    assert runs(tmp_path).index("a") < runs(tmp_path).index("b")  # dependency order
    state = run_cells(cells, status(tmp_path), jobs=2, log=quiet)
    assert state == dict(a="up_to_date", b="up_to_date", c="up_to_date")
    assert len(runs(tmp_path)) == 3
    saved = json.loads((tmp_path / "status.json").read_text())
    assert saved["cells"]["b"]["status"] == "up_to_date" and saved["counts"] == {"up_to_date": 3}


def test_missing_output_reruns_that_cell_and_its_dependants_only(tmp_path):
    cells = [fake(tmp_path, "a"), fake(tmp_path, "b", depends=("a",)), fake(tmp_path, "c")]
    run_cells(cells, status(tmp_path), jobs=1, log=quiet)
    (tmp_path / "a.out").unlink()
    state = run_cells(cells, status(tmp_path), jobs=1, log=quiet)
    assert state == dict(a="done", b="done", c="up_to_date")
    assert runs(tmp_path)[3:] == ["a", "b"]


def test_changed_command_reruns_and_force_reruns_all(tmp_path):
    cells = [fake(tmp_path, "a"), fake(tmp_path, "c")]
    run_cells(cells, status(tmp_path), jobs=1, log=quiet)
    changed = [fake(tmp_path, "a", outputs=["a.out", "a2.out"]), cells[1]]
    assert run_cells(changed, status(tmp_path), jobs=1, log=quiet) == dict(a="done", c="up_to_date")
    assert run_cells(changed, status(tmp_path), jobs=1, force=True, log=quiet) == dict(a="done", c="done")


def test_a_failing_cell_is_reported_and_the_others_go_on(tmp_path):
    cells = [fake(tmp_path, "a"), fake(tmp_path, "bad", fail=True), fake(tmp_path, "after", depends=("bad",)),
             fake(tmp_path, "d")]
    lines: list[str] = []
    state = run_cells(cells, status(tmp_path), jobs=2, log=lines.append)
    assert state == dict(a="done", bad="failed", after="blocked", d="done")
    assert "after" not in runs(tmp_path)
    entry = json.loads((tmp_path / "status.json").read_text())["cells"]["bad"]
    assert entry["rc"] == 1 and entry["status"] == "failed" and entry["log"] == str(tmp_path / "logs" / "bad.log")
    assert "working on bad" in (tmp_path / "logs" / "bad.log").read_text()
    assert any("FAILED, exit status 1" in line and "bad.log" in line for line in lines)
    blocked = json.loads((tmp_path / "status.json").read_text())["cells"]["after"]
    assert blocked["status"] == "blocked" and "bad" in blocked["error"]
    # a rerun retries the failed cell (and what it blocked), not the finished ones
    state = run_cells(cells, status(tmp_path), jobs=2, log=quiet)
    assert state == dict(a="up_to_date", bad="failed", after="blocked", d="up_to_date")


def test_exit_zero_without_outputs_is_a_failure(tmp_path):
    cell = Cell("liar", (sys.executable, "-c", "pass"), (tmp_path / "never.txt",), tmp_path / "liar.log")
    state = run_cells([cell], status(tmp_path), jobs=1, log=quiet)
    assert state == dict(liar="failed")
    assert "output(s) missing" in json.loads((tmp_path / "status.json").read_text())["cells"]["liar"]["error"]


def test_cells_must_be_in_dependency_order(tmp_path):
    with pytest.raises(ValueError, match="listed after"):
        run_cells([fake(tmp_path, "b", depends=("a",)), fake(tmp_path, "a")], status(tmp_path), log=quiet)
    with pytest.raises(ValueError, match="unknown"):
        run_cells([fake(tmp_path, "b", depends=("zzz",))], status(tmp_path), log=quiet)


def threads_cell(tmp: Path) -> Cell:
    """A cell that writes the OMP_NUM_THREADS and MKL_NUM_THREADS it was started with."""
    out = tmp / "threads.out"
    code = ("import os, sys; open(sys.argv[1], 'w').write(' '.join(os.environ.get(k, 'unset') "
            "for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')))")
    return Cell("threads", (sys.executable, "-c", code, str(out)), (out,), tmp / "logs" / "threads.log")


def test_local_cells_get_threads_per_cell(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert run_cells([threads_cell(tmp_path)], status(tmp_path), jobs=1, threads_per_cell=3, log=quiet) == dict(
        threads="done")
    assert (tmp_path / "threads.out").read_text() == "3 3"


def test_submitit_local_executor_runs_a_two_cell_study_end_to_end(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the job processes import this checkout's dywsss
    monkeypatch.chdir(ROOT)
    executor = submitit.AutoExecutor(folder=str(tmp_path / "submitit"), cluster="local")
    executor.update_parameters(timeout_min=5)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    cells = [fake(tmp_path, "first"), fake(tmp_path, "second", depends=("first",)),
             fake(tmp_path, "broken", fail=True), threads_cell(tmp_path)]
    state = run_cells(cells, status(tmp_path), threads_per_cell=3, executor=executor, log=quiet)
    assert state == dict(first="done", second="done", broken="failed", threads="done")
    assert (tmp_path / "second.out").read_text() == "second"
    assert (tmp_path / "threads.out").read_text() == "3 3"  # threads_per_cell reached the job
    assert sorted(runs(tmp_path)) == ["broken", "first", "second"]
    assert list((tmp_path / "submitit").iterdir())  # the jobs' own folders
    # rerun through submitit: nothing finished is resubmitted
    state = run_cells(cells, status(tmp_path), threads_per_cell=3, executor=executor, log=quiet)
    assert state == dict(first="up_to_date", second="up_to_date", broken="failed", threads="up_to_date")
    assert sorted(runs(tmp_path)) == ["broken", "broken", "first", "second"]


def test_run_cell_prepares_a_derived_session(tmp_path):
    src = tmp_path / "runs" / "m_cam"
    (src / "model").mkdir(parents=True)
    (src / "model" / "best.pth").write_text("weights")
    (src / "config.py").write_text("session_name = 'm_cam'\ncam_method = 'cam'\nnetwork = 'resnet18'\n")
    dst = tmp_path / "runs" / "m_gradcam"
    cell = Cell("m_gradcam", (sys.executable, "-c", "pass"), (dst / "model" / "best.pth",), tmp_path / "x.log",
                links=((dst / "model", src / "model"),),
                derive=((src / "config.py", dst / "config.py", ("session_name=m_gradcam", "cam_method=gradcam")),))
    assert run_cell(cell).rc == 0
    assert (dst / "model").is_symlink() and (dst / "model" / "best.pth").read_text() == "weights"
    text = (dst / "config.py").read_text()
    assert "cam_method = 'gradcam'" in text and "session_name = 'm_gradcam'" in text and "resnet18" in text
    mtime = (dst / "config.py").stat().st_mtime_ns
    assert run_cell(cell).rc == 0 and (dst / "config.py").stat().st_mtime_ns == mtime  # unchanged: not rewritten
    (dst / "model").unlink()
    (dst / "model").mkdir()  # a real folder where the link should be: reported, not overwritten
    result = run_cell(cell)
    assert result.rc == 1 and "preparation failed" in result.error


# ---------------------------------------------------------- study configs
def write_study(tmp: Path, body: str) -> Path:
    path = tmp / "study.py"
    path.write_text(f"study_name = 'tiny'\nwork_dir = {str(tmp / 'work')!r}\n" + body)
    return path


MODELS = f"""
models = [
    dict(name="r18", config={str(ROOT / 'config/demo.py')!r}, options=dict(network="resnet18", pretrained=False,
         max_epoches=1)),
    dict(name="vit", config={str(ROOT / 'config/demo_vit.py')!r}, options=["max_epoches=2"]),
]
methods = dict(cam=dict(cnn="cam", vit="transformer_attribution"), gradcam=dict(cnn="gradcam", vit="vit_gradcam"))
"""


def _skipped(cmd) -> list[str]:
    cmd = list(cmd)
    return cmd[cmd.index("--skip") + 1:cmd.index("--options")] if "--skip" in cmd else []


def test_study_expands_into_cells_with_the_stage_runner_commands(tmp_path):
    ood = (f"ood = dict(source=dict(list='data/demo/val.txt', voc12_root='data/demo/VOC2012', "
           f"cls_label='data/demo/cls_labels.json'), corruptions=['contrast'], severities=[2])\n"
           "data = dict(demo_args='--out data/demo --train 8 --val 4')\n"
           "skip_stages = ['gridpg', 'sanity']\n")
    spec = load_study(write_study(tmp_path, MODELS + ood))
    assert [m.family for m in spec.models] == ["cnn", "vit"]
    cells = {c.name: c for c in expand(spec)}
    assert list(cells) == ["data", "ood_data_contrast_s2", "r18_cam", "r18_gradcam", "vit_cam", "vit_gradcam",
                           "r18_ood", "vit_ood"]
    runs = tmp_path / "work" / "runs"
    train = cells["r18_cam"]
    assert train.depends == ("data",) and not train.links and not train.derive
    cmd = list(train.command)
    assert cmd[1].endswith("scripts/run_stages.py") and cmd[2].endswith("config/demo.py")
    assert cmd[cmd.index("--session") + 1] == "r18"  # one session per model
    assert _skipped(cmd) == ["gridpg", "sanity"]  # the own method's cell trains
    opts = cmd[cmd.index("--options") + 1:]
    assert {"network=resnet18", "pretrained=False", "max_epoches=1", "cam_method=cam",
            f"work_dir_root={runs}"} <= set(opts)
    assert not any(o.startswith("map_tag=") for o in opts)
    assert train.outputs[0] == runs / "r18" / "report.html"
    tagged = cells["vit_gradcam"]
    assert tagged.depends == ("vit_cam",) and not tagged.links and not tagged.derive
    cmd = list(tagged.command)
    assert cmd[cmd.index("--session") + 1] == "vit"
    assert _skipped(cmd) == ["gridpg", "sanity", "train"]
    assert {"cam_method=vit_gradcam", "map_tag=gradcam", "max_epoches=2"} <= set(cmd[cmd.index("--options") + 1:])
    assert tagged.outputs == (runs / "vit/report_gradcam.html", runs / "vit/eval/val_best_gradcam/per_sample.csv",
                              runs / "vit/eval/val_best_gradcam/ji_curve.json",
                              runs / "vit/eval/val_best_gradcam/ece.json", runs / "vit/eval/val_best_gradcam/vice.json")
    ood_cell = cells["r18_ood"]
    assert ood_cell.depends == ("r18_cam", "ood_data_contrast_s2")
    assert ood_cell.command[1].endswith("scripts/run_eval_stages.py")
    assert ood_cell.command[ood_cell.command.index("--session") + 1] == "r18"
    assert "cam_method=cam" in ood_cell.command and not any(o.startswith("map_tag=") for o in ood_cell.command)
    assert ood_cell.outputs == (runs / "r18/eval/val_contrast_s2_best/ece.json",)
    ood_data = cells["ood_data_contrast_s2"].command
    assert ood_data[ood_data.index("--severity") + 1] == "2"


def test_study_options_apply_to_every_model_and_the_models_own_win(tmp_path):
    spec = load_study(write_study(tmp_path, MODELS + "options = dict(batch_size=4, max_epoches=3)\n"))
    r18, vit = spec.models
    assert "batch_size=4" in r18.options and "batch_size=4" in vit.options
    assert "max_epoches=1" in r18.options and "max_epoches=3" not in r18.options  # the model's own wins
    assert "max_epoches=2" in vit.options and "max_epoches=3" not in vit.options
    assert r18.options.index("batch_size=4") < r18.options.index("network=resnet18")


def test_dry_run_lists_cells_without_running(tmp_path, capsys):
    state, report = run_study(write_study(tmp_path, MODELS), dry_run=True)
    assert report is None and set(state.values()) == {"pending"}
    out = capsys.readouterr().out
    assert "[r18_gradcam] after r18_cam" in out and "run_stages.py" in out
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("body,match", [
    (MODELS.replace("max_epoches=1", "no_such_key=1"), "model 'r18'.*no_such_key"),
    (MODELS.replace('"vit"', '"r18"'), "names repeat"),
    (MODELS.replace('"max_epoches=2"', '"cam_method=cam"'), "set by the study runner"),
    (MODELS.replace('"max_epoches=2"', '"map_tag=x"'), "map_tag is set by the study runner"),
    (MODELS.replace('"resnet18"', '"resnet_18"'), "model 'r18'.*not a timm model"),
    (MODELS.replace('vit="vit_gradcam"', 'vit="vit_gradcm"'), "methods.gradcam: 'vit_gradcm' is not an attribution"),
    (MODELS.replace('max_epoches=1', 'max_epoches=-1'), "model 'r18'.*max_epoches=-1"),
    (MODELS + "skip_stages = ['train']\n", r"skip_stages \['train'\]"),
    (MODELS + "consensus = dict(source='signed')\n", "consensus.source='signed'"),
    (MODELS + "options = dict(nope=1)\n", "model 'r18'.*nope"),
    (MODELS + "methods = ['cam', 'gradcam']\nconsensus = dict(rule='median')\n", "consensus.rule='median'"),
    (MODELS + "ood = dict(corruptions=['fog'], severities=[1])\n", "'fog' unknown"),
    (MODELS + "ood = dict(corruptions=['contrast'], severities=[9], source=dict(list='a', voc12_root='b', "
              "cls_label='c'))\n", r"severities=\[9\]"),
    (MODELS + "extra_key = 1\n", "unknown key.*extra_key"),
    (MODELS.replace('"max_epoches=2"', '"fignote=mine"'), "model 'vit'.*option fignote is set by the study runner"),
    (MODELS + "options = dict(fignote='all')\n", "model 'r18'.*option fignote is set by the study runner"),
    (MODELS + "ood = dict(corruptions=['contrast'], source=dict(list='a', voc12_root='b', cls_label='c'))\n",
     r"ood.corruptions=\['contrast'\] without severities"),
    (MODELS + "ood = dict(severities=[2])\n", r"ood.severities=\[2\] without corruptions"),
    (MODELS + "metrics = ['map', 'best_miou:gradcm']\n",
     r"metrics: 'best_miou:gradcm' cannot be a models.csv column; available: map, acc_ml, .*method in cam, gradcam "
     r"and q in best_miou, vice, consensus_score, mask_ap, vice_consensus, .*epg, .*vice_epg"),
    (MODELS + "metrics = ['mAP']\n", "metrics: 'mAP' cannot be a models.csv column"),
    ("models = []\n", "models is empty"),
])
def test_bad_study_configs_name_the_problem(tmp_path, body, match):
    with pytest.raises(ConfigError, match=match) as exc:
        load_study(write_study(tmp_path, body))
    assert "\n" not in str(exc.value)


def test_study_metrics_accept_every_column_models_csv_can_have(tmp_path):
    ood = ("ood = dict(source=dict(list='data/demo/val.txt', voc12_root='data/demo/VOC2012', "
           "cls_label='data/demo/cls_labels.json'), corruptions=['contrast'], severities=[2])\n")
    good = ["map", "ood_map", "ece_ml", "ood_map:val_contrast_s2", "best_miou:cam", "consensus_score:gradcam",
            "epg:cam", "deletion_norm:gradcam", "vice_deletion:cam", "vice_epg_box:gradcam"]
    spec = load_study(write_study(tmp_path, MODELS + ood + f"metrics = {good!r}\n"))
    assert spec.report.metrics == tuple(good)
    with pytest.raises(ConfigError, match="'ood_map:val_contrast_s3' cannot be.*ood_map:val_contrast_s2"):
        load_study(write_study(tmp_path, MODELS + ood + "metrics = ['ood_map:val_contrast_s3']\n"))
    with pytest.raises(ConfigError, match="'epg:gradient' cannot be"):  # not a method of the study
        load_study(write_study(tmp_path, MODELS + "metrics = ['epg:gradient']\n"))


def test_option_values_that_cannot_pass_through_options_are_refused():
    assert format_option("optimizer.lr", 0.01, "x") == "optimizer.lr=0.01"
    assert format_option("resize_long", (112, 160), "x") == "resize_long=(112,160)"
    assert format_option("cam_scales", (1.0,), "x") == "cam_scales=(1.0,)"
    assert format_option("pretrained", "lite_package", "x") == "pretrained=lite_package"
    for bad in ("two words", "a,b", "True", "1e-3", ""):
        with pytest.raises(ConfigError, match="cannot pass"):
            format_option("fignote", bad, "model 'm'")


def test_run_study_script_reports_a_bad_config_in_one_line(tmp_path, capsys):
    import importlib.util

    from dywsss.cli import run_main

    spec = importlib.util.spec_from_file_location("run_study", ROOT / "scripts" / "run_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = write_study(tmp_path, "models = []\n")
    with pytest.raises(SystemExit) as exc:
        run_main(lambda: module.main([str(path)]))
    message = capsys.readouterr().err
    assert exc.value.code == 2
    assert message.startswith("error:") and "models is empty" in message and message.count("\n") == 1


def test_an_existing_run_joins_without_training(tmp_path):
    old = tmp_path / "old_run"
    (old / "model").mkdir(parents=True)
    # a run's saved config.py is the merged config: every key of _base_.py is there
    (old / "config.py").write_text(f"_base_ = [{str(ROOT / 'config' / '_base_.py')!r}]\n"
                                   "network = 'resnet18'\npretrained = False\nsession_name = 'old_run'\n"
                                   "eval_list = 'val.txt'\ninfer_list = 'val.txt'\nweights = 'best.pth'\n"
                                   "list_root = 'voc12'\ncam_method = 'cam'\n")
    spec = load_study(write_study(tmp_path, f"models = [dict(name='old', session={str(old)!r})]\n"
                                             "methods = ['cam', 'gradcam']\n"))
    cells = {c.name: c for c in expand(spec)}
    assert list(cells) == ["old_cam", "old_gradcam"]
    runs = tmp_path / "work/runs"
    for c in cells.values():
        assert c.meta["trains"] == "no" and c.command[2] == str(old / "config.py") and "train" in _skipped(c.command)
        assert c.command[c.command.index("--session") + 1] == "old"
    own = cells["old_cam"]
    assert own.depends == () and own.links == ((runs / "old" / "model", old / "model"),)
    assert own.derive[0][:2] == (old / "config.py", runs / "old" / "config.py")
    assert "session_name=old" in own.derive[0][2] and "cam_method=cam" in own.derive[0][2]
    assert cells["old_gradcam"].depends == ("old_cam",) and not cells["old_gradcam"].links
    with pytest.raises(Exception, match="not a finished run"):
        load_study(write_study(tmp_path, f"models = [dict(name='x', session={str(tmp_path / 'nothing')!r})]\n"))


def test_a_joined_run_keeps_its_input_size_unless_the_model_sets_it(tmp_path):
    old = tmp_path / "old_run"
    (old / "model").mkdir(parents=True)
    (old / "config.py").write_text(f"_base_ = [{str(ROOT / 'config' / '_base_.py')!r}]\n"
                                   "network = 'resnet18'\npretrained = False\nsession_name = 'old_run'\n"
                                   "crop_size = 96\nresize_long = [96, 128]\n")  # a dumped config may hold a list
    joined = f"dict(name='old', session={str(old)!r}"
    trained = f"dict(name='new', config={str(ROOT / 'config/demo.py')!r})"
    # the same size as the run's (a tuple against the saved list) and other common options pass
    spec = load_study(write_study(tmp_path, f"models = [{joined})]\noptions = dict(crop_size=96, "
                                             "resize_long=(96, 128), batch_size=4)\n"))
    assert "batch_size=4" in spec.models[0].options
    # a study-wide size that contradicts the run's config.py is refused, naming the model, key and both values
    with pytest.raises(ConfigError, match=r"model 'old': the study's option crop_size=64 contradicts the joined run's "
                                          rf"{old / 'config.py'} \(crop_size=96\)") as exc:
        load_study(write_study(tmp_path, f"models = [{trained}, {joined})]\noptions = dict(crop_size=64)\n"))
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match=r"model 'old'.*resize_long=\(64, 96\).*resize_long=\(96, 128\)"):
        load_study(write_study(tmp_path, f"models = [{joined})]\noptions = dict(resize_long=(64, 96))\n"))
    # the model's own options may evaluate it at another size on purpose; a trained model takes the study's
    spec = load_study(write_study(tmp_path, f"models = [{trained}, {joined}, options=dict(crop_size=64))]\n"
                                             "options = dict(crop_size=64)\n"))
    assert [("crop_size=64" in m.options) for m in spec.models] == [True, True]


def test_a_probe_model_trains_in_its_own_cell_first(tmp_path):
    body = MODELS.replace('max_epoches=1)', 'max_epoches=1, probe="linear")')
    spec = load_study(write_study(tmp_path, body))
    assert [m.probe for m in spec.models] == ["linear", ""]
    cells = {c.name: c for c in expand(spec)}
    assert list(cells) == ["r18_probe", "r18_cam", "r18_gradcam", "vit_cam", "vit_gradcam"]
    probe = cells["r18_probe"]
    assert probe.command[1].endswith("scripts/train_probe.py")
    assert {"probe=linear", "session_name=r18", "resume=True", f"work_dir_root={tmp_path / 'work/runs'}"} <= set(
        probe.command)
    assert probe.outputs == (tmp_path / "work/runs/r18/model/best.pth", tmp_path / "work/runs/r18/model/last.pth")
    assert cells["r18_cam"].depends == ("r18_probe",) and "train" in _skipped(cells["r18_cam"].command)
    assert "train" not in _skipped(cells["vit_cam"].command)


def test_submitit_cells_get_threads_per_cell_or_the_jobs_cpus(tmp_path, monkeypatch):
    import dywsss.study as study
    import dywsss.study.collect as collect

    seen = []
    monkeypatch.setattr(study, "make_submitit_executor", lambda folder, params: "executor")
    monkeypatch.setattr(study, "run_cells", lambda cells, status, jobs, threads, executor, force, log:
                        seen.append((threads, executor)) or {})
    monkeypatch.setattr(collect, "collect_study", lambda spec, status, log: None)
    for execution, threads in (("dict(backend='submitit', submitit=dict(cpus_per_task=4))", 4),
                               ("dict(backend='submitit', threads_per_cell=2, submitit=dict(cpus_per_task=4))", 2),
                               ("dict(backend='submitit')", 0), ("dict(backend='local')", 0)):
        run_study(write_study(tmp_path, MODELS + f"execution = {execution}\n"), log=quiet)
        assert seen[-1][0] == threads, execution
    assert seen[-1][1] is None and seen[0][1] == "executor"
