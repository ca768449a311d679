"""Mask metrics (epg, epg_box, pg, ap_mask, gini) and the one pass over map files (issue 11).

Every metric is checked against hand-worked cases and against a second, slow and
obvious implementation (explicit sorting, scikit-learn, brute-force distances,
ElementTree / scikit-image for boxes and objects).
"""
from __future__ import annotations

import json
import math
import warnings
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from skimage.measure import label as sk_label
from skimage.measure import regionprops
from sklearn.metrics import average_precision_score

from dywsss.data.voc import CLASS_NAMES, load_mask, read_image_list
from dywsss.errors import ConfigError
from dywsss.mapfile import save_maps
from dywsss.metrics.map_eval import evaluate_maps
from dywsss.metrics.map_metrics import (
    DEFAULT_MAP_METRICS, MAP_METRICS, MIN_OBJECT_FRACTION, ClassMap, ImageMasks, check_metric_names,
    column_orientation, metric_columns, prepare_map,
)
from dywsss.metrics.per_sample import per_image_ji


def score(name, gt, a, c, xml_boxes=None, tol=15.0):
    m = ClassMap(ImageMasks(np.asarray(gt, np.uint8), xml_boxes), c, prepare_map(np.asarray(a, np.float32)), tol)
    return MAP_METRICS.get(name).score(m)


# ------------------------------------------------------------------ slow references
def slow_epg(gt, a, region):
    a = a.astype(np.float64)
    valid = gt != 255
    den = a[valid].sum()
    return float("nan") if den == 0 else a[valid & region].sum() / den


def slow_gini(a):
    x = np.sort(a.ravel().astype(np.float64))
    n = x.size
    if x.sum() == 0:
        return float("nan")
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * x) / (n * x.sum()))


def slow_pg(gt, a, c, tol=15.0):
    if not a.any():
        return 0.0
    flat = a.ravel()
    k = next(i for i in range(flat.size) if flat[i] == flat.max())  # first maximum, row-major
    y, x = divmod(k, a.shape[1])
    pts = np.argwhere(gt == c + 1)
    return float(any(math.hypot(py - y, px - x) <= tol for py, px in pts))


def slow_ap(gt, a, c):
    valid = gt != 255
    if not valid.any():
        return float("nan")
    y = (gt[valid] == c + 1).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no positive pixel: scikit-learn warns and returns 0
        return float(average_precision_score(y, a[valid].astype(np.float64)))


# ------------------------------------------------------------------ hand-worked
GT = np.array([[1, 1, 0, 0],
               [1, 255, 0, 2],
               [0, 0, 2, 2]], np.uint8)
A = np.array([[0.5, 0.25, 0.0, 0.0],
              [0.25, 1.0, 0.0, 0.0],
              [0.0, 0.0, 0.0, 0.0]], np.float32)


def test_epg_hand_worked():
    # class 0 (value 1): mass on gt=1 is 0.5+0.25+0.25 = 1.0; valid mass = 1.0 (the 1.0 sits on 255)
    assert score("epg", GT, A, 0) == pytest.approx(1.0)
    assert score("epg", GT, A, 1) == pytest.approx(0.0)
    a = A.copy()
    a[2, 3] = 1.0  # one unit on class 1's pixel: 1 / 2
    assert score("epg", GT, a, 1) == pytest.approx(0.5)
    assert score("epg", GT, a, 0) == pytest.approx(0.5)


