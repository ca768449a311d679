"""JI curve, masks and per-image JI: hand-worked cases and a plain re-implementation of the original."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from dywsss.mapfile import save_legacy_npy, save_maps
from dywsss.metrics.segmentation import (
    confusion_from_histogram, confusion_matrix, dataset_ji_curve, default_thresholds, image_confusions, image_ji,
    image_threshold_histogram, iou_from_confusion, maps_to_mask, per_image_ji_from_confusions,
)


# ------------------------------------------------------------ plain versions
def original_mask(classes, cams, t):
    """The original: a float32 [21, H, W] tensor, zeros, maps at c + 1, t at 0, np.argmax."""
    h, w = cams.shape[1:] if len(classes) else (cams.shape[1], cams.shape[2])
    tensor = np.zeros((21, h, w), np.float32)
    for c, m in zip(classes, cams):
        tensor[c + 1] = m
    tensor[0] = t
    return np.argmax(tensor, axis=0)


def original_counts(gt, pred):
    """Per-class T, P, TP with loops over classes, ignoring 255 (as the original)."""
    cal = gt < 255
    mask = (pred == gt) * cal
    T = np.array([np.sum((gt == i) * cal) for i in range(21)])
    P = np.array([np.sum((pred == i) * cal) for i in range(21)])
    TP = np.array([np.sum((gt == i) * mask) for i in range(21)])
    return T, P, TP


def original_curve(images, thresholds):
    miou = []
    for t in thresholds:
        T = P = TP = 0
        for gt, classes, cams in images:
            t_, p_, tp_ = original_counts(gt, original_mask(classes, cams, t))
            T, P, TP = T + t_, P + p_, TP + tp_
        miou.append(np.mean(TP / (T + P - TP + 1e-10)))
    return np.array(miou)


def random_images(rng, n=12, h=9, w=11):
    """Maps on a 0.01 grid (ties with thresholds and between classes), 255 pixels,
    an image without maps, one with only background, unsorted class order."""
    images = []
    for i in range(n):
        k = [0, 1, 2, 3][i % 4]
        classes = rng.choice(20, size=k, replace=False)  # not sorted
        cams = (rng.integers(0, 61, size=(k, h, w)) / 100).astype(np.float32)
        if k >= 2:
            cams[1, :3] = cams[0, :3]  # equal class scores
        gt = rng.choice(np.r_[0, classes + 1], size=(h, w)).astype(np.uint8) if k else np.zeros((h, w), np.uint8)
        gt[rng.random((h, w)) < 0.1] = 255
        if i == 5:
            gt[:] = 0  # only background
        images.append((gt, classes, cams))
    return images


# -------------------------------------------------------------- mask rule
def test_mask_tie_rules_hand_worked():
    classes = np.array([7, 2])  # deliberately unsorted
    cams = np.array([[[0.3, 0.1, 0.5, 0.2]], [[0.3, 0.2, 0.4, 0.1]]], np.float32)
    # pixel 0: both 0.3 -> lower class id 2 -> mask 3; pixel 1: best 0.2 (class 2) == t -> background;
    # pixel 2: class 7 (0.5) -> 8; pixel 3: best 0.2 (class 7) == t -> background
    assert maps_to_mask(classes, cams, 0.2).tolist() == [[3, 0, 8, 0]]
    assert maps_to_mask(classes, cams, 0.19).tolist() == [[3, 3, 8, 8]]
    assert maps_to_mask(np.zeros(0, int), np.zeros((0, 1, 4)), 0.0, shape=(1, 4)).tolist() == [[0, 0, 0, 0]]


def test_mask_equals_original_argmax_on_grid():
    rng = np.random.default_rng(0)
    for gt, classes, cams in random_images(rng):
        if len(classes) == 0:
            continue
        for t in default_thresholds()[::7]:
            np.testing.assert_array_equal(maps_to_mask(classes, cams, t), original_mask(classes, cams, t))


def test_negative_threshold_rejected():
    with pytest.raises(ValueError, match=">= 0"):
        maps_to_mask(np.array([1]), np.zeros((1, 2, 2), np.float32), -0.1)


# ------------------------------------------------------------ confusion / IoU
def test_confusion_and_iou_hand_worked():
    gt = np.array([[0, 0, 1], [1, 255, 2]], np.uint8)
    pred = np.array([[0, 1, 1], [0, 2, 2]], np.uint8)
    conf = confusion_matrix(gt, pred)
    assert conf.sum() == 5  # the 255 pixel is ignored
    assert conf[0, 0] == 1 and conf[0, 1] == 1 and conf[1, 1] == 1 and conf[1, 0] == 1 and conf[2, 2] == 1
    iou = iou_from_confusion(conf)
    # bg: TP 1, T 2, P 2 -> 1/3; class 1: TP 1, T 2, P 2 -> 1/3; class 2: 1/1; others: empty union -> 0
    np.testing.assert_allclose(iou[:3], [1 / 3, 1 / 3, 1.0])
    assert (iou[3:] == 0).all()
    assert image_ji(conf, "reference") == pytest.approx((1 / 3 + 1 / 3 + 1) / 3)
    assert image_ji(conf, "paper") == pytest.approx((1 / 3 + 1 / 3 + 1) / 3)


def test_ji_definitions_differ_on_missed_class():
    # class 1 present in the ground truth but never predicted: reference drops it, paper counts 0
    gt = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 0, 0, 2, 2])
    conf = confusion_matrix(gt, pred)
    assert image_ji(conf, "reference") == pytest.approx((0.5 + 1.0) / 2)
    assert image_ji(conf, "paper") == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    # a falsely predicted class (3) counts 0 under paper, nothing under reference
    conf2 = confusion_matrix(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 3]))
    assert image_ji(conf2, "reference") == pytest.approx(0.75)
    assert image_ji(conf2, "paper") == pytest.approx(0.75 / 2)


def test_image_ji_matches_plain_loops_on_random_confusions():
    rng = np.random.default_rng(1)
    conf = rng.integers(0, 3, size=(40, 21, 21)) * (rng.random((40, 21, 21)) < 0.05)
    for definition in ("reference", "paper"):
        got = image_ji(conf, definition)
        for i in range(40):
            ious, keep = [], []
            for c in range(21):
                tp, t, p = conf[i, c, c], conf[i, c].sum(), conf[i, :, c].sum()
                iou = tp / (t + p - tp + 1e-10)
                ious.append(iou)
                keep.append(iou != 0 if definition == "reference" else (t + p) > 0)
            sel = np.array(ious)[np.array(keep)]
            want = np.nan if conf[i].sum() == 0 else (sel.mean() if sel.size else 0.0)
            np.testing.assert_allclose(got[i], want, rtol=1e-9, equal_nan=True)


def test_image_without_valid_pixels_is_nan_with_warning():
    conf = np.zeros((2, 21, 21), np.int64)
    conf[1, 0, 0] = 4
    with pytest.warns(UserWarning, match="no valid .*JI is NaN.*'a'"):
        ref, paper = per_image_ji_from_confusions(conf, ["a", "b"])
    assert np.isnan(ref[0]) and np.isnan(paper[0]) and ref[1] == 1.0 and paper[1] == 1.0


# ----------------------------------------------------- one-pass curve = original
def test_one_pass_curve_equals_per_threshold_original_with_ties():
    rng = np.random.default_rng(2)
    images = random_images(rng)
    thr = default_thresholds()
    hist = sum(image_threshold_histogram(gt, c, m, thr) for gt, c, m in images)
    conf = confusion_from_histogram(hist)
    for k in (0, 1, 10, 30, 59):  # full confusion at a few thresholds
        want = sum(confusion_matrix(gt, original_mask(c, m, thr[k])) for gt, c, m in images)
        np.testing.assert_array_equal(conf[k], want)
    miou = iou_from_confusion(conf).mean(-1)
    np.testing.assert_allclose(miou, original_curve(images, thr), rtol=1e-9, atol=1e-12)


def test_one_pass_curve_arbitrary_thresholds():
    rng = np.random.default_rng(3)
    images = random_images(rng, n=6)
    thr = np.array([0.0, 0.05, 0.1, 0.333, 0.5])
    hist = sum(image_threshold_histogram(gt, c, m, thr) for gt, c, m in images)
    np.testing.assert_allclose(iou_from_confusion(confusion_from_histogram(hist)).mean(-1),
                               original_curve(images, thr), rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------- files
def _write_set(tmp_path, images, legacy=False):
    (tmp_path / "maps").mkdir()
    (tmp_path / "gt").mkdir()
    names = []
    for i, (gt, classes, cams) in enumerate(images):
        name = f"img_{i:03d}"
        names.append(name)
        Image.fromarray(gt, mode="L").save(tmp_path / "gt" / f"{name}.png")
        if legacy:
            save_legacy_npy(tmp_path / "maps" / f"{name}.npy", classes, cams)
        else:
            save_maps(tmp_path / "maps" / f"{name}.npz", classes, cams.reshape(len(classes), *gt.shape),
                      dtype="float32")
    return names


def test_dataset_curve_from_files_matches_original(tmp_path):
    rng = np.random.default_rng(4)
    images = [im for im in random_images(rng, n=8)]
    names = _write_set(tmp_path, images)
    curve = dataset_ji_curve(names, tmp_path / "maps", tmp_path / "gt", progress=False)
    want = original_curve(images, default_thresholds())
    np.testing.assert_allclose(curve.miou, want, rtol=1e-9, atol=1e-12)
    assert curve.best_threshold == default_thresholds()[int(np.argmax(want))]
    assert curve.best_miou == pytest.approx(want.max())
    s = curve.summary()
    assert set(s) >= {"thresholds", "miou", "best_threshold", "best_miou", "per_class_iou"}
    assert len(s["per_class_iou"]) == 21


def test_legacy_npy_needs_allow_pickle(tmp_path):
    rng = np.random.default_rng(5)
    images = [im for im in random_images(rng, n=4) if len(im[1])]
    names = _write_set(tmp_path, images, legacy=True)
    with pytest.raises(ValueError, match="allow-pickle"):
        dataset_ji_curve(names, tmp_path / "maps", tmp_path / "gt", input_type="npy", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        curve = dataset_ji_curve(names, tmp_path / "maps", tmp_path / "gt", input_type="npy", allow_pickle=True,
                                 progress=False)
    np.testing.assert_allclose(curve.miou, original_curve(images, default_thresholds()), rtol=1e-9, atol=1e-12)


def test_png_predictions_single_point(tmp_path):
    rng = np.random.default_rng(6)
    images = random_images(rng, n=5)
    names = _write_set(tmp_path, images)
    preds = [original_mask(c, m, 0.2).astype(np.uint8) if len(c) else np.zeros(g.shape, np.uint8)
             for g, c, m in images]
    for name, pred in zip(names, preds):
        Image.fromarray(pred, mode="L").save(tmp_path / "maps" / f"{name}.png")
    curve = dataset_ji_curve(names, tmp_path / "maps", tmp_path / "gt", input_type="png", progress=False)
    assert curve.thresholds.size == 0 and curve.best_threshold is None
    np.testing.assert_allclose(curve.best_miou, original_curve(images, [0.2])[0], rtol=1e-9)


def test_missing_map_file_is_named(tmp_path):
    rng = np.random.default_rng(7)
    names = _write_set(tmp_path, random_images(rng, n=3))
    (tmp_path / "maps" / f"{names[1]}.npz").unlink()
    with pytest.raises(FileNotFoundError, match=f"1 of 3 .*{names[1]}.npz"):
        dataset_ji_curve(names, tmp_path / "maps", tmp_path / "gt", progress=False)
    with pytest.raises(FileNotFoundError, match=f"{names[1]}.npz"):
        image_confusions(tmp_path / "maps", names, tmp_path / "gt", progress=False)


def test_shape_mismatch_is_named(tmp_path):
    (tmp_path / "maps").mkdir()
    (tmp_path / "gt").mkdir()
    Image.fromarray(np.zeros((4, 5), np.uint8), mode="L").save(tmp_path / "gt" / "a.png")
    save_maps(tmp_path / "maps" / "a.npz", np.array([3]), np.zeros((1, 5, 4)))
    with pytest.raises(ValueError, match=r"a\.npz: maps are 4x5 but the mask .*a\.png is 5x4"):
        dataset_ji_curve(["a"], tmp_path / "maps", tmp_path / "gt", progress=False)


@pytest.mark.parametrize("cams, classes, match", [
    (np.full((1, 2, 2), np.nan), [3], "NaN"),
    (np.full((1, 2, 2), 1.5), [3], r"outside \[0, 1\]"),
    (np.zeros((1, 2, 2)), [20], "class indices"),
])
def test_bad_map_values_are_named(tmp_path, cams, classes, match):
    (tmp_path / "maps").mkdir()
    (tmp_path / "gt").mkdir()
    Image.fromarray(np.zeros((2, 2), np.uint8), mode="L").save(tmp_path / "gt" / "a.png")
    np.savez(tmp_path / "maps" / "a.npz", classes=np.array(classes), cams=cams.astype(np.float32))
    with pytest.raises(ValueError, match=f"a.npz.*{match}"):
        dataset_ji_curve(["a"], tmp_path / "maps", tmp_path / "gt", progress=False)


def test_thresholds_checked():
    with pytest.raises(ValueError, match="increasing"):
        dataset_ji_curve([], ".", ".", thresholds=[0.2, 0.1], progress=False)


def test_count_below_equals_searchsorted():
    from dywsss.metrics.segmentation import count_below

    rng = np.random.default_rng(8)
    s = np.r_[rng.integers(-2, 110, 2000) / 100, rng.random(2000), [-1e-5, 0.0, 0.59, 0.6, 1.0]].astype(np.float32)
    for thr in (default_thresholds(), np.arange(5, 40) / 50.0, np.array([0.0, 0.05, 0.5]), np.array([0.3])):
        thr32 = thr.astype(np.float32)
        np.testing.assert_array_equal(count_below(thr32, s), np.searchsorted(thr32, s, side="left"))


def test_many_maps_with_ties_follow_argmax():
    rng = np.random.default_rng(9)
    classes = rng.permutation(20)[:7]
    cams = (rng.integers(0, 4, (7, 5, 6)) / 4).astype(np.float32)
    for t in (0.0, 0.25, 0.5):
        np.testing.assert_array_equal(maps_to_mask(classes, cams, t), original_mask(classes, cams, t))
