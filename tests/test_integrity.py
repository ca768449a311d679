"""Run integrity (issue 9): the evaluated network is the trained one; sessions, provenance, early input checks.

Each case of the issue has a test that asserts the message (naming the key, file or value)
and, where something could be overwritten, that no existing file changed (hashes before/after).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dywsss.engine.train as train_mod
from dywsss.config import load_config, session_paths
from dywsss.engine import maps as maps_mod
from dywsss.engine import per_sample as per_sample_mod
from dywsss.engine.maps import generate_maps
from dywsss.engine.per_sample import compute_per_sample
from dywsss.engine.train import train
from dywsss.errors import ConfigError, InputError, SessionError, StaleError
from dywsss.mapfile import load_maps, read_stamp, save_maps
from dywsss.models.builder import build_model
from dywsss.models.checkpoint import load_checkpoint, save_checkpoint
from dywsss.models.lite import LITE_BN_EPS
from dywsss.models.spec import load_trained_model
from dywsss.session import StageLock

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def demo_cfg(demo: Path, work: Path, config: str = "config/demo.py", **options):
    """A config on the tiny demo tree: 1 epoch of 2 steps of 8 images at 48 px, CPU, deterministic."""
    base = dict(
        list_root=str(demo), voc12_root=str(demo / "VOC2012"), gt_dir=str(demo / "VOC2012" / "SegmentationClassAug"),
        cls_label=str(demo / "cls_labels.json"), train_list=str(demo / "train_aug.txt"),
        val_list=str(demo / "val.txt"), infer_list=str(demo / "val.txt"), eval_list=str(demo / "val.txt"),
        batch_size=8, max_epoches=1, max_steps_per_epoch=2, crop_size=48, resize_long=(48, 64), num_workers=0,
        device="cpu", deterministic=True, work_dir_root=str(work), session_name="s", log_interval=1,
        cam_batch_size=4, bootstrap=50,
    )
    base.update(options)
    return load_config(ROOT / config, base)


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root`` (relative path -> hash)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _capture_trained_model(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Keep the in-memory network of the training loop when training ends."""
    box: dict = {}
    real_run = train_mod._Loop.run

    def run(self):
        real_run(self)
        box["model"] = self.model

    monkeypatch.setattr(train_mod._Loop, "run", run)
    return box


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model = model.eval().to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        return model(x)