def test_epg_box_hand_worked_xml_and_components():
    # components of class 1 (value 2): one 8-connected blob at (1,3),(2,2),(2,3) -> box rows 1..2, cols 2..3
    a = np.zeros((3, 4), np.float32)
    a[1, 2] = 0.5  # inside the box, but gt = 0 there
    a[0, 0] = 0.5
    assert score("epg_box", GT, a, 1) == pytest.approx(0.5)
    assert score("epg", GT, a, 1) == pytest.approx(0.0)
    # XML box of class 1 covering rows 0..0, cols 0..1 (0-based, half open (0, 1, 0, 2))
    assert score("epg_box", GT, a, 1, xml_boxes={1: [(0, 1, 0, 2)]}) == pytest.approx(0.5)
    # 255 pixels inside a box count nowhere: the 1.0 on (1,1) is outside the denominator too
    b = np.zeros((3, 4), np.float32)
    b[1, 1], b[0, 0] = 1.0, 0.25
    assert score("epg_box", GT, b, 0, xml_boxes={0: [(0, 3, 0, 4)]}) == pytest.approx(1.0)
    # XML with only difficult objects of the class -> no box -> NaN (left out)
    assert math.isnan(score("epg_box", GT, b, 0, xml_boxes={1: [(0, 1, 0, 1)]}))


def test_gini_hand_worked():
    assert score("gini", GT, np.array([[0, 0], [0, 1]], np.float32), 0) == pytest.approx(0.75)  # (2*4-5)/4
    assert score("gini", GT, np.full((2, 2), 0.5, np.float32), 0) == pytest.approx(0.0)
    # [1, 2, 3] / 1 (float32 path, not float16-exact after scaling): sum (2i-4) a_i = -2+0+6 = 4; 4 / (3*6)
    v = np.array([[0.1, 0.2, 0.3]], np.float32)
    assert score("gini", GT, v, 0) == pytest.approx(slow_gini(v), rel=1e-12)
    assert slow_gini(v) == pytest.approx(4 / 18, rel=1e-6)


def test_pg_hand_worked_tolerance_and_first_maximum():
    gt = np.zeros((40, 40), np.uint8)
    gt[0, 0] = 3  # class 2 at the corner
    a = np.zeros((40, 40), np.float32)
    a[9, 12] = 1.0  # distance sqrt(81 + 144) = 15: a hit (inclusive)
    assert score("pg", gt, a, 2) == 1.0
    a[9, 12], a[10, 12] = 0.0, 1.0  # sqrt(100 + 144) > 15: a miss
    assert score("pg", gt, a, 2) == 0.0
    assert score("pg", gt, a, 2, tol=15.7) == 1.0
    # ties: the first maximum in row-major order decides
    a = np.zeros((40, 40), np.float32)
    a[1, 1] = a[30, 30] = 1.0
    assert score("pg", gt, a, 2) == 1.0
    a[1, 1], a[30, 5] = 0.0, 1.0  # now (30, 5) comes first and is far away
    assert score("pg", gt, a, 2) == 0.0


def test_ap_hand_worked():
    gt = np.array([[1, 0, 1, 0]], np.uint8)
    a = np.array([[0.8, 0.6, 0.4, 0.2]], np.float32)
    # ranked: pos, neg, pos, neg -> P@1 = 1 (R .5), P@3 = 2/3 (R 1): AP = .5 + .5 * 2/3
    assert score("ap_mask", gt, a, 0) == pytest.approx(0.5 + 1 / 3)
    # a tie between the second positive and a negative: one operating point at R = 1, P = 2/3... with the tie
    a = np.array([[0.8, 0.4, 0.4, 0.2]], np.float32)
    assert score("ap_mask", gt, a, 0) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # a 255 pixel with the highest score is left out
    gt2 = np.array([[255, 1, 0, 1, 0]], np.uint8)
    a2 = np.array([[1.0, 0.8, 0.6, 0.4, 0.2]], np.float32)
    assert score("ap_mask", gt2, a2, 0) == pytest.approx(0.5 + 1 / 3)


# ------------------------------------------------------------------ edge cases
def test_all_zero_map():
    z = np.zeros_like(A)
    assert math.isnan(score("epg", GT, z, 0))
    assert math.isnan(score("epg_box", GT, z, 0))
    assert score("pg", GT, z, 0) == 0.0
    assert math.isnan(score("gini", GT, z, 0))
    # every pixel tied: one operating point, precision = prevalence (scikit-learn's value)
    assert score("ap_mask", GT, z, 0) == pytest.approx(3 / 11)
    assert score("ap_mask", GT, z, 0) == pytest.approx(slow_ap(GT, z, 0))


