"""The map stage (generate_maps): files, batching, resume, corrupt files, class modes, torchrun."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import dywsss.engine.maps as maps_mod
from dywsss.config import load_config, session_paths
from dywsss.data.demo import render_image, save_palette_png
from dywsss.data.transforms import val_transform
from dywsss.errors import StaleError
from dywsss.engine.maps import centred_blob_maps, explain_batch, generate_blob_maps, generate_maps, to_device_batch
from dywsss.explain.cam import CAM
from dywsss.mapfile import load_maps

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)

# three sizes, two of them shared, so that the stage forms batches of equal size
SIZES = [(48, 64), (64, 48), (48, 64), (40, 56), (48, 64), (64, 48), (48, 64)]


def make_tiny_voc(root: Path, sizes=SIZES, seed: int = 0) -> dict:
    """A few synthetic VOC-layout images (dywsss.data.demo's renderer) with masks, labels and a list."""
    from PIL import Image

    voc = root / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    labels, names = {}, []
    for i, (h, w) in enumerate(sizes):
        name = f"img_{i:03d}"
        image, mask, present = render_image(h, w, np.random.default_rng((seed, i)))
        Image.fromarray(image).save(voc / "JPEGImages" / f"{name}.jpg", quality=95)
        save_palette_png(voc / "SegmentationClassAug" / f"{name}.png", mask)
        labels[name], names = present, names + [name]
    (root / "cls_labels.json").write_text(json.dumps(labels))
    (root / "val.txt").write_text("".join(f"{n}\n" for n in names))
    return dict(names=names, labels=labels)


def tiny_cfg(root: Path, **options):
    opts = dict(
        network="resnet18", voc12_root=str(root / "VOC2012"), gt_dir=str(root / "VOC2012/SegmentationClassAug"),
        cls_label=str(root / "cls_labels.json"), infer_list=str(root / "val.txt"), eval_list=str(root / "val.txt"),
        list_root=str(root), work_dir_root=str(root / "work_dirs"), session_name="s", weights="best.pth",
        num_workers=0, device="cpu", cam_batch_size=4, cam_dtype="float32", batch_size=4, crop_size=32,
    )
    opts.update(options)
    return load_config(REPO / "config/resnet50.py", opts)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    return root, make_tiny_voc(root)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=20).eval()


def read_dir(out: Path) -> dict:
    return {p.stem: load_maps(p) for p in sorted(out.glob("*.npz"))}


def stats(out: Path) -> dict:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(out.glob("*.npz"))}


def test_files_hold_gt_maps_of_image_size(data, model):
    root, info = data
    cfg = tiny_cfg(root, session_name="basic")
    out = generate_maps(cfg, model=model)
    assert out == session_paths(cfg).cam_dir(cfg.infer_list, cfg.weights)
    assert out.name == "cam_val_best"
    files = read_dir(out)
    assert sorted(files) == info["names"]
    peak_count = 0
    for name, (h, w) in zip(info["names"], SIZES):
        classes, cams = files[name]
        assert classes.tolist() == sorted(info["labels"][name])
        assert cams.shape == (len(classes), h, w) and cams.min() >= 0 and cams.max() <= 1
        peaks = cams.reshape(len(classes), -1).max(1)
        assert np.all((peaks == 0) | (peaks > 0.99))  # a map is ~1 at its peak, or all 0 (all-zero CAM)
        peak_count += int((peaks > 0.99).sum())
    assert peak_count > 0
    meta = json.loads((out / "maps_meta.json").read_text())
    assert meta["method"] == "cam" and meta["scales"] == [1.0] and meta["flip"] is True and meta["classes"] == "gt"


def test_file_equals_single_image_explanation(data, model):
    """The stage's file for an image = explain_batch on that image alone, from the decoded JPEG."""
    from dywsss.data.voc import load_image

    root, info = data
    cfg = tiny_cfg(root, session_name="single", cam_batch_size=3)
    out = generate_maps(cfg, model=model)
    name = info["names"][3]
    img = load_image(root / "VOC2012/JPEGImages" / f"{name}.jpg")
    ref = explain_batch(CAM(model), to_device_batch([img], torch.device("cpu")), [sorted(info["labels"][name])])[0]
    np.testing.assert_allclose(load_maps(out / f"{name}.npz")[1], ref.numpy(), atol=1e-5)


def test_batched_equals_unbatched(data, model):
    root, _ = data
    a = read_dir(generate_maps(tiny_cfg(root, session_name="b4", cam_batch_size=4), model=model))
    b = read_dir(generate_maps(tiny_cfg(root, session_name="b1", cam_batch_size=1), model=model))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k][0], b[k][0])
        # float32 rounding of batch-size dependent conv kernels, nothing more
        np.testing.assert_allclose(a[k][1], b[k][1], atol=1e-5, rtol=0)


