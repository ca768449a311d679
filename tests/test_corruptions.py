"""OOD sets: seeded ImageNet-C-style corruptions, the corrupted VOC tree, the demo generator shift."""
from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dywsss.data.corruptions import (
    CORRUPTIONS,
    PARAMETERS,
    corrupt_image,
    encode_corrupted,
    make_ood_voc,
    read_ood_manifest,
)
from dywsss.data.demo import DemoShift, make_demo_voc
from dywsss.errors import ConfigError, MissingInputError
from dywsss.provenance import sha256_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = np.zeros((24, 32, 3), np.uint8)
    img[:, :16] = (200, 40, 90)
    img[:, 16:] = (30, 160, 220)
    return np.clip(img + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8)


def test_registered_corruptions_and_parameter_tables():
    assert set(CORRUPTIONS.names()) == {"gaussian_noise", "gaussian_blur", "contrast", "jpeg"}
    assert PARAMETERS["gaussian_noise"] == (0.08, 0.12, 0.18, 0.26, 0.38)
    assert PARAMETERS["jpeg"] == (25, 18, 15, 10, 7)
    with pytest.raises(ConfigError, match="severity 6"):
        corrupt_image(np.zeros((4, 4, 3), np.uint8), "contrast", 6, 0, "x")
    with pytest.raises(KeyError, match="unknown corruption 'fog'"):
        corrupt_image(np.zeros((4, 4, 3), np.uint8), "fog", 1, 0, "x")


def test_contrast_by_hand(image):
    x = image / 255.0
    mean = x.mean(axis=(0, 1), keepdims=True)
    expected = np.clip(np.rint(np.clip((x - mean) * 0.2 + mean, 0, 1) * 255), 0, 255)
    assert (corrupt_image(image, "contrast", 3, 0, "x") == expected).all()


def test_noise_has_the_severity_sd_and_is_deterministic(image):
    flat = np.full((200, 200, 3), 128, np.uint8)  # mid grey: no clipping
    a = corrupt_image(flat, "gaussian_noise", 2, seed=5, image_id="img_1")
    assert abs((a / 255.0 - 128 / 255).std() - 0.12) < 0.003
    assert (a == corrupt_image(flat, "gaussian_noise", 2, seed=5, image_id="img_1")).all()
    assert (a != corrupt_image(flat, "gaussian_noise", 2, seed=6, image_id="img_1")).any()
    assert (a != corrupt_image(flat, "gaussian_noise", 2, seed=5, image_id="img_2")).any()


def test_blur_matches_scikit_image(image):
    from skimage.filters import gaussian

    expected = np.rint(np.clip(gaussian(image / 255.0, sigma=2, channel_axis=2), 0, 1) * 255)
    assert (corrupt_image(image, "gaussian_blur", 2, 0, "x") == expected).all()


def test_jpeg_file_is_the_severity_encoding(image):
    data = encode_corrupted(image, "jpeg", 4, 0, "x")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=10)
    assert data == buf.getvalue()


@pytest.mark.parametrize("corruption", ["gaussian_noise", "gaussian_blur", "contrast", "jpeg"])
def test_severities_differ(image, corruption):
    outs = [encode_corrupted(image, corruption, s, 0, "x") for s in (1, 2, 3, 4, 5)]
    assert len(set(outs)) == 5


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_ood_tree_same_seed_same_bytes_masks_untouched(demo_voc, tmp_path):
    src = dict(list_file=demo_voc / "val.txt", voc12_root=demo_voc / "VOC2012", cls_label=demo_voc / "cls_labels.json")
    a = make_ood_voc(**src, out=tmp_path / "a", corruption="gaussian_noise", severity=3, seed=1, progress=False)
    b = make_ood_voc(**src, out=tmp_path / "b", corruption="gaussian_noise", severity=3, seed=1, progress=False)
    c = make_ood_voc(**src, out=tmp_path / "c", corruption="gaussian_noise", severity=4, seed=1, progress=False)
    ta, tb, tc = _tree_bytes(a.root), _tree_bytes(b.root), _tree_bytes(c.root)
    jpgs = sorted(k for k in ta if k.startswith("VOC2012/JPEGImages/"))
    names = (demo_voc / "val.txt").read_text().split()
    assert len(jpgs) == len(names) == 12
    assert all(ta[k] == tb[k] for k in jpgs)
    assert all(ta[k] != tc[k] for k in jpgs)
    for sub in ("SegmentationClassAug", "SegmentationClass"):
        for n in names:
            assert ta[f"VOC2012/{sub}/{n}.png"] == (demo_voc / "VOC2012" / sub / f"{n}.png").read_bytes()
    assert ta["VOC2012/Annotations/" + names[0] + ".xml"] == (demo_voc / "VOC2012/Annotations" /
                                                                (names[0] + ".xml")).read_bytes()
    # labels of the listed images only, unchanged
    src_labels = json.loads((demo_voc / "cls_labels.json").read_text())
    assert json.loads((a.root / "cls_labels.json").read_text()) == {n: src_labels[n] for n in names}
    # the manifest and the list name
    assert a.list_file.name == "val_gaussian_noise_s3.txt" and a.list_file.read_text().split() == names
    m = json.loads((a.root / "manifest.json").read_text())
    assert (m["corruption"], m["severity"], m["seed"], m["parameter"]) == ("gaussian_noise", 3, 1, 0.18)
    assert m["source"]["list_sha256"] == sha256_file(demo_voc / "val.txt")
    assert read_ood_manifest(a.root).gt_dir == a.root / "VOC2012" / "SegmentationClassAug"
    assert f"eval_list={a.list_file}" in a.options()
    # an image does not depend on the others in the list
    one = tmp_path / "one.txt"
    one.write_text(names[3] + "\n")
    d = make_ood_voc(one, src["voc12_root"], src["cls_label"], tmp_path / "d", "gaussian_noise", 3, seed=1,
                     progress=False)
    assert (d.voc12_root / "JPEGImages" / f"{names[3]}.jpg").read_bytes() == ta[f"VOC2012/JPEGImages/{names[3]}.jpg"]