def test_class_absent_from_mask():
    a = A + 0.125
    assert score("epg", GT, a, 5) == 0.0
    assert score("epg_box", GT, a, 5) == 0.0  # no component, no box
    assert score("pg", GT, a, 5) == 0.0
    assert score("ap_mask", GT, a, 5) == 0.0 == slow_ap(GT, a, 5)
    assert score("gini", GT, a, 5) == pytest.approx(slow_gini(a))


def test_255_everywhere():
    gt = np.full((3, 4), 255, np.uint8)
    assert math.isnan(score("epg", gt, A, 0))
    assert math.isnan(score("epg_box", gt, A, 0))
    assert score("pg", gt, A, 0) == 0.0
    assert math.isnan(score("ap_mask", gt, A, 0))
    assert score("gini", gt, A, 0) == pytest.approx(slow_gini(A))


def test_negative_zero_and_unclamped_values():
    a = np.array([[-0.0, 0.5, -1e-5, 0.25]], np.float32)
    gt = np.array([[1, 1, 0, 0]], np.uint8)
    pos = np.maximum(a, 0)
    assert score("gini", gt, a, 0) == pytest.approx(slow_gini(pos), rel=1e-12)
    assert score("ap_mask", gt, a, 0) == pytest.approx(slow_ap(gt, pos, 0), rel=1e-12)
    assert score("epg", gt, a, 0) == pytest.approx(0.5 / 0.75)


def test_values_below_float16s_smallest_number_keep_their_order():
    # 2**-30 has float16's mantissa width but not its exponent range: it must not share a bin with 0
    a = np.array([[0.0, 2.0 ** -30, 0.5, 2.0 ** -24]], np.float32)
    gt = np.array([[0, 1, 0, 1]], np.uint8)
    assert score("gini", gt, a, 0) == pytest.approx(slow_gini(a), rel=1e-12)
    assert score("ap_mask", gt, a, 0) == pytest.approx(slow_ap(gt, a, 0), rel=1e-12)


# ------------------------------------------------------------------ against the slow versions
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_random_maps_match_slow_implementations(dtype):
    rng = np.random.default_rng(1)
    for trial in range(12):
        h, w = rng.integers(20, 60, 2)
        gt = rng.choice([0, 3, 7, 255], size=(h, w), p=[0.5, 0.25, 0.2, 0.05]).astype(np.uint8)
        a = rng.random((h, w)) ** 3
        a[rng.random((h, w)) < 0.3] = 0
        a = np.round(a * 50) / 50 if trial % 2 else a  # many ties on odd trials
        a = a.astype(dtype).astype(np.float32)
        for c in (2, 6, 11):
            assert score("epg", gt, a, c) == pytest.approx(slow_epg(gt, a, gt == c + 1), rel=1e-9)
            assert score("gini", gt, a, c) == pytest.approx(slow_gini(a), rel=1e-9)
            assert score("pg", gt, a, c, tol=7.5) == slow_pg(gt, a, c, tol=7.5)
            assert score("ap_mask", gt, a, c) == pytest.approx(slow_ap(gt, a, c), rel=1e-9)


# ------------------------------------------------------------------ registry
def test_registry_names_columns_orientation():
    assert set(DEFAULT_MAP_METRICS) <= set(MAP_METRICS.names())
    assert metric_columns(["epg", "deletion"]) == ["epg", "deletion", "deletion_norm"]
    assert column_orientation("deletion_norm") == ("deletion", -1)
    assert column_orientation("insertion") == ("insertion", 1)
    assert column_orientation("miou") == ("miou", 1)
    with pytest.raises(KeyError, match="no registered map metric"):
        column_orientation("loss")
    with pytest.raises(ConfigError, match="map_metrics: unknown map metric 'epgg'.*did you mean epg"):
        check_metric_names(["epgg"])
    with pytest.raises(ConfigError, match="repeated"):
        check_metric_names(["epg", "epg"])