# ------------------------------------------------ 1. the evaluated network is the trained one
@pytest.mark.parametrize("config,options", [
    ("config/demo.py", dict(network="efficientnet_lite0", pretrained="lite_package")),   # BN eps 1e-3
    ("config/demo.py", dict(network="resnet18", pretrained=False)),                      # a plain timm CNN
    ("config/demo_vit.py", dict(crop_size=32, resize_long=(32, 48), channels_last=False,
                                model_kwargs=dict(img_size=32, patch_size=8, depth=2))),  # a ViT
], ids=["lite0_package", "resnet18", "vit_tiny"])
def test_stages_rebuild_the_network_that_was_trained_bit_for_bit(demo_voc, tmp_path, monkeypatch, config, options):
    box = _capture_trained_model(monkeypatch)
    cfg = demo_cfg(demo_voc, tmp_path, config, **options)
    best = train(cfg)
    trained = box["model"]
    x = torch.randn(3, 3, cfg.crop_size, cfg.crop_size, generator=torch.Generator().manual_seed(0))
    ref = _logits(trained, x)
    # the map stage and the per-sample stage load the network through the same entry point
    assert per_sample_mod.load_session_model is maps_mod.load_session_model
    rebuilt = maps_mod.load_session_model(cfg, torch.device("cpu"))
    assert rebuilt.recorded and rebuilt.path == best
    assert torch.equal(_logits(rebuilt.model, x), ref)
    if options.get("pretrained") == "lite_package":
        assert rebuilt.spec.norm_eps == {"*": LITE_BN_EPS}
        assert all(m.eps == LITE_BN_EPS for m in rebuilt.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        # what the stages did before: rebuild from the config with pretrained=False (BN eps 1e-5)
        old_way = build_model(cfg.network, pretrained=False, num_classes=20)
        old_way.load_state_dict(load_checkpoint(best)["model"])
        assert not torch.allclose(_logits(old_way, x), ref, atol=1e-4)


def test_config_that_contradicts_the_checkpoint_is_an_error_naming_both(demo_voc, tmp_path):
    cfg = demo_cfg(demo_voc, tmp_path, network="resnet18", pretrained=False)
    best = train(cfg)
    with pytest.raises(ConfigError, match=r"best\.pth: the config contradicts.*network='resnet34' in the config but "
                                          r"'resnet18' in the checkpoint"):
        load_trained_model(best, dict(cfg, network="resnet34"))
    with pytest.raises(ConfigError, match=r"crop_size=64 in the config but 48 in the checkpoint"):
        load_trained_model(best, dict(cfg, crop_size=64))


def test_checkpoint_without_record_loads_from_the_config_with_a_warning(demo_voc, tmp_path):
    cfg = demo_cfg(demo_voc, tmp_path, network="efficientnet_lite0", pretrained="lite_package")
    best = train(cfg)
    ckpt = load_checkpoint(best)
    old = tmp_path / "old.pth"
    save_checkpoint(old, {k: v for k, v in ckpt.items() if k != "arch"})
    with pytest.warns(UserWarning, match=r"old\.pth: no architecture record"):
        legacy = load_trained_model(old, cfg)
    assert not legacy.recorded and legacy.spec.norm_eps == {"*": LITE_BN_EPS}  # inferred from pretrained
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    assert torch.equal(_logits(legacy.model, x), _logits(load_trained_model(best).model, x))


# ------------------------------------------------ 2. sessions are safe
def test_retraining_a_session_refuses_then_overwrite_moves_the_run_aside(demo_voc, tmp_path):
    cfg = demo_cfg(demo_voc, tmp_path, network="resnet18", pretrained=False)
    train(cfg)
    root = session_paths(cfg).root
    before = tree_hashes(root)
    with pytest.raises(SessionError, match=r"model: the session already holds checkpoints \(best\.pth, epoch_001\.pth, "
                                           r"last\.pth\); pass --options resume=True .* or overwrite=True"):
        train(demo_cfg(demo_voc, tmp_path, network="resnet18", pretrained=False, random_seed=7))
    assert tree_hashes(root) == before  # nothing changed, config.py included
    train(demo_cfg(demo_voc, tmp_path, network="resnet18", pretrained=False, random_seed=7, overwrite=True))
    (archive,) = (root / "archive").iterdir()
    moved = tree_hashes(archive)
    assert {k: v for k, v in before.items() if not k.startswith("locks/")} == moved  # the old run, intact
    assert load_checkpoint(root / "model" / "best.pth")["config"] != load_checkpoint(archive / "model" / "best.pth")["config"]
    configs = sorted((root / "log" / "configs").glob("train_*.py"))
    assert len(configs) == 1 and "random_seed = 7" in configs[0].read_text()


def test_a_failing_command_does_not_touch_the_session(demo_voc, tmp_path):
    cfg = demo_cfg(demo_voc, tmp_path, network="resnet18", pretrained=False)
    train(cfg)
    root = session_paths(cfg).root
    before = tree_hashes(root)
    for bad in (dict(cam_flip="no"), dict(max_epoches=0), {"optimizer.lr": -1}):
        with pytest.raises(ConfigError):
            train(_unvalidated(demo_voc, tmp_path, overwrite=True, **bad))
    assert tree_hashes(root) == before


def _unvalidated(demo: Path, work: Path, **options):
    """A config that skipped load-time validation (as a library user may build one): train() must check it."""
    cfg = demo_cfg(demo, work, network="resnet18", pretrained=False)
    for key, value in options.items():
        if "." in key:
            head, tail = key.split(".")
            cfg[head][tail] = value
        else:
            cfg[key] = value
    return cfg


def test_a_second_concurrent_training_is_refused_naming_the_holder(demo_voc, tmp_path):
    cfg = demo_cfg(demo_voc, tmp_path, network="resnet18", pretrained=False)
    paths = session_paths(cfg)
    with StageLock(paths, "train"):
        holder = json.loads((paths.root / "locks" / "train.lock").read_text())
        with pytest.raises(SessionError, match=rf"train stage of this session is already running \(pid {os.getpid()} "
                                               rf"on {holder['host']}, started {holder['start']}"):
            train(cfg)
    assert not paths.model_dir.exists()


def test_a_lock_left_by_a_killed_run_is_taken_over(demo_voc, tmp_path, capsys):
    cfg = demo_cfg(demo_voc, tmp_path, network="resnet18", pretrained=False)
    paths = session_paths(cfg)
    # a process that takes the lock and dies without releasing it
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from dywsss.config import SessionPaths; "
            "from dywsss.session import StageLock; from pathlib import Path; "
            "StageLock(SessionPaths(Path(sys.argv[2])), 'train').__enter__(); import os; os._exit(9)")
    assert subprocess.run([sys.executable, "-c", code, str(ROOT), str(paths.root)]).returncode == 9
    assert json.loads((paths.root / "locks" / "train.lock").read_text())["pid"]
    train(cfg)
    assert "taking over from a run that ended without releasing it" in capsys.readouterr().err
    assert (paths.model_dir / "best.pth").is_file()


