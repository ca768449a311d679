"""VOC data layer: lists, labels, images, masks, checks, datasets and transforms."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dywsss.data import transforms as tf
from dywsss.data.datasets import VOCClassification, VOCImages, collate_images
from dywsss.errors import InputError
from dywsss.data.voc import (
    CLASS_NAMES,
    NUM_CLASSES,
    VOC_PALETTE,
    check_data,
    image_path,
    label_matrix,
    load_cls_labels,
    load_image,
    load_mask,
    read_image_list,
)

ROOT = Path(__file__).resolve().parents[1]
MEAN = np.array(tf.IMAGENET_MEAN, dtype=np.float32)
STD = np.array(tf.IMAGENET_STD, dtype=np.float32)


def _normalise_by_hand(img: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 -> [3, H, W] float32, (x / 255 - mean) / std."""
    return ((img.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)


# ------------------------------------------------------------ names, palette
def test_class_names_and_palette():
    assert NUM_CLASSES == len(CLASS_NAMES) == 20
    assert CLASS_NAMES[0] == "aeroplane" and CLASS_NAMES[14] == "person" and CLASS_NAMES[19] == "tvmonitor"
    assert len(VOC_PALETTE) == 768
    known = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128),
             15: (192, 128, 128), 20: (0, 64, 128), 255: (224, 224, 192)}
    for idx, rgb in known.items():
        assert tuple(VOC_PALETTE[3 * idx:3 * idx + 3]) == rgb


# ---------------------------------------------------------------------- lists
def test_read_image_list_plain_and_original_style(tmp_path):
    lst = tmp_path / "a.txt"
    lst.write_text("2007_000032\n\n2007_000039  \n")
    assert read_image_list(lst) == ["2007_000032", "2007_000039"]
    orig = tmp_path / "b.txt"
    orig.write_text("/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n"
                    "/JPEGImages/2008_000002.jpg /SegmentationClassAug/2008_000002.png\n")
    assert read_image_list(orig) == ["2007_000032", "2008_000002"]


def test_read_image_list_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.txt: image list not found"):
        read_image_list(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match=r"empty\.txt: image list is empty"):
        read_image_list(empty)


# --------------------------------------------------------------------- labels
def test_load_cls_labels_json_multi_hot(tmp_path):
    path = tmp_path / "cls_labels.json"
    path.write_text(json.dumps({"a": [0, 14], "b": [19]}))
    labels = load_cls_labels(path)
    expected_a = np.zeros(20, np.float32)
    expected_a[[0, 14]] = 1
    np.testing.assert_array_equal(labels["a"], expected_a)
    assert labels["b"].dtype == np.float32 and labels["b"].sum() == 1 and labels["b"][19] == 1
    # an image without a class would silently become an all-background image: refused, naming it
    path.write_text(json.dumps({"a": [0, 14], "c": []}))
    with pytest.raises(InputError, match=r"cls_labels\.json: image 'c' has no class \(empty list\)"):
        load_cls_labels(path)