def test_resume_keeps_finished_files_and_redoes_broken_ones(data, model, monkeypatch):
    root, info = data
    cfg = tiny_cfg(root, session_name="resume", cam_batch_size=2)
    out = session_paths(cfg).cam_dir(cfg.infer_list, cfg.weights)
    real_save, calls = maps_mod.save_maps, []

    def crash_after_three(*args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated interruption")
        calls.append(args[0])
        return real_save(*args, **kwargs)

    monkeypatch.setattr(maps_mod, "save_maps", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        generate_maps(cfg, model=model)
    monkeypatch.setattr(maps_mod, "save_maps", real_save)
    first = stats(out)
    assert len(first) == 3 and not list(out.glob(".*tmp*"))
    generate_maps(cfg, model=model)
    second = stats(out)
    assert len(second) == len(info["names"])
    assert all(second[k] == v for k, v in first.items())  # finished files not rewritten

    generate_maps(cfg, model=model)  # nothing to do
    assert stats(out) == second

    names = info["names"]
    (out / f"{names[0]}.npz").write_bytes((out / f"{names[0]}.npz").read_bytes()[:100])  # truncated
    (out / f"{names[1]}.npz").write_bytes(b"not a zip file")  # corrupt
    np.savez(out / f"{names[2]}.npz", classes=np.array([19]), cams=np.zeros((1, 48, 64), np.float32))  # wrong class
    np.savez(out / f"{names[3]}.npz", classes=np.array(sorted(info["labels"][names[3]])),
             cams=np.zeros((len(info["labels"][names[3]]), 8, 8), np.float32))  # wrong size
    broken = stats(out)
    generate_maps(cfg, model=model)
    third = stats(out)
    redone = {k for k in third if third[k] != broken[k]}
    assert redone == {f"{n}.npz" for n in names[:4]}
    ref = read_dir(generate_maps(tiny_cfg(root, session_name="resume_ref", cam_batch_size=2), model=model))
    for n in names[:4]:
        classes, cams = load_maps(out / f"{n}.npz")
        np.testing.assert_array_equal(classes, ref[n][0])
        np.testing.assert_allclose(cams, ref[n][1], atol=1e-5)

    generate_maps(tiny_cfg(root, session_name="resume", cam_batch_size=2, overwrite=True), model=model)
    assert all(stats(out)[k][0] != third[k][0] for k in third)  # every file replaced (new inode)


def test_other_settings_are_refused_without_overwrite(data, model):
    root, _ = data
    generate_maps(tiny_cfg(root, session_name="meta"), model=model)
    with pytest.raises(StaleError, match="other settings or weights.*flip: True there, False now"):
        generate_maps(tiny_cfg(root, session_name="meta", cam_flip=False), model=model)


def test_class_modes(data, model):
    root, info = data
    all_maps = read_dir(generate_maps(tiny_cfg(root, session_name="all", cam_classes="all"), model=model))
    gt_maps = read_dir(generate_maps(tiny_cfg(root, session_name="gt"), model=model))
    pred_maps = read_dir(generate_maps(tiny_cfg(root, session_name="pred", cam_classes="pred", pred_threshold=0.5),
                                       model=model))
    from dywsss.data.voc import load_image

    tf = val_transform(32)  # the per-sample stage's input (loss_input=center_crop, crop_size=32)
    for name in info["names"]:
        assert all_maps[name][0].tolist() == list(range(20))
        # per-class normalisation: the gt maps are the matching rows of the all-class maps
        np.testing.assert_allclose(all_maps[name][1][gt_maps[name][0]], gt_maps[name][1], atol=1e-6)
        with torch.no_grad():
            p = torch.sigmoid(model(tf(load_image(root / "VOC2012/JPEGImages" / f"{name}.jpg"))[None]))[0]
        assert pred_maps[name][0].tolist() == torch.nonzero(p > 0.5).flatten().tolist()
    assert sum(len(v[0]) for v in pred_maps.values()) > 0


def test_gradcam_method_through_the_stage(data, model):
    root, info = data
    files = read_dir(generate_maps(tiny_cfg(root, session_name="gc", cam_method="gradcam", cam_dtype="float16"),
                                   model=model))
    cams = read_dir(session_paths(tiny_cfg(root, session_name="basic")).cam_dir("val.txt", "best.pth"))
    for name in info["names"]:
        assert files[name][1].dtype == np.float32 and files[name][1].shape == cams[name][1].shape
        # Grad-CAM = CAM / (h w) for GAP + linear heads: after normalisation the maps agree up to
        # an affine map (the 1e-5 offsets of the normalisation are not scale invariant) and float16
        for g, c in zip(files[name][1], cams[name][1]):
            assert (g.max() == 0) == (c.max() == 0)
            if c.max() > 0:
                assert np.corrcoef(g.ravel(), c.ravel())[0, 1] > 0.9999


def test_blob_baseline(data):
    blob = centred_blob_maps(5, 7, 2)
    assert blob.shape == (2, 5, 7) and blob[0, 2, 3] == pytest.approx(1.0) and blob[0, 0, 0] < 0.1
    np.testing.assert_allclose(blob[:, :, ::-1], blob)
    root, info = data
    out = generate_blob_maps(tiny_cfg(root, session_name="blob"))
    classes, cams = load_maps(out / f"{info['names'][0]}.npz")
    assert out.name == "cam_val_blob" and cams.shape == (len(classes),) + SIZES[0]


@pytest.mark.slow
def test_two_processes_write_the_same_files(data, model, tmp_path):
    root, info = data
    weights = tmp_path / "w.pth"
    torch.save(model.state_dict(), weights)
    opts = dict(session_name="ddp", weights=str(weights), cam_batch_size=2)
    single = read_dir(generate_maps(tiny_cfg(root, session_name="single_proc", weights=str(weights),
                                             cam_batch_size=2)))
    cfg = tiny_cfg(root, **opts)
    args = [f"{k}={v}" for k, v in cfg.items() if k in (
        "network", "voc12_root", "gt_dir", "cls_label", "infer_list", "list_root", "work_dir_root", "session_name",
        "weights", "num_workers", "device", "cam_batch_size", "cam_dtype", "crop_size")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(REPO / "run_resnet50.py"),
         str(REPO / "config/resnet50.py"), "--options", "gen_mask_for_multi_crop=True", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # size batches of 2 in list order: [0, 2] [1, 5] [3] [4, 6]; rank 0 takes [0, 2] and [3]
    assert "3/3" in proc.stderr and "4/4" not in proc.stderr
    double = read_dir(session_paths(cfg).cam_dir(cfg.infer_list, cfg.weights))
    assert double.keys() == single.keys() == set(info["names"])
    for k in single:  # each image in the same batch on both sides: bit-identical
        np.testing.assert_array_equal(double[k][0], single[k][0])
        np.testing.assert_array_equal(double[k][1], single[k][1])


def test_vit_method_through_the_stage(data):
    """A fixed-input-size explainer (ViT relevance): resized input, maps back at the image size."""
    root, info = data
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=20, img_size=32, patch_size=8,
                            depth=2).eval()
    opts = dict(cam_method="transformer_attribution", cam_flip=False, cam_scales=(1.0, 0.5))
    a = read_dir(generate_maps(tiny_cfg(root, session_name="vit4", cam_batch_size=4, **opts), model=vit))
    b = read_dir(generate_maps(tiny_cfg(root, session_name="vit1", cam_batch_size=1, **opts), model=vit))
    meta = json.loads((session_paths(tiny_cfg(root, session_name="vit4")).cam_dir("val.txt", "best.pth")
                       / "maps_meta.json").read_text())
    assert meta["input_size"] == [32, 32] and meta["scales"] is None  # scales do not apply to a fixed size
    for name, size in zip(info["names"], SIZES):
        assert a[name][1].shape == (len(info["labels"][name]),) + size
        np.testing.assert_allclose(a[name][1], b[name][1], atol=1e-5)


def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_legacy_npy_converter(data, model, tmp_path):
    root, info = data
    src = generate_maps(tiny_cfg(root, session_name="basic"), model=model)
    assert _script("maps_to_npy").convert(src, tmp_path / "npy") == len(info["names"])
    for name in info["names"]:
        obj = np.load(tmp_path / "npy" / f"{name}.npy", allow_pickle=True).item()
        classes, cams = load_maps(src / f"{name}.npz")
        assert sorted(obj) == classes.tolist()
        for c, m in zip(classes, cams):
            assert obj[c].dtype == np.float32
            np.testing.assert_array_equal(obj[c], m)
    with pytest.raises(FileNotFoundError, match="no .npz map files"):
        _script("maps_to_npy").convert(tmp_path / "npy", tmp_path / "x")


def test_show_cams_writes_pngs(data, model, tmp_path, monkeypatch, capsys):
    from PIL import Image

    root, info = data
    cfg = tiny_cfg(root, session_name="basic")
    generate_maps(cfg, model=model)
    capsys.readouterr()
    args = [f"{k}={cfg[k]}" for k in ("voc12_root", "gt_dir", "infer_list", "work_dir_root", "session_name")]
    monkeypatch.setattr(sys, "argv", ["show_cams.py", str(REPO / "config/resnet50.py"), "--first", "2",
                                      "--out", str(tmp_path), "--options", *args])
    _script("show_cams").main()
    written = capsys.readouterr().out.split()
    assert written == [str(tmp_path / f"{n}.png") for n in info["names"][:2]]
    with Image.open(written[0]) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1]


def test_batches_are_dealt_to_ranks(data, tmp_path):
    from dywsss.engine.maps import planned_batches

    root, info = data
    cfg = tiny_cfg(root, session_name="plan", cam_batch_size=2)
    labels = np.zeros((len(info["names"]), 20), np.float32)
    one = planned_batches(cfg, info["names"], labels, tmp_path)
    assert one == [[0, 2], [1, 5], [3], [4, 6]]  # equal sizes only, list order within a size
    two = [planned_batches(cfg, info["names"], labels, tmp_path, rank, 2) for rank in (0, 1)]
    assert two == [[[0, 2], [3]], [[1, 5], [4, 6]]]
