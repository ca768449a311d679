"""evaluation.py, compute_VICE.py and compute_ECE.py end to end on tiny generated files."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dywsss.errors import ConfigError, MissingInputError
from dywsss.data.voc import VOC_PALETTE
from dywsss.mapfile import save_maps
from dywsss.metrics.per_sample import per_sample_table, write_per_sample_csv

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), ROOT / name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def palette_png(path: Path, mask: np.ndarray) -> None:
    im = Image.fromarray(mask, mode="P")
    im.putpalette(VOC_PALETTE)
    im.save(path)


@pytest.fixture
def tiny_set(tmp_path):
    """4 images 6x8: an object square per image, maps on a 0.05 grid, one image only background."""
    rng = np.random.default_rng(0)
    root = tmp_path / "work_dirs" / "S"
    maps = root / "test" / "cam_val_best"
    gt_dir = tmp_path / "gt"
    maps.mkdir(parents=True)
    gt_dir.mkdir()
    names, truth = [], []
    for i in range(4):
        name = f"2007_{i:06d}"
        gt = np.zeros((6, 8), np.uint8)
        classes = np.array([i % 3, 10 + i])
        if i != 3:
            gt[1:4, 2:6] = classes[0] + 1
            gt[4, :] = 255
        cams = (rng.integers(0, 20, (2, 6, 8)) / 20).astype(np.float32)
        palette_png(gt_dir / f"{name}.png", gt)
        save_maps(maps / f"{name}.npz", classes, cams)
        names.append(name)
        truth.append((gt, classes, cams.astype(np.float16).astype(np.float32)))
    lst = tmp_path / "val.txt"
    lst.write_text("\n".join(names) + "\n")
    return dict(root=root, maps=maps, gt=gt_dir, list=lst, names=names, truth=truth, tmp=tmp_path)


def plain_miou(truth, t):
    """The original algorithm at one threshold, written out."""
    T, P, TP = np.zeros(21), np.zeros(21), np.zeros(21)
    for gt, classes, cams in truth:
        tensor = np.zeros((21,) + gt.shape, np.float32)
        tensor[classes + 1] = cams
        tensor[0] = t
        pred = tensor.argmax(0)
        for c in range(21):
            T[c] += ((gt == c) & (gt != 255)).sum()
            P[c] += ((pred == c) & (gt != 255)).sum()
            TP[c] += ((gt == c) & (pred == c)).sum()
    return np.mean(TP / (T + P - TP + 1e-10))


def test_evaluation_curve_end_to_end(tiny_set, capsys):
    ev = load_script("evaluation.py")
    ev.main(["--list", str(tiny_set["list"]), "--predict_dir", str(tiny_set["maps"]), "--gt_dir",
             str(tiny_set["gt"]), "--comment", "tiny", "--type", "npz", "--curve", "True"])
    out = capsys.readouterr().out
    path = tiny_set["root"] / "eval" / "val_best" / "ji_curve.json"  # default location for session maps
    assert f"wrote {path}" in out and "tiny best: t=" in out
    s = json.loads(path.read_text())
    assert len(s["thresholds"]) == 60 and s["thresholds"][10] == 0.1
    want = [plain_miou(tiny_set["truth"], t) for t in s["thresholds"]]
    np.testing.assert_allclose(s["miou"], want, rtol=1e-9, atol=1e-12)
    assert s["best_miou"] == pytest.approx(max(want))
    assert s["type"] == "npz" and s["n_images"] == 4 and len(s["per_class_iou"]) == 21


def test_evaluation_single_threshold_and_npy_refusal(tiny_set, tmp_path):
    ev = load_script("evaluation.py")
    out = tmp_path / "one.json"
    ev.main(["--list", str(tiny_set["list"]), "--predict_dir", str(tiny_set["maps"]), "--gt_dir",
             str(tiny_set["gt"]), "--curve", "False", "--t", "0.25", "--json", str(out)])
    s = json.loads(out.read_text())
    assert s["thresholds"] == [0.25] and s["best_miou"] == pytest.approx(plain_miou(tiny_set["truth"], 0.25))
    with pytest.raises(ConfigError, match="allow-pickle"):
        ev.main(["--list", str(tiny_set["list"]), "--predict_dir", str(tiny_set["maps"]), "--type", "npy"])


def test_evaluation_missing_map_file(tiny_set):
    ev = load_script("evaluation.py")
    (tiny_set["maps"] / f"{tiny_set['names'][2]}.npz").unlink()
    with pytest.raises(FileNotFoundError, match=f"1 of 4 npz prediction files are missing.*{tiny_set['names'][2]}"):
        ev.main(["--list", str(tiny_set["list"]), "--predict_dir", str(tiny_set["maps"]), "--gt_dir",
                 str(tiny_set["gt"])])


def _write_csv(tiny_set, n=40, seed=1):
    rng = np.random.default_rng(seed)
    logits = rng.normal(-1, 2, (n, 20))
    labels = (rng.random((n, 20)) < 0.1).astype(int)
    labels[:, 14] = 1
    labels[:, 0] = 0  # a class without positives (left out of mAP with a warning)
    ji = np.clip(0.5 - 0.1 * logits.mean(1) + rng.normal(0, 0.1, n), 0, 1)
    df = per_sample_table([f"im{i}" for i in range(n)], logits, labels, ji, ji * 0.9)
    path = tiny_set["root"] / "eval" / "val_best" / "per_sample.csv"
    write_per_sample_csv(df, path)
    return path, df, logits, labels


def test_compute_vice_end_to_end(tiny_set, capsys):
    csv, df, *_ = _write_csv(tiny_set)
    load_script("compute_VICE.py").main(["--dir_csv", str(csv), "--plot_title", "Tiny", "--bins", "5",
                                         "--bootstrap", "200"])
    d = csv.parent
    s = json.loads((d / "vice.json").read_text())
    assert s["vice"] == pytest.approx(np.corrcoef(-df["loss"], df["miou"])[0, 1])
    assert s["n"] == 40 and s["ci_low"] < s["vice"] < s["ci_high"]
    assert s["ji_definition"] == "reference" and s["bin_count"] == [8] * 5
    for png in ("vice_bins.png", "loss_vs_ji.png"):
        with Image.open(d / png) as im:
            assert im.format == "PNG" and im.size[0] > 100
    assert "VICE =" in capsys.readouterr().out


def test_compute_vice_on_original_style_csv(tiny_set, tmp_path):
    """Only name_image, loss, miou (the original's CSVs); --json names the figures."""
    path = tmp_path / "miou_loss_x.csv"
    path.write_text("name_image,loss,confidence,miou\na,0.1,0.9,0.8\nb,0.2,0.8,0.7\nc,0.3,0.7,0.5\nd,0.5,0.6,0.55\n")
    out = tmp_path / "o" / "v.json"
    load_script("compute_VICE.py").main(["--dir_csv", str(path), "--plot_title", "t", "--json", str(out),
                                         "--bootstrap", "50", "--bins", "2"])
    s = json.loads(out.read_text())
    assert s["vice"] == pytest.approx(np.corrcoef([-0.1, -0.2, -0.3, -0.5], [0.8, 0.7, 0.5, 0.55])[0, 1])
    assert (tmp_path / "o" / "v_bins.png").is_file() and (tmp_path / "o" / "v_loss_vs_ji.png").is_file()


@pytest.mark.filterwarnings("ignore:VICE bootstrap")
def test_compute_vice_bad_csv(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name_image,loss\na,0.1\n")
    with pytest.raises(ValueError, match=r"bad\.csv: missing column\(s\) \['miou'\]"):
        load_script("compute_VICE.py").main(["--dir_csv", str(bad), "--plot_title", "x"])
    nan = tmp_path / "nan.csv"
    nan.write_text("name_image,loss,miou\na,0.1,0.5\nb,0.2,\nc,0.3,0.2\nd,0.4,0.1\n")
    with pytest.raises(ValueError, match=r"nan\.csv: column 'miou' has NaN values \(rows \[2\]\).*--drop_nan"):
        load_script("compute_VICE.py").main(["--dir_csv", str(nan), "--plot_title", "x"])
    with pytest.warns(UserWarning, match="dropping 1 row"):
        load_script("compute_VICE.py").main(["--dir_csv", str(nan), "--plot_title", "x", "--drop_nan",
                                             "--bootstrap", "20", "--bins", "3"])
    assert json.loads((tmp_path / "nan_vice.json").read_text())["n_dropped"] == 1


def test_compute_vice_constant_ji_gives_null(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("name_image,loss,miou\na,0.1,0.5\nb,0.2,0.5\nc,0.3,0.5\n")
    with pytest.warns(UserWarning, match="JI is constant"):
        load_script("compute_VICE.py").main(["--dir_csv", str(path), "--plot_title", "x", "--bins", "3"])
    s = json.loads((tmp_path / "c_vice.json").read_text())
    assert s["vice"] is None and s["n"] == 3


def plain_ece(p, y, M=20):
    conf, acc = [], []
    for pr, yr in zip(p, y):
        above = pr[pr >= 0.5]
        conf.append(above.mean() if above.size else pr.max())
        a, b = set(np.flatnonzero(yr)), set(np.flatnonzero(pr > 0.5))
        acc.append(len(a & b) / len(a | b) if a | b else 1.0)
    conf, acc = np.array(conf), np.array(acc)
    b = np.maximum(np.ceil(conf * M).astype(int) - 1, 0)
    ece = sum((b == m).sum() / len(conf) * abs(acc[b == m].mean() - conf[b == m].mean())
              for m in range(M) if (b == m).any())
    return ece, acc.mean()


def test_compute_ece_csv_and_config_forms(tiny_set, capsys):
    csv, df, logits, labels = _write_csv(tiny_set)
    ece = load_script("compute_ECE.py")
    with pytest.warns(UserWarning, match="without positive samples"):
        ece.main(["--csv", str(csv)])
    s = json.loads((csv.parent / "ece.json").read_text())
    p = 1 / (1 + np.exp(-logits))
    want_ece, want_acc = plain_ece(p, labels)
    assert s["ece_ml"] == pytest.approx(want_ece) and s["acc_ml"] == pytest.approx(want_acc)
    assert 0 <= s["mAP"] <= 1 and len(s["bins"]) == 20 and sum(b["count"] for b in s["bins"]) == 40
    assert s["binning"] == "width" and s["pred_threshold"] == 0.5
    (csv.parent / "ece.json").unlink()
    (csv.parent / "reliability.png").unlink()
    with pytest.warns(UserWarning):
        ece.main([str(ROOT / "config" / "resnet50.py"), "--options", f"work_dir_root={tiny_set['tmp'] / 'work_dirs'}",
                  "network=resnet50", "session_name=S", "weights=best.pth", "eval_list=val.txt", "fignote=ResNet-50",
                  "ece_binning=count", "ece_bins=4"])
    s2 = json.loads((csv.parent / "ece.json").read_text())
    assert s2["binning"] == "count" and [b["count"] for b in s2["bins"]] == [10] * 4
    with Image.open(csv.parent / "reliability.png") as im:
        assert im.format == "PNG"


def test_compute_ece_errors(tiny_set, tmp_path):
    ece = load_script("compute_ECE.py")
    with pytest.raises(MissingInputError, match=r"none/eval/val_best/per_sample\.csv: per-sample CSV not found"):
        ece.main([str(ROOT / "config" / "resnet50.py"), "--options", f"work_dir_root={tmp_path}",
                  "session_name=none"])
    bad = tmp_path / "bad.csv"
    bad.write_text("name_image,loss,miou\na,0.1,0.5\n")
    with pytest.raises(ValueError, match=r"bad\.csv: missing column\(s\) \['label', 'p_00'"):
        ece.main(["--csv", str(bad)])


def test_script_runs_as_a_command(tiny_set):
    csv, *_ = _write_csv(tiny_set)
    bad = subprocess.run([sys.executable, "compute_VICE.py", "--dir_csv", str(csv) + ".missing", "--plot_title",
                          "x"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and "per-sample CSV not found" in bad.stderr and "Traceback" not in bad.stderr