@pytest.mark.parametrize("content, message", [
    ({"a": [0, 20]}, r"bad\.json: image 'a' has class id 20; expected integers in 0\.\.19"),
    ({"a": [-1]}, r"bad\.json: image 'a' has class id -1; expected integers"),
    ({"a": ["cat"]}, r"bad\.json: image 'a' has class id 'cat'; expected integers"),
    ({"a": 3}, r"bad\.json: image 'a': expected a list of class ids"),
    ([1, 2], r"bad\.json: expected a JSON object"),
])
def test_load_cls_labels_rejects_bad_content(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        load_cls_labels(path)


def test_load_cls_labels_missing_and_garbled(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"none\.json: label file not found"):
        load_cls_labels(tmp_path / "none.json")
    bad = tmp_path / "garbled.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"garbled\.json: not a valid JSON label file"):
        load_cls_labels(bad)


def test_pickled_npy_needs_opt_in_and_warns(tmp_path):
    vec = np.zeros(20, np.float32)
    vec[[3, 7]] = 1
    path = tmp_path / "cls_labels.npy"
    np.save(path, {"2007_000032": vec})
    with pytest.raises(ValueError, match=r"cls_labels\.npy: a \.npy label file is a pickled dict.*allow_pickle=True"):
        load_cls_labels(path)
    with pytest.warns(UserWarning, match=r"cls_labels\.npy: loading a pickled label file"):
        labels = load_cls_labels(path, allow_pickle=True)
    np.testing.assert_array_equal(labels["2007_000032"], vec)


def test_shipped_labels_cover_shipped_lists():
    labels = load_cls_labels(ROOT / "voc12/cls_labels.json")
    train, val = read_image_list(ROOT / "voc12/train_aug.txt"), read_image_list(ROOT / "voc12/val.txt")
    assert (len(train), len(val), len(labels)) == (10582, 1449, 12031)
    assert not set(train) & set(val)
    mat = label_matrix(val, labels, ROOT / "voc12/cls_labels.json")
    assert mat.shape == (1449, 20) and (mat.sum(1) >= 1).all()
    # 2007_000032 is the classic aeroplane + person example
    assert np.nonzero(labels["2007_000032"])[0].tolist() == [0, 14]


def test_label_matrix_names_missing_images():
    labels = {"a": np.eye(20, dtype=np.float32)[1], "b": np.eye(20, dtype=np.float32)[2]}
    np.testing.assert_array_equal(label_matrix(["b", "a"], labels), np.eye(20, dtype=np.float32)[[2, 1]])
    with pytest.raises(KeyError, match=r"lab\.json: 2 listed image\(s\) have no labels, e.g. x, y"):
        label_matrix(["a", "x", "y"], labels, source="lab.json")


# ------------------------------------------------------------- images, masks
def test_load_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"gone\.jpg: image not found"):
        load_image(tmp_path / "gone.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(ValueError, match=r"bad\.jpg: unreadable image"):
        load_image(bad)
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((5, 7), 9, np.uint8)).save(grey)
    img = load_image(grey)
    assert img.shape == (5, 7, 3) and img.dtype == np.uint8 and (img == 9).all()


def test_load_mask_palette_and_grayscale(tmp_path):
    values = np.array([[0, 1, 20], [255, 15, 0]], np.uint8)
    pal = Image.fromarray(values)
    pal.putpalette(VOC_PALETTE)
    pal.save(tmp_path / "p.png")
    Image.fromarray(values).save(tmp_path / "g.png")  # mode L
    assert Image.open(tmp_path / "p.png").mode == "P"
    np.testing.assert_array_equal(load_mask(tmp_path, "p"), values)
    np.testing.assert_array_equal(load_mask(tmp_path, "g", expect_shape=(2, 3, 3)), values)


def test_load_mask_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.png: mask not found"):
        load_mask(tmp_path, "missing")
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match=r"small\.png: mask size 6x4 differs from its image 8x5"):
        load_mask(tmp_path, "small", expect_shape=(5, 8))
    Image.fromarray(np.array([[0, 21, 254]], np.uint8)).save(tmp_path / "vals.png")
    with pytest.raises(ValueError, match=r"vals\.png: mask values \[21, 254\] outside \{0\.\.20, 255\}"):
        load_mask(tmp_path, "vals")
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match=r"rgb\.png: mask must be a palette or grayscale PNG"):
        load_mask(tmp_path, "rgb")