def test_linked_tree_and_bad_sources(demo_voc, tmp_path):
    t = make_ood_voc(demo_voc / "val.txt", demo_voc / "VOC2012", demo_voc / "cls_labels.json", tmp_path / "l",
                     "contrast", 1, link=True, progress=False)
    mask = next((t.voc12_root / "SegmentationClassAug").iterdir())
    assert mask.is_symlink()
    with pytest.raises(MissingInputError, match="image not found"):
        bad = tmp_path / "bad.txt"
        bad.write_text("no_such_image\n")
        labels = tmp_path / "labels.json"
        labels.write_text('{"no_such_image": [1]}')
        make_ood_voc(bad, demo_voc / "VOC2012", labels, tmp_path / "x", "contrast", 1, progress=False)
    assert not (tmp_path / "x").exists()  # nothing written before the check


def test_make_ood_voc_script(demo_voc, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("make_ood_voc", ROOT / "scripts" / "make_ood_voc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--list", str(demo_voc / "val.txt"), "--voc12-root", str(demo_voc / "VOC2012"),
                        "--cls-label", str(demo_voc / "cls_labels.json"), "--out", str(tmp_path),
                        "--corruption", "jpeg", "contrast", "--severity", "2"]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"jpeg_s2", "contrast_s2"}
    assert "jpeg severity 2 (parameter 18" in capsys.readouterr().out


def test_demo_shift_keeps_layout_masks_and_labels(tmp_path):
    kw = dict(n_train=1, n_val=3, seed=4, min_side=48, max_side=64, progress=False)
    make_demo_voc(tmp_path / "clean", **kw)
    shift = DemoShift(hue_shift=120, background="stripes")
    make_demo_voc(tmp_path / "shift", shift=shift, **kw)
    make_demo_voc(tmp_path / "hue", shift=DemoShift(hue_shift=120), **kw)
    a, b, h = _tree_bytes(tmp_path / "clean"), _tree_bytes(tmp_path / "shift"), _tree_bytes(tmp_path / "hue")
    for k in a:
        if k.startswith("VOC2012/JPEGImages/"):
            assert a[k] != b[k] and a[k] != h[k]
        else:  # masks, XML, lists, labels identical
            assert a[k] == b[k] == h[k], k
    clean = np.asarray(Image.open(tmp_path / "clean/VOC2012/JPEGImages/val_000000.jpg"), dtype=float)
    hue = np.asarray(Image.open(tmp_path / "hue/VOC2012/JPEGImages/val_000000.jpg"), dtype=float)
    mask = np.asarray(Image.open(tmp_path / "clean/VOC2012/SegmentationClassAug/val_000000.png"))
    background = mask == 0
    # a hue-only shift leaves the background alone and changes the objects
    assert np.abs(clean - hue)[background].mean() < 4 < np.abs(clean - hue)[(mask > 0) & (mask < 255)].mean()
    tree = read_ood_manifest(tmp_path / "shift")
    assert tree.list_file.name == "val_shift_hue120_stripes.txt"
    assert tree.manifest["shift"] == {"hue_shift": 120, "background": "stripes"}
    assert not (tmp_path / "clean" / "manifest.json").exists()
    with pytest.raises(ValueError, match="background"):
        DemoShift(background="fog")
