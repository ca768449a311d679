"""The synthetic demo set: layout, masks, labels and lists agree; determinism."""
from __future__ import annotations

import importlib.util
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import distance_transform_cdt

from dywsss.data.demo import STYLES, SHAPES, TEXTURES, make_demo_voc, render_image
from dywsss.data.voc import CLASS_NAMES, VOC_PALETTE, load_mask, read_image_list

from conftest import DEMO_TRAIN, DEMO_VAL

ROOT = Path(__file__).resolve().parents[1]


def _files(folder: Path, suffix: str) -> set[str]:
    return {p.stem for p in folder.glob(f"*{suffix}")}


def test_lists_match_files(demo_voc):
    voc = demo_voc / "VOC2012"
    train = read_image_list(demo_voc / "train_aug.txt")
    val = read_image_list(demo_voc / "val.txt")
    assert (len(train), len(val)) == (DEMO_TRAIN, DEMO_VAL)
    assert len(set(train)) == len(train) and len(set(val)) == len(val)
    assert not set(train) & set(val)
    assert read_image_list(demo_voc / "train.txt") == train
    seg = voc / "ImageSets" / "Segmentation"
    assert read_image_list(seg / "train.txt") == train
    assert read_image_list(seg / "val.txt") == val
    assert read_image_list(seg / "trainval.txt") == train + val
    every = set(train) | set(val)
    assert _files(voc / "JPEGImages", ".jpg") == every
    assert _files(voc / "SegmentationClassAug", ".png") == every
    assert _files(voc / "SegmentationClass", ".png") == every
    assert _files(voc / "Annotations", ".xml") == every
    assert set(json.loads((demo_voc / "cls_labels.json").read_text())) == every


def test_masks_are_voc_palette_pngs_that_agree_with_labels_and_xml(demo_voc):
    voc = demo_voc / "VOC2012"
    labels = json.loads((demo_voc / "cls_labels.json").read_text())
    class_counts = np.zeros(20, int)
    for name, ids in labels.items():
        img = np.asarray(Image.open(voc / "JPEGImages" / f"{name}.jpg"))
        assert img.ndim == 3 and 64 <= min(img.shape[:2]) and max(img.shape[:2]) <= 96
        for sub in ("SegmentationClassAug", "SegmentationClass"):
            with Image.open(voc / sub / f"{name}.png") as im:
                assert im.mode == "P"
                assert im.getpalette()[:768] == VOC_PALETTE
                raw = np.asarray(im)
            assert raw.shape == img.shape[:2]
            assert set(np.unique(raw).tolist()) <= set(range(21)) | {255}
        mask = load_mask(voc / "SegmentationClassAug", name, expect_shape=img.shape)
        present = sorted(int(v) - 1 for v in np.unique(mask) if 1 <= v <= 20)
        assert ids == present and len(ids) >= 1
        objects = ET.parse(voc / "Annotations" / f"{name}.xml").getroot().findall("object")
        assert sorted(CLASS_NAMES.index(o.findtext("name")) for o in objects) == ids
        assert (mask == 255).any()
        class_counts[ids] += 1
    assert (class_counts > 0).sum() >= 15  # 36 images cover most of the 20 classes


def test_different_labels_are_always_separated_by_ignore(demo_voc):
    """255 runs along every outline: no object pixel touches a pixel of another label."""
    gt = demo_voc / "VOC2012" / "SegmentationClassAug"
    ignored = []
    for png in sorted(gt.glob("*.png")):
        m = np.asarray(Image.open(png)).astype(int)
        for a, b in ((m[1:, :], m[:-1, :]), (m[:, 1:], m[:, :-1])):
            touching = (a != b) & (a != 255) & (b != 255)
            assert not touching.any(), png.name
        # the band is thin: every 255 pixel lies within 3 px of a labelled pixel
        dist = distance_transform_cdt(m == 255, metric="chessboard")
        assert dist.max() <= 3, png.name
        ignored.append((m == 255).mean())
    assert 0.01 < np.mean(ignored) < 0.15


def test_render_image_objects_and_occlusion():
    rng = np.random.default_rng(123)
    image, mask, present = render_image(120, 160, rng)
    assert image.shape == (120, 160, 3) and image.dtype == np.uint8
    assert mask.shape == (120, 160) and mask.dtype == np.uint8
    assert 1 <= len(present) <= 3
    assert present == sorted(int(v) - 1 for v in np.unique(mask) if 1 <= v <= 20)
    # over many images, object counts span 1..3 and classes vary
    counts = [len(render_image(48, 48, np.random.default_rng((9, i)))[2]) for i in range(40)]
    assert set(counts) == {1, 2, 3}


def test_every_class_has_its_own_shape_and_style():
    assert len(STYLES) == 20
    assert len({s.shape for s in STYLES}) == 20
    assert all(s.texture in TEXTURES and s.shape in SHAPES for s in STYLES)
    assert len({(s.hue, s.sat, s.val, s.texture) for s in STYLES}) == 20


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_for_a_seed_and_different_across_seeds(tmp_path):
    kw = dict(n_train=3, n_val=2, min_side=40, max_side=56, progress=False)
    make_demo_voc(tmp_path / "a", seed=7, **kw)
    make_demo_voc(tmp_path / "b", seed=7, **kw)
    make_demo_voc(tmp_path / "c", seed=8, **kw)
    a, b, c = (_tree_bytes(tmp_path / x) for x in "abc")
    assert a == b
    assert a.keys() == c.keys()
    jpgs = [k for k in a if k.endswith(".jpg")]
    assert len(jpgs) == 5 and all(a[k] != c[k] for k in jpgs)
    # an image does not depend on how many others are made
    make_demo_voc(tmp_path / "d", seed=7, n_train=1, n_val=1, min_side=40, max_side=56, progress=False)
    d = _tree_bytes(tmp_path / "d")
    for key in ("VOC2012/JPEGImages/train_000000.jpg", "VOC2012/SegmentationClassAug/val_000000.png"):
        assert d[key] == a[key]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="at least one train and one val image"):
        make_demo_voc(tmp_path, n_train=0, n_val=1, progress=False)
    with pytest.raises(ValueError, match="min_side <= max_side"):
        make_demo_voc(tmp_path, n_train=1, n_val=1, min_side=80, max_side=40, progress=False)


def test_make_demo_voc_script(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("make_demo_voc", ROOT / "scripts" / "make_demo_voc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "demo"
    module.main(["--out", str(out), "--train", "2", "--val", "1", "--seed", "3",
                 "--min-side", "40", "--max-side", "48"])
    printed = capsys.readouterr().out
    assert str(out / "cls_labels.json") in printed and "wrote 2 train + 1 val images" in printed
    assert read_image_list(out / "train_aug.txt") == ["train_000000", "train_000001"]
    assert read_image_list(out / "val.txt") == ["val_000000"]