# ------------------------------------------------------------------ check_data
def _tiny_tree(tmp_path: Path) -> tuple[Path, Path, Path]:
    voc = tmp_path / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    for name in ("a", "b"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
    lst = tmp_path / "list.txt"
    lst.write_text("a\nb\n")
    lab = tmp_path / "cls_labels.json"
    lab.write_text(json.dumps({"a": [1], "b": [2], "c": [3]}))
    return voc, lst, lab


def test_check_data_ok_and_errors(tmp_path):
    voc, lst, lab = _tiny_tree(tmp_path)
    assert check_data(voc, lst, lab) == ["a", "b"]
    with pytest.raises(FileNotFoundError, match=r"nowhere: dataset root not found\. Put PASCAL VOC 2012 there"):
        check_data(tmp_path / "nowhere", lst, lab)
    with pytest.raises(FileNotFoundError, match=r"nolist\.txt: image list not found"):
        check_data(voc, tmp_path / "nolist.txt", lab)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty\.txt: image list is empty"):
        check_data(voc, empty, lab)
    unl = tmp_path / "unlabelled.txt"
    unl.write_text("a\nzz\n")
    with pytest.raises(KeyError, match=r"cls_labels\.json: 1 listed image\(s\) have no labels, e.g. zz"):
        check_data(voc, unl, lab)
    noimg = tmp_path / "noimg.txt"
    noimg.write_text("a\nc\n")
    with pytest.raises(InputError, match=r"noimg\.txt: 1 bad file\(s\): .*JPEGImages/c\.jpg: image not found"):
        check_data(voc, noimg, lab)


# ------------------------------------------------------------------- datasets
def test_datasets_read_the_demo_tree(demo_voc):
    voc = demo_voc / "VOC2012"
    names = read_image_list(demo_voc / "val.txt")
    assert check_data(voc, demo_voc / "val.txt", demo_voc / "cls_labels.json") == names
    labels = load_cls_labels(demo_voc / "cls_labels.json")
    ds = VOCClassification(names, voc, labels, tf.val_transform(64))
    batch = next(iter(DataLoader(ds, batch_size=4, num_workers=0)))
    assert batch["img"].shape == (4, 3, 64, 64) and batch["img"].dtype == torch.float32
    assert batch["name"] == names[:4]
    raw = json.loads((demo_voc / "cls_labels.json").read_text())
    for i, name in enumerate(names[:4]):
        assert np.nonzero(batch["label"][i].numpy())[0].tolist() == raw[name]
        # the item equals the hand-made centre crop of the file read by PIL
        img = np.asarray(Image.open(voc / "JPEGImages" / f"{name}.jpg").convert("RGB"))
        expected = np.zeros((3, 64, 64), np.float32)
        h, w = img.shape[:2]
        top, left = int(round((h - 64) / 2)), int(round((w - 64) / 2))  # demo images are 64-96 px
        expected[:] = _normalise_by_hand(img)[:, top:top + 64, left:left + 64]
        np.testing.assert_allclose(batch["img"][i].numpy(), expected, atol=1e-5)

    images = VOCImages(names, voc, labels)
    batch = next(iter(DataLoader(images, batch_size=3, collate_fn=collate_images)))
    assert batch["name"] == names[:3] and batch["label"].shape == (3, 20)
    first = np.asarray(Image.open(image_path(voc, names[0])).convert("RGB"))
    np.testing.assert_array_equal(batch["image"][0], first)


def test_train_dataset_in_dataloader_workers_is_seeded(demo_voc):
    voc = demo_voc / "VOC2012"
    names = read_image_list(demo_voc / "train_aug.txt")[:6]
    ds = VOCClassification(names, voc, load_cls_labels(demo_voc / "cls_labels.json"),
                           tf.train_transform(48, (56, 80)))

    def run() -> torch.Tensor:
        gen = torch.Generator().manual_seed(5)
        return torch.cat([b["img"] for b in DataLoader(ds, batch_size=3, num_workers=1, generator=gen)])

    a, b = run(), run()
    assert a.shape == (6, 3, 48, 48)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_dataset_errors_name_the_files(demo_voc, tmp_path):
    labels = load_cls_labels(demo_voc / "cls_labels.json")
    with pytest.raises(KeyError, match=r"no labels, e.g. ghost"):
        VOCClassification(["ghost"], demo_voc / "VOC2012", labels, tf.val_transform(32))
    ds = VOCImages(["train_000000"], tmp_path, {"train_000000": labels["train_000000"]})
    with pytest.raises(FileNotFoundError, match=r"JPEGImages/train_000000\.jpg: image not found"):
        ds[0]


# ----------------------------------------------------------------- transforms
def test_normalize_image_by_hand():
    img = np.array([[[0, 255, 128], [10, 20, 30]]], np.uint8)
    out = tf.normalize_image(img)
    assert out.shape == (3, 1, 2)
    assert out[0, 0, 0].item() == pytest.approx((0 - 0.485) / 0.229, abs=1e-6)
    assert out[1, 0, 0].item() == pytest.approx((1 - 0.456) / 0.224, abs=1e-6)
    np.testing.assert_allclose(out.numpy(), _normalise_by_hand(img), atol=1e-6)
    np.testing.assert_allclose(tf.normalize_image(Image.fromarray(img)).numpy(), out.numpy())


@pytest.mark.parametrize("h, w", [(50, 70), (50, 69), (64, 64), (101, 31)])
def test_val_transform_centre_crop_by_hand(h, w):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    crop = 64
    out = tf.val_transform(crop)(img).numpy()
    expected = np.zeros((3, crop, crop), np.float32)
    norm = _normalise_by_hand(img)
    # Python's round: (69 - 64) / 2 = 2.5 -> 2, as in the original code
    def offsets(size: int) -> tuple[int, int, int]:
        if size >= crop:
            return int(round((size - crop) / 2)), 0, crop
        return 0, int(round((crop - size) / 2)), size
    iy, cy, nh = offsets(h)
    ix, cx, nw = offsets(w)
    expected[:, cy:cy + nh, cx:cx + nw] = norm[:, iy:iy + nh, ix:ix + nw]
    np.testing.assert_allclose(out, expected, atol=1e-6)
    if (h, w) == (50, 69):
        assert (iy, cy, ix, cx) == (0, 7, 2, 0)
        assert (out[:, :7] == 0).all() and (out[:, 57:] == 0).all()


def test_train_transform_shape_padding_and_determinism():
    rng = np.random.default_rng(1)
    img = rng.integers(1, 255, (40, 20, 3), dtype=np.uint8)
    t = tf.train_transform(crop_size=48, resize_long=(32, 32), color_jitter=dict(brightness=0, contrast=0,
                                                                               saturation=0, hue=0))
    torch.manual_seed(0)
    out = t(img)
    assert out.shape == (3, 48, 48)
    # the resized image is 32 x 16 (H x W); the rest of the 48 x 48 crop is zero padding
    inside = (out != 0).any(0)
    rows, cols = np.nonzero(inside.numpy())
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (32, 16)
    assert inside.sum().item() == 32 * 16
    big = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    t2 = tf.train_transform(crop_size=64, resize_long=(96, 128))
    torch.manual_seed(3)
    a = t2(big)
    torch.manual_seed(3)
    b = t2(Image.fromarray(big))
    assert a.shape == (3, 64, 64)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.manual_seed(4)
    assert not torch.equal(a, t2(big))


def test_random_erasing_at_p1_changes_pixels_to_zero():
    img = np.random.default_rng(2).integers(0, 256, (80, 80, 3), dtype=np.uint8)
    kw = dict(crop_size=64, resize_long=(80, 80))
    torch.manual_seed(7)
    plain = tf.train_transform(cut_p=0.0, **kw)(img)
    torch.manual_seed(7)
    erased = tf.train_transform(cut_p=1.0, cut_s=0.25, **kw)(img)
    changed = (plain != erased).any(0)
    frac = changed.float().mean().item()
    assert 0.01 < frac <= 0.25 + 1e-6
    assert (erased[:, changed] == 0).all()
    assert torch.equal(plain[:, ~changed], erased[:, ~changed])


def test_full_image_transform_and_bad_input():
    img = np.random.default_rng(3).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    out = tf.full_image_transform(32)(img)
    assert out.shape == (3, 32, 32)
    expected = _normalise_by_hand(np.asarray(Image.fromarray(img).resize((32, 32), Image.BILINEAR)))
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    with pytest.raises(ValueError, match="expected a uint8 HxWx3 image"):
        tf.val_transform(8)(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match=r"cut_s \(largest erased fraction\) must be in"):
        tf.train_transform(cut_p=0.5, cut_s=0.01)
    with pytest.raises(ValueError, match="resize_long must be"):
        tf.train_transform(resize_long=(10, 5))


def test_palette_rgb_colours_masks_with_the_voc_palette():
    from dywsss.data.voc import palette_rgb

    rgb = palette_rgb(np.array([[0, 1], [15, 255]], np.uint8))
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, 1].tolist() == [128, 0, 0]      # background, aeroplane
    assert rgb[1, 0].tolist() == [192, 128, 128] and rgb[1, 1].tolist() == [224, 224, 192]  # person, ignore
