"""The make-like stage runner: skip when complete and fresh, rerun when stale, resume when partial."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from dywsss.stages import Stage, StageError, decide, pipeline_script, run_stages, study_stages
from dywsss.errors import ConfigError

# A fake stage command: appends its argv to LOG, then writes each output file.
WRITER = (
    "import sys, pathlib; log, *rest = sys.argv[1:]; "
    "open(log, 'a').write(' '.join(rest) + '\\n'); "
    "[pathlib.Path(p).write_text('x') for p in rest if not p.startswith('-')]"
)


def _stage(name, log, inputs, outputs, **kw):
    return Stage(name, (sys.executable, "-c", WRITER, str(log), *map(str, outputs)), inputs=inputs,
                 outputs=outputs, **kw)


def _age(path: Path, seconds: float) -> None:
    t = path.stat().st_mtime - seconds
    os.utime(path, (t, t))


@pytest.fixture
def chain(tmp_path):
    """src -> [a] -> a.txt -> [b] -> b1.txt, b2.txt"""
    src = tmp_path / "src.txt"
    src.write_text("input")
    _age(src, 100)
    log = tmp_path / "log.txt"
    a, b1, b2 = tmp_path / "a.txt", tmp_path / "b1.txt", tmp_path / "b2.txt"
    stages = [_stage("a", log, [src], [a]),
              _stage("b", log, [a], [b1, b2], resume_args=("--resume",), fresh_args=("--fresh",))]
    return dict(stages=stages, src=src, log=log, a=a, b1=b1, b2=b2, stamps=tmp_path / "stamps.json")


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_first_run_runs_all_then_everything_is_skipped(chain):
    assert run_stages(chain["stages"], chain["stamps"], log=lambda s: None) == ["a", "b"]
    assert len(_lines(chain["log"])) == 2
    assert run_stages(chain["stages"], chain["stamps"], log=lambda s: None) == []
    assert len(_lines(chain["log"])) == 2
    assert json.loads(chain["stamps"].read_text())["a"]["command"][-1] == str(chain["a"])


def test_newer_input_reruns_the_stage_and_everything_after_it(chain):
    run_stages(chain["stages"], chain["stamps"], log=lambda s: None)
    for p in (chain["a"], chain["b1"], chain["b2"]):
        _age(p, 50)
    chain["src"].write_text("edited")  # now newer than a.txt
    assert decide(chain["stages"][0]).action == "redo"
    assert run_stages(chain["stages"], chain["stamps"], log=lambda s: None) == ["a", "b"]
    assert _lines(chain["log"])[-1].endswith("--fresh")  # b's outputs were older than the new a.txt


def test_outputs_complete_and_newer_are_skipped_without_a_record(chain):
    for p in (chain["a"], chain["b1"], chain["b2"]):
        p.write_text("made by hand")
    assert [decide(s).action for s in chain["stages"]] == ["skip", "skip"]
    assert run_stages(chain["stages"], chain["stamps"], log=lambda s: None) == []
    assert not chain["log"].exists()


def test_partial_outputs_resume(chain):
    run_stages(chain["stages"], chain["stamps"], log=lambda s: None)
    chain["b2"].unlink()  # as if interrupted
    d = decide(chain["stages"][1])
    assert (d.action, "1 of 2 outputs missing" in d.reason) == ("resume", True)
    assert run_stages(chain["stages"], chain["stamps"], log=lambda s: None) == ["b"]
    assert _lines(chain["log"])[-1].endswith("--resume")


def test_failed_check_resumes_and_changed_command_redoes(tmp_path, chain):
    state = {"done": False}
    s = _stage("c", chain["log"], [], [tmp_path / "c.txt"], check=lambda: None if state["done"] else "2 of 4 epochs",
               resume_args=("--resume",), fresh_args=("--fresh",))
    (tmp_path / "c.txt").write_text("x")
    assert decide(s).action == "resume"
    state["done"] = True
    assert decide(s).action == "skip"
    assert decide(s, recorded=["other", "command"]).action == "redo"
    assert decide(s, recorded=s.key).action == "skip"
    assert decide(s, force=True).action == "redo"


def test_force_by_name(chain):
    run_stages(chain["stages"], chain["stamps"], log=lambda s: None)
    assert run_stages(chain["stages"], chain["stamps"], force=["b"], log=lambda s: None) == ["b"]
    assert run_stages(chain["stages"], chain["stamps"], force=True, log=lambda s: None) == ["a", "b"]
    with pytest.raises(ValueError, match="unknown stage.*nope"):
        run_stages(chain["stages"], chain["stamps"], force=["nope"])


def test_failing_stage_stops_the_run_and_is_not_recorded(tmp_path, chain):
    bad = Stage("bad", (sys.executable, "-c", "raise SystemExit(3)"), outputs=[tmp_path / "never.txt"])
    with pytest.raises(StageError, match=r"stage bad failed \(exit status 3\)"):
        run_stages([bad, *chain["stages"]], chain["stamps"], log=lambda s: None)
    assert not chain["log"].exists() and not chain["stamps"].exists()


def test_stage_that_writes_nothing_is_an_error(tmp_path, chain):
    lazy = Stage("lazy", (sys.executable, "-c", "pass"), outputs=[tmp_path / "promised.txt"])
    with pytest.raises(StageError, match="lazy finished but did not write .*promised.txt"):
        run_stages([lazy], chain["stamps"], log=lambda s: None)


def test_dry_run_runs_nothing(chain):
    msgs: list[str] = []
    assert run_stages(chain["stages"], chain["stamps"], dry_run=True, log=msgs.append) == []
    assert not chain["log"].exists() and any("[a] run: no outputs yet" in m for m in msgs)


# ------------------------------------------------------------------ the study plan
@pytest.fixture
def demo_plan(tmp_path):
    return study_stages("config/demo.py", "s1", [f"work_dir_root={tmp_path}", "max_epoches=3"],
                        demo_args=["--out", "data/demo"], python="python")


def test_study_plan_commands(demo_plan, tmp_path):
    st = {s.name: s for s in demo_plan.stages}
    assert list(st) == ["data", "train", "maps", "ji_curve", "blob_maps", "blob_curve", "per_sample", "ece",
                        "vice", "gridpg", "sanity", "report"]
    train = st["train"].command
    assert train[:4] == ("python", "run_resnet50.py", "config/demo.py", "--options")
    assert "train_multi_scale=True" in train and "session_name=s1" in train and "max_epoches=3" in train
    assert "gen_mask_for_multi_crop=True" in st["maps"].command and "weights=best.pth" in st["maps"].command
    ev = tmp_path / "s1" / "eval" / "val_best"
    assert st["ji_curve"].command[-2:] == ("--json", str(ev / "ji_curve.json"))
    vice = st["vice"].command
    assert vice[vice.index("--dir_csv") + 1] == str(ev / "per_sample.csv")
    assert vice[vice.index("--bootstrap") + 1] == "1000"  # config/demo.py
    assert st["vice"].output_paths() == [ev / f for f in ("vice.json", "vice_bins.png", "loss_vs_ji.png",
                                                          "vice_metrics.json", "loss_vs_metrics.png")]
    assert vice[vice.index("--metric") + 1] == "all"
    assert st["gridpg"].output_paths()[0] == ev / "gridpg.json" and st["sanity"].output_paths()[0] == ev / "sanity.json"
    assert st["report"].output_paths() == [tmp_path / "s1" / "report.html"]
    blob = st["blob_curve"].command
    assert blob[-2:] == ("--json", str(ev / "ji_curve_blob.json"))
    assert blob[blob.index("--predict_dir") + 1] == str(tmp_path / "s1" / "test" / "cam_val_blob")
    assert Path("config/_base_.py") in st["train"].input_paths()  # inherited config counts as input
    assert demo_plan.stamp_file == tmp_path / "s1" / "log" / "stages.json"
    assert pipeline_script("vit_tiny_patch16_224") == "run_transformer.py"


def test_interrupted_training_resumes(demo_plan, tmp_path):
    train = {s.name: s for s in demo_plan.stages}["train"]
    model = tmp_path / "s1" / "model"
    model.mkdir(parents=True)
    for name in ("best.pth", "last.pth"):
        torch.save({"model": {}, "epoch": 2}, model / name)
    d = decide(train)
    assert d.action == "resume" and "2 of 3 epochs" in d.reason
    assert train.resume_args == ("resume=True",)
    torch.save({"model": {}, "epoch": 3}, model / "last.pth")
    assert decide(train).action == "skip"


def test_cli_dry_run(tmp_path, capsys):
    sys.path.insert(0, str(Path("scripts").resolve()))
    import run_stages as cli

    assert cli.main(["config/demo.py", "--session", "s2", "--options", f"work_dir_root={tmp_path}",
                     "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "[train] run: no outputs yet" in out and "session_name=s2" in out
    with pytest.raises(ConfigError, match="no_such_key"):
        cli.main(["config/demo.py", "--options", "no_such_key=1", "--dry-run"])


def test_run_sh_paper_stops_at_once_without_the_data(tmp_path):
    import shutil
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    shutil.copy(repo / "run.sh", tmp_path / "run.sh")  # a checkout without voc12/VOC2012
    proc = subprocess.run(["bash", "run.sh", "paper"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "voc12/VOC2012/JPEGImages not found" in proc.stderr and "voc12/README.md" in proc.stderr
    assert not (tmp_path / ".venv").exists()  # nothing slow ran first


def test_map_tag_keeps_a_method_apart(tmp_path):
    plan = study_stages("config/demo.py", "s3", [f"work_dir_root={tmp_path}", "cam_method=gradcam", "map_tag=gradcam"])
    st = {s.name: s for s in plan.stages}
    assert plan.cam_dir == tmp_path / "s3" / "test" / "cam_val_best_gradcam"
    assert plan.eval_dir == tmp_path / "s3" / "eval" / "val_best_gradcam"
    assert plan.report == tmp_path / "s3" / "report_gradcam.html" and plan.stamp_file.name == "stages_gradcam.json"
    assert st["report"].command[-2:] == ("--tag", "gradcam")


def test_speed_only_keys_are_not_part_of_the_recorded_command(tmp_path):
    """A finished stage stays "skip" when only a batch size or the loader's workers change (results do not
    depend on them), and is redone when the method changes."""
    from dywsss.stages import SPEED_ONLY_KEYS

    out, calls = tmp_path / "maps.txt", tmp_path / "calls.txt"
    writer = ("import sys, pathlib; pathlib.Path(sys.argv[1]).write_text('x'); "
              "open(sys.argv[2], 'a').write(' '.join(sys.argv[3:]) + '\\n')")

    def maps(*opts):
        return Stage("maps", (sys.executable, "-c", writer, str(out), str(calls), "--options", *opts), outputs=[out])

    stamps, msgs = tmp_path / "stamps.json", []
    first = maps("cam_method=cam", "cam_batch_size=8", "num_workers=2")
    assert run_stages([first], stamps, log=msgs.append) == ["maps"]
    assert json.loads(stamps.read_text())["maps"]["command"] == ["-c", writer, str(out), str(calls), "--options",
                                                                "cam_method=cam"]
    assert run_stages([maps("cam_method=cam", "cam_batch_size=1", "num_workers=0")], stamps, log=msgs.append) == []
    assert msgs[-1] == "[maps] up to date, skipped"
    every = [f"{k}=3" for k in sorted(SPEED_ONLY_KEYS)]
    assert decide(maps("cam_method=cam", *every), json.loads(stamps.read_text())["maps"]["command"]).action == "skip"
    assert run_stages([maps("cam_method=gradcam", "cam_batch_size=8")], stamps, log=msgs.append) == ["maps"]
    assert msgs[-2].startswith("[maps] redo: its command changed since it last ran")
    assert _lines(calls) == ["--options cam_method=cam cam_batch_size=8 num_workers=2",
                             "--options cam_method=gradcam cam_batch_size=8"]
    # the study's own map stage: the same recorded command whatever the batch size
    def plan(*opts):
        return {s.name: s for s in study_stages("config/demo.py", "s", [f"work_dir_root={tmp_path}", *opts]).stages}["maps"]

    assert plan("cam_batch_size=2", "num_workers=0").key == plan().key != plan("cam_method=gradcam").key
    assert "cam_batch_size=2" in plan("cam_batch_size=2").command  # it still reaches the stage


def test_evaluation_keys_never_retrain_but_training_keys_do(tmp_path):
    """The training stage's record leaves out what only later stages read (method, metrics, bootstrap, ...):
    asking for another method or metric keeps a finished training "skip"; a training key redoes it."""
    def train(*opts):
        plan = study_stages("config/demo.py", "s", [f"work_dir_root={tmp_path}", *opts])
        return {s.name: s for s in plan.stages}

    base = train()["train"]
    evaluation = train("cam_method=gradcam", "map_tag=gradcam", "bootstrap=10", "gridpg_n_grids=3",
                       "map_metrics=[epg]", "ig_steps=8", "fignote=x")
    assert evaluation["train"].key == base.key
    assert "cam_method=gradcam" in evaluation["train"].command  # still passed on (the pipeline reads one config)
    assert evaluation["maps"].key != train()["maps"].key  # the maps stage does change
    model = tmp_path / "s" / "model"
    model.mkdir(parents=True)
    for name in ("best.pth", "last.pth"):
        torch.save({"model": {}, "epoch": 6}, model / name)
    assert decide(evaluation["train"], base.key).action == "skip"
    for opt in ("max_epoches=7", "optimizer.lr=0.5", "crop_size=64", "adv_train=pgd_l2"):
        assert train(opt)["train"].key != base.key, opt
        assert decide(train(opt)["train"], base.key).action == "redo", opt