# ------------------------------------------------ 3. stale maps, per-sample CSVs, reports
def _retrain_in_place(best: Path) -> None:
    """Change the weights of the session's checkpoint (as a retraining would)."""
    ckpt = load_checkpoint(best)
    ckpt["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    best.unlink()  # best.pth is a hard link to epoch_001.pth: replace it, do not write through
    save_checkpoint(best, ckpt)


def test_stale_maps_are_refused_by_the_map_and_per_sample_stages(demo_voc, tmp_path):
    cfg = demo_cfg(demo_voc, tmp_path, network="resnet18", pretrained=False)
    best = train(cfg)
    out = generate_maps(cfg)
    compute_per_sample(cfg)
    meta = json.loads((out / "maps_meta.json").read_text())
    assert meta["weights_sha256"] == hashlib.sha256(best.read_bytes()).hexdigest()
    assert meta["arch"]["network"] == "resnet18" and meta["inputs"]["list"]["sha256"]
    _retrain_in_place(best)
    before = tree_hashes(out)
    with pytest.raises(StaleError, match=r"cam_val_best: holds maps made with other settings or weights \(weights sha256 "
                                         r"[0-9a-f]{12} there, [0-9a-f]{12} now .*overwrite=True"):
        generate_maps(cfg)
    assert tree_hashes(out) == before
    with pytest.raises(StaleError, match=r"cam_val_best: maps were made from weights sha256 [0-9a-f]{12}, but best\.pth is "
                                         r"now [0-9a-f]{12} \(retrained\?\); rerun the map stage.*overwrite=True"):
        compute_per_sample(cfg)
    # an interrupted overwrite leaves a mix: the per-sample stage refuses it, a rerun finishes it
    names = sorted(p.stem for p in out.glob("*.npz"))
    generate_maps(demo_cfg(demo_voc, tmp_path, network="resnet18", pretrained=False, overwrite=True))
    stamp = read_stamp(out / f"{names[0]}.npz")
    classes, cams = load_maps(out / f"{names[0]}.npz")
    save_maps(out / f"{names[0]}.npz", classes, cams, stamp="an older record")
    with pytest.raises(StaleError, match=rf"1 of {len(names)} map files \(e\.g\. {names[0]}\.npz\) were not made with"):
        compute_per_sample(cfg)
    generate_maps(cfg)  # resume: only the odd file is redone
    assert read_stamp(out / f"{names[0]}.npz") == stamp
    csv = compute_per_sample(cfg)
    record = json.loads(csv.with_suffix(".meta.json").read_text())
    assert record["weights"]["sha256"] == hashlib.sha256(best.read_bytes()).hexdigest()
    assert record["maps"]["stamp"] == stamp and record["csv_sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()


def _run(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_provenance_flows_to_summaries_figures_report_and_table(demo_voc, tmp_path):
    from dywsss.provenance import read_png_provenance
    from dywsss.report.summary import load_run
    from dywsss.report.table import collect_rows, format_table

    cfg = demo_cfg(demo_voc, tmp_path, network="resnet18", pretrained=False)
    best = train(cfg)
    generate_maps(cfg)
    csv = compute_per_sample(cfg)
    eval_dir = csv.parent
    maps_dir = session_paths(cfg).cam_dir(cfg.infer_list, cfg.weights)
    opts = ["--options", *(f"{k}={v}" for k, v in (("work_dir_root", tmp_path), ("session_name", "s"),
                                                   ("eval_list", cfg.eval_list), ("network", "resnet18")))]
    for cmd in (["compute_ECE.py", "config/demo.py", *opts],
                ["compute_VICE.py", "--dir_csv", str(csv), "--bootstrap", "50"],
                ["evaluation.py", "--list", cfg.eval_list, "--predict_dir", str(maps_dir), "--gt_dir", cfg.gt_dir,
                 "--json", str(eval_dir / "ji_curve.json")]):
        done = _run(*cmd)
        assert done.returncode == 0, done.stderr
    csv_sha = hashlib.sha256(csv.read_bytes()).hexdigest()
    weights_sha = hashlib.sha256(best.read_bytes()).hexdigest()
    for name in ("ece.json", "vice.json"):
        prov = json.loads((eval_dir / name).read_text())["provenance"]
        assert prov["csv_sha256"] == csv_sha and prov["weights_sha256"] == weights_sha
    for png in ("reliability.png", "vice_bins.png", "loss_vs_ji.png"):
        assert read_png_provenance(eval_dir / png)["weights_sha256"] == weights_sha
    curve = json.loads((eval_dir / "ji_curve.json").read_text())["provenance"]
    assert curve["maps"]["weights_sha256"] == weights_sha
    run = load_run(session_paths(cfg).root)
    assert run.provenance["weights_sha256"] == weights_sha and run.provenance["status"] == "checked"
    rows, _ = collect_rows([session_paths(cfg).root])
    assert weights_sha[:12] in format_table(rows, "md")
    from dywsss.report.html import build_report

    assert f'<code data-key="weights_sha256">{weights_sha[:12]}</code>' in build_report(run, galleries=False)
    # a CSV recomputed after the summaries: the report refuses the stale summaries
    _retrain_in_place(best)
    with pytest.raises(StaleError, match=r"maps from weights [0-9a-f]{12} but .*best\.pth is [0-9a-f]{12}; redo the maps"):
        load_run(session_paths(cfg).root)
    rows, notes = collect_rows([session_paths(cfg).root])
    assert rows == [] and "stale, skipped" in notes[0]
    # every entry point checks the chain it reads: VICE/ECE the CSV's weights, the JI curve the maps' weights
    stale_csv = _run("compute_VICE.py", "--dir_csv", str(csv), "--bootstrap", "50")
    assert stale_csv.returncode == 2 and "computed from weights sha256" in stale_csv.stderr
    assert "rerun the map stage and then the per-sample stage" in stale_csv.stderr
    stale_maps = _run("evaluation.py", "--list", cfg.eval_list, "--predict_dir", str(maps_dir), "--gt_dir", cfg.gt_dir,
                      "--json", str(tmp_path / "x.json"))
    assert stale_maps.returncode == 2 and "maps from weights sha256" in stale_maps.stderr
    assert not (tmp_path / "x.json").exists()


# ------------------------------------------------ 4. invalid values
@pytest.mark.parametrize("options,message", [
    (dict(cam_scales=()), r"cam_scales=\(\): needs at least one value"),
    (dict(cam_scales=(-1.0,)), r"cam_scales=\(-1\.0,\): item 0 must be > 0"),
    (dict(cam_flip="no"), r"cam_flip='no': expected True or False"),
    (dict(max_epoches=0), r"max_epoches=0: must be >= 1"),
    (dict(batch_size=0, cam_batch_size=0, ji_definition="foo"),
     r"batch_size=0: must be >= 1; cam_batch_size=0: must be >= 1; ji_definition='foo': expected one of 'reference'"),
])
def test_invalid_config_values_are_reported_all_at_once(options, message):
    with pytest.raises(ConfigError, match=rf"^config: {message}"):
        load_config(ROOT / "config/demo.py", options)


def _per_sample_csv(path: Path, rows: list[tuple[str, float, float]]) -> Path:
    path.write_text("name_image,loss,miou\n" + "".join(f"{n},{loss},{ji}\n" for n, loss, ji in rows))
    return path


@pytest.mark.parametrize("rows,message", [
    ([("a", 0.1, 0.5), ("b", 0.2, 1.2)], r"row 2: column 'miou' = 1\.2 must be in \[0, 1\]"),
    ([("a", -0.1, 0.5), ("b", 0.2, 0.3)], r"row 1: column 'loss' = -0\.1 must be in \[0, inf\]"),
    ([("a", 0.1, 0.5), ("b", 0.2, 0.3), ("a", 0.3, 0.1)], r"row 3: image 'a' appears twice \(first at row 1\)"),
])
def test_vice_and_ece_readers_reject_out_of_range_values_and_duplicates(tmp_path, rows, message):
    csv = _per_sample_csv(tmp_path / "bad.csv", rows)
    done = _run("compute_VICE.py", "--dir_csv", str(csv))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and f"bad.csv: " in done.stderr
    assert __import__("re").search(message, done.stderr), done.stderr
    assert not (tmp_path / "bad_vice.json").exists()


def test_lists_with_duplicates_empty_labels_and_float_classes_are_refused(tmp_path):
    from dywsss.data.voc import load_cls_labels, read_image_list

    lst = tmp_path / "val.txt"
    lst.write_text("a\nb\n\na\n")
    with pytest.raises(InputError, match=r"val\.txt: row 4: image 'a' is listed twice \(first at row 1\)"):
        read_image_list(lst)
    labels = tmp_path / "cls_labels.json"
    labels.write_text(json.dumps({"a": [3], "b": []}))
    with pytest.raises(InputError, match=r"cls_labels\.json: image 'b' has no class \(empty list\)"):
        load_cls_labels(labels)
    np.savez(tmp_path / "m.npz", classes=np.array([2.7, 5.0]), cams=np.zeros((2, 4, 4), np.float16))
    with pytest.raises(InputError, match=r"m\.npz: 'classes' must hold integer class ids, got float64 \[2\.7, 5\.0\]"):
        load_maps(tmp_path / "m.npz")
    from dywsss.metrics.per_sample import parse_ids

    with pytest.raises(InputError, match=r"class ids must be integers, got '4\.7'"):
        parse_ids("4.7")


# ------------------------------------------------ 5. early checks, one error convention
def test_a_corrupt_training_image_is_found_before_the_first_step(demo_voc, tmp_path):
    voc = tmp_path / "voc"
    shutil.copytree(demo_voc, voc)
    names = (voc / "train_aug.txt").read_text().split()
    for name in names[3:5]:
        (voc / "VOC2012" / "JPEGImages" / f"{name}.jpg").write_bytes(b"not a jpeg at all")
    cfg = demo_cfg(voc, tmp_path / "work", network="resnet18", pretrained=False)
    with pytest.raises(InputError, match=rf"train_aug\.txt: 2 bad file\(s\): .*{names[3]}\.jpg: unreadable image .*; "
                                         rf".*{names[4]}\.jpg: unreadable image"):
        train(cfg)
    assert not (tmp_path / "work").exists()  # nothing written: no config.py, no log, no checkpoint


@pytest.fixture(scope="module")
def trained_session(demo_voc, tmp_path_factory):
    work = tmp_path_factory.mktemp("scripts")
    cfg = demo_cfg(demo_voc, work, network="resnet18", pretrained=False)
    train(cfg)
    return cfg, work


def _opts(cfg, **extra) -> list[str]:
    keys = ("list_root", "voc12_root", "gt_dir", "cls_label", "train_list", "val_list", "infer_list", "eval_list",
            "work_dir_root", "session_name", "crop_size", "num_workers", "device")
    values = {k: cfg[k] for k in keys} | dict(network="resnet18", pretrained=False, max_epoches=1,
                                              max_steps_per_epoch=2, batch_size=8, resize_long=(48, 64)) | extra
    return ["--options", *(f"{k}={v}" for k, v in values.items())]


@pytest.mark.parametrize("script,extra,message", [
    ("run_resnet50.py", dict(gen_mask_for_multi_crop=True, cam_method="gradcamm"),
     r"cam_method='gradcamm': not a registered method"),
    ("run_resnet50.py", dict(train_multi_scale=True, network="notamodel", session_name="new"),
     r"network='notamodel': not a timm model"),
    ("run_resnet50.py", dict(train_multi_scale=True, batch_size=0, cam_batch_size=0, session_name="new"),
     r"config: batch_size=0: must be >= 1; cam_batch_size=0: must be >= 1"),
    ("run_resnet50.py", dict(train_multi_scale=True, cls_label="/nonexistent/labels.json", session_name="new"),
     r"/nonexistent/labels\.json: label file not found"),
    ("run_transformer.py", dict(train_multi_scale=True, network="vit_tiny_patch16_224", session_name="s", resume=True),
     r"last\.pth: the config contradicts the checkpoint's architecture record: network='vit_tiny_patch16_224' "
     r"in the config but 'resnet18' in the checkpoint"),
    ("run_resnet50.py", dict(train_multi_scale=True, work_dir_root="/sys/vice_readonly", session_name="new"),
     r"/sys/vice_readonly/new: cannot write there"),
    ("compute_each_image_loss.py", dict(ji_definition="foo"), r"ji_definition='foo': expected one of 'reference' or "
                                                               r"'paper'"),
])
def test_user_errors_exit_2_with_one_line_and_no_traceback(trained_session, script, extra, message):
    cfg, work = trained_session
    before = tree_hashes(work)
    done = _run(script, "config/resnet50.py", *_opts(cfg, **extra))
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert __import__("re").search(message, lines[0]), lines[0]
    assert tree_hashes(work) == before


def test_a_missing_image_and_debug_traceback(trained_session, tmp_path):
    cfg, work = trained_session
    voc = tmp_path / "voc"
    shutil.copytree(Path(cfg.voc12_root).parent, voc)
    name = (voc / "val.txt").read_text().split()[1]
    (voc / "VOC2012" / "JPEGImages" / f"{name}.jpg").unlink()
    opts = _opts(cfg, voc12_root=voc / "VOC2012", gen_mask_for_multi_crop=True)
    done = _run("run_resnet50.py", "config/resnet50.py", *opts)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"val.txt: 1 bad file(s): {voc}/VOC2012/JPEGImages/{name}.jpg: image not found" in done.stderr
    debug = _run("run_resnet50.py", "config/resnet50.py", *opts, "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "InputError" in debug.stderr
    env = _run("run_resnet50.py", "config/resnet50.py", *opts, env={"DYWSSS_DEBUG": "1"})
    assert "Traceback" in env.stderr


@pytest.mark.parametrize("script,args", [
    ("evaluation.py", ["--list", "/nonexistent.txt", "--predict_dir", "x"]),
    ("compute_ECE.py", ["--csv", "/nonexistent.csv"]),
    ("scripts/make_report.py", ["/nonexistent_run"]),
    ("scripts/make_table.py", ["/nonexistent_run"]),
    ("scripts/run_stages.py", ["config/demo.py", "--options", "cam_flip=no", "--dry-run"]),
    ("scripts/make_cls_labels.py", ["--voc-root", "/nonexistent"]),
    ("scripts/make_blob_maps.py", ["config/demo.py", "--options", "session_name="]),
    ("scripts/make_demo_voc.py", ["--out", "/tmp/x", "--train", "0"]),
])
def test_every_entry_point_follows_the_error_convention(script, args):
    done = _run(script, *args)
    assert done.returncode == 2, (script, done.stderr[-1500:])
    assert "Traceback" not in done.stderr and done.stderr.strip().splitlines()[-1].startswith("error: ")


# ------------------------------------------------ exact resume for lite_package
def test_kill_and_resume_of_a_lite0_run_is_bit_identical(demo_voc, tmp_path, monkeypatch):
    opts = dict(network="efficientnet_lite0", pretrained="lite_package", max_epoches=2, max_steps_per_epoch=3,
                save_every_steps=2, crop_size=40, resize_long=(40, 56))
    full = load_checkpoint(train(demo_cfg(demo_voc, tmp_path / "a", **opts)))["model"]
    calls = {"n": 0}
    real = train_mod.multilabel_loss

    def loss(logits, labels, reduction="mean"):
        if reduction == "mean":
            calls["n"] += 1
            if calls["n"] == 5:  # epoch 2, after its step-4 checkpoint
                raise KeyboardInterrupt("killed")
        return real(logits, labels, reduction)

    monkeypatch.setattr(train_mod, "multilabel_loss", loss)
    with pytest.raises(KeyboardInterrupt):
        train(demo_cfg(demo_voc, tmp_path / "b", **opts))
    monkeypatch.undo()
    resumed = load_checkpoint(train(demo_cfg(demo_voc, tmp_path / "b", resume=True, **opts)))["model"]
    assert resumed.keys() == full.keys()
    assert [k for k in full if not torch.equal(resumed[k], full[k])] == []