# ------------------------------------------------------------------ the one pass
def slow_boxes(xml_file, c):
    boxes = []
    for obj in ET.parse(xml_file).getroot().iter("object"):
        if obj.findtext("name") == CLASS_NAMES[c] and obj.findtext("difficult") != "1":
            bb = obj.find("bndbox")
            x0, y0, x1, y1 = (int(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append((y0 - 1, y1, x0 - 1, x1))
    return boxes


def region_of(boxes, shape):
    r = np.zeros(shape, bool)
    for y0, y1, x0, x1 in boxes:
        r[y0:y1, x0:x1] = True
    return r


@pytest.fixture(scope="module")
def demo_maps(demo_voc, tmp_path_factory):
    """float16 map files for every val image's labelled classes, plus one class the image does not have."""
    rng = np.random.default_rng(5)
    names = read_image_list(demo_voc / "val.txt")
    labels = json.loads((demo_voc / "cls_labels.json").read_text())
    gt_dir = demo_voc / "VOC2012/SegmentationClassAug"
    out = tmp_path_factory.mktemp("maps")
    truth = {}
    for n in names:
        gt = load_mask(gt_dir, n)
        cls = sorted(labels[n])
        cams = (rng.random((len(cls),) + gt.shape) ** 2).astype(np.float16)
        if len(truth) == 2:
            cams[0] = 0  # an all-zero map
        save_maps(out / f"{n}.npz", np.array(cls), cams)
        truth[n] = (gt, cls, cams.astype(np.float32))
    return names, labels, gt_dir, out, truth


def test_one_pass_matches_slow_per_image_values_and_ji(demo_voc, demo_maps):
    names, labels, gt_dir, map_dir, truth = demo_maps
    extra = {names[0]: [19]} if 19 not in labels[names[0]] else {names[0]: [18]}
    classes = [sorted(set(labels[n]) | set(extra.get(n, []))) for n in names]  # a class without a stored map
    ev = evaluate_maps(names, map_dir, gt_dir, classes, annotations_dir=demo_voc / "VOC2012/Annotations",
                       progress=False)
    cols = ev.columns()
    for i, n in enumerate(names):
        gt, file_cls, cams = truth[n]
        per = {m: [] for m in DEFAULT_MAP_METRICS}
        for c in classes[i]:
            a = cams[file_cls.index(c)] if c in file_cls else np.zeros(gt.shape, np.float32)
            boxes = slow_boxes(demo_voc / "VOC2012/Annotations" / f"{n}.xml", c)
            per["epg"].append(slow_epg(gt, a, gt == c + 1))
            per["epg_box"].append(slow_epg(gt, a, region_of(boxes, gt.shape)) if boxes else float("nan"))
            per["pg"].append(slow_pg(gt, a, c))
            per["ap_mask"].append(slow_ap(gt, a, c))
            per["gini"].append(slow_gini(a))
        for m, vals in per.items():
            vals = np.array(vals)
            expect = vals[np.isfinite(vals)].mean() if np.isfinite(vals).any() else np.nan
            np.testing.assert_allclose(cols[m][i], expect, rtol=1e-9, err_msg=f"{m} of {n}")
        valid = gt != 255
        np.testing.assert_allclose(cols["fg_fraction"][i], ((gt >= 1) & (gt <= 20)).sum() / valid.sum())
        floor = max(1.0, MIN_OBJECT_FRACTION * gt.size)
        objects = sum(sum(r.area >= floor for r in regionprops(sk_label(gt == v, connectivity=2)))
                      for v in range(1, 21))
        assert cols["n_objects"][i] == objects
        assert cols["n_classes"][i] == len([v for v in np.unique(gt) if 1 <= v <= 20])
    ref, paper = per_image_ji(map_dir, names, gt_dir, progress=False)
    np.testing.assert_array_equal(cols["ji_reference"], ref)
    np.testing.assert_array_equal(cols["ji_paper"], paper)
    assert ev.settings["pairs_without_stored_map"] == 1
    assert ev.box_source == ["xml"] * len(names)


def test_summary_dataset_means(demo_maps):
    names, labels, gt_dir, map_dir, _ = demo_maps
    ev = evaluate_maps(names, map_dir, gt_dir, [labels[n] for n in names], metrics=["pg", "epg"], progress=False)
    s = ev.summary()
    assert list(s["metrics"]) == ["pg", "epg"]
    # pg: hits per class, then the mean over classes
    hits = {}
    for i, c, v in zip(ev.pair_image, ev.pair_class, ev.pair_scores["pg"]):
        hits.setdefault(int(c), []).append(v)
    assert s["metrics"]["pg"]["mean"] == pytest.approx(np.mean([np.mean(v) for v in hits.values()]))
    assert s["metrics"]["epg"]["mean"] == pytest.approx(np.nanmean(ev.columns()["epg"]))
    assert s["metrics"]["epg"]["higher_is_better"] is True
    assert set(s["settings"]["inputs_sha256"]) == {"maps", "masks"}
    json.dumps(s)  # JSON-ready
    assert ev.box_source == []  # epg_box not asked: no boxes read


def test_one_pass_without_labels_uses_mask_classes_and_components(demo_maps):
    names, labels, gt_dir, map_dir, truth = demo_maps
    ev = evaluate_maps(names[:4], map_dir, gt_dir, None, metrics=["epg_box"], progress=False)
    assert ev.box_source == ["mask"] * 4
    for i, n in enumerate(names[:4]):
        gt, file_cls, cams = truth[n]
        present = [v - 1 for v in np.unique(gt) if 1 <= v <= 20]
        assert sorted(ev.pair_class[ev.pair_image == i].tolist()) == present
        vals = []
        for c in present:
            a = cams[file_cls.index(c)] if c in file_cls else np.zeros(gt.shape, np.float32)
            boxes = [(r.bbox[0], r.bbox[2], r.bbox[1], r.bbox[3]) for r in regionprops(sk_label(gt == c + 1,
                                                                                              connectivity=2))]
            vals.append(slow_epg(gt, a, region_of(boxes, gt.shape)))
        vals = np.array(vals)
        np.testing.assert_allclose(ev.columns()["epg_box"][i], np.nanmean(vals) if np.isfinite(vals).any()
                                   else np.nan, rtol=1e-9)


def test_one_pass_errors_before_work(demo_maps, tmp_path):
    names, _, gt_dir, map_dir, _ = demo_maps
    with pytest.raises(ConfigError, match="map_metrics: unknown map metric 'gin'"):
        evaluate_maps(names, map_dir, gt_dir, metrics=["gin"], progress=False)
    with pytest.raises(ConfigError, match="pg_tolerance=-1"):
        evaluate_maps(names, map_dir, gt_dir, pg_tolerance=-1, progress=False)
    with pytest.raises(FileNotFoundError, match=r"1 of 1 map files are missing, e\.g\. .*nope\.npz"):
        evaluate_maps(["nope"], map_dir, gt_dir, progress=False)
    # model metrics are skipped by the mask pass
    ev = evaluate_maps(names[:2], map_dir, gt_dir, metrics=["epg", "deletion"], progress=False)
    assert ev.metrics == ["epg"]


def test_map_metrics_json_with_model_columns(demo_maps, tmp_path):
    from dywsss.metrics.map_eval import write_map_metrics_json

    names, labels, gt_dir, map_dir, _ = demo_maps
    ev = evaluate_maps(names, map_dir, gt_dir, [labels[n] for n in names], metrics=["epg"], progress=False)
    deletion = np.linspace(0.1, 0.5, len(names))
    deletion[0] = np.nan
    out = write_map_metrics_json(tmp_path / "map_metrics.json", ev, {"deletion": deletion}, provenance={"x": 1})
    s = json.loads(out.read_text())
    assert s["metrics"]["deletion"]["mean"] == pytest.approx(np.nanmean(deletion))
    assert s["metrics"]["deletion"]["higher_is_better"] is False and s["metrics"]["deletion"]["n_images"] == 11
    assert s["metrics"]["epg"]["mean"] == pytest.approx(np.nanmean(ev.columns()["epg"])) and s["provenance"] == {"x": 1}
