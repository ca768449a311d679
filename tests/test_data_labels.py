"""Image-level labels from VOC XML annotations and from masks; scripts/make_cls_labels.py."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dywsss.data.labels import (
    build_cls_labels,
    class_counts,
    labels_from_mask,
    labels_from_xml,
    write_cls_labels,
)
from dywsss.data.voc import VOC_PALETTE, load_cls_labels

ROOT = Path(__file__).resolve().parents[1]

# A VOC-style annotation: a person with layout parts (head/hand are not classes) and a dog.
XML = """<annotation>
  <folder>VOC2012</folder><filename>{name}.jpg</filename>
  <object><name>person</name><part><name>head</name></part><part><name>hand</name></part>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>
  <object><name> dog </name></object>
  <object><name>person</name></object>
</annotation>
"""


def _write_mask(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(values.astype(np.uint8))
    im.putpalette(VOC_PALETTE)
    im.save(path)


def test_labels_from_xml(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(XML.format(name="a"))
    assert labels_from_xml(path) == [11, 14]  # dog, person; parts ignored, duplicates merged
    empty = tmp_path / "empty.xml"
    empty.write_text("<annotation><filename>x.jpg</filename></annotation>")
    assert labels_from_xml(empty) == []


def test_labels_from_xml_errors(tmp_path):
    unknown = tmp_path / "u.xml"
    unknown.write_text("<annotation><object><name>unicorn</name></object></annotation>")
    with pytest.raises(ValueError, match=r"u\.xml: unknown object class 'unicorn'"):
        labels_from_xml(unknown)
    broken = tmp_path / "b.xml"
    broken.write_text("<annotation><object>")
    with pytest.raises(ValueError, match=r"b\.xml: unreadable XML annotation"):
        labels_from_xml(broken)
    with pytest.raises(FileNotFoundError, match=r"none\.xml: annotation not found"):
        labels_from_xml(tmp_path / "none.xml")


def test_labels_from_mask():
    mask = np.array([[0, 0, 255], [1, 15, 15], [20, 255, 0]], np.uint8)
    assert labels_from_mask(mask) == [0, 14, 19]
    assert labels_from_mask(np.zeros((2, 2), np.uint8)) == []
    assert labels_from_mask(np.full((2, 2), 255, np.uint8)) == []


def _voc_tree(tmp_path: Path, with_xml: bool) -> Path:
    """Two images; the XML of 'a' names a dog that its mask lacks (as for 817 VOC images)."""
    voc = tmp_path / "VOC2012"
    _write_mask(voc / "SegmentationClassAug" / "a.png", np.array([[0, 15], [255, 15]]))
    _write_mask(voc / "SegmentationClassAug" / "b.png", np.array([[3, 3], [0, 8]]))
    # 'c' only has an official mask: the builder falls back to SegmentationClass
    _write_mask(voc / "SegmentationClass" / "c.png", np.array([[20, 0], [0, 0]]))
    _write_mask(voc / "SegmentationClass" / "b.png", np.array([[1, 1], [0, 0]]))  # Aug wins for b
    if with_xml:
        (voc / "Annotations").mkdir()
        (voc / "Annotations" / "a.xml").write_text(XML.format(name="a"))
        (voc / "Annotations" / "b.xml").write_text(
            "<annotation><object><name>boat</name></object><object><name>bird</name></object></annotation>")
    return voc


def test_build_from_xml_and_from_masks(tmp_path):
    voc = _voc_tree(tmp_path, with_xml=True)
    assert build_cls_labels(voc, progress=False) == {"a": [11, 14], "b": [2, 3]}
    assert build_cls_labels(voc, ["b"], progress=False) == {"b": [2, 3]}
    from_masks = build_cls_labels(voc, prefer="mask", progress=False)
    assert from_masks == {"a": [14], "b": [2, 7], "c": [19]}
    with pytest.raises(FileNotFoundError, match=r"Annotations/c\.xml: annotation not found"):
        build_cls_labels(voc, ["a", "c"], progress=False)


def test_build_without_xml_uses_masks(tmp_path):
    voc = _voc_tree(tmp_path, with_xml=False)
    assert build_cls_labels(voc, progress=False) == {"a": [14], "b": [2, 7], "c": [19]}
    with pytest.raises(FileNotFoundError, match=r"no mask for 'zz' in SegmentationClassAug or SegmentationClass"):
        build_cls_labels(voc, ["a", "zz"], progress=False)
    _write_mask(voc / "SegmentationClassAug" / "bad.png", np.array([[0, 42]]))
    with pytest.raises(ValueError, match=r"bad\.png: mask values \[42\]"):
        build_cls_labels(voc, ["bad"], progress=False)


def test_build_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"VOC2012 folder not found"):
        build_cls_labels(tmp_path / "missing", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: no images to label"):
        build_cls_labels(tmp_path / "empty", progress=False)
    with pytest.raises(ValueError, match="prefer must be"):
        build_cls_labels(tmp_path / "empty", prefer="json")


def test_write_and_read_back(tmp_path):
    path = tmp_path / "out" / "cls_labels.json"
    write_cls_labels(path, {"a": [0, 14], "b": np.array([19])})
    assert json.loads(path.read_text()) == {"a": [0, 14], "b": [19]}
    back = load_cls_labels(path)
    assert np.nonzero(back["a"])[0].tolist() == [0, 14] and np.nonzero(back["b"])[0].tolist() == [19]
    assert [p.name for p in path.parent.iterdir()] == ["cls_labels.json"]  # no temporary left
    with pytest.raises(ValueError, match=r"cls_labels\.json: image 'x' has class ids \[20\]"):
        write_cls_labels(path, {"x": [20]})
    np.testing.assert_array_equal(class_counts({"a": [0, 14], "b": [14]}), np.eye(20, dtype=int)[[0, 14, 14]].sum(0))


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_cls_labels_script(tmp_path, capsys):
    voc = _voc_tree(tmp_path, with_xml=True)
    script = _script("make_cls_labels")
    script.main(["--voc-root", str(voc)])
    out = tmp_path / "cls_labels.json"  # default: beside VOC2012/
    assert json.loads(out.read_text()) == {"a": [11, 14], "b": [2, 3]}
    printed = capsys.readouterr().out
    assert "2 images labelled" in printed and str(out) in printed
    lst = tmp_path / "list.txt"
    lst.write_text("c\nb\n")
    script.main(["--voc-root", str(voc), "--out", str(tmp_path / "m.json"), "--prefer", "mask", "--lists", str(lst)])
    assert json.loads((tmp_path / "m.json").read_text()) == {"c": [19], "b": [2, 7]}


def test_script_rebuilds_demo_labels(demo_voc, tmp_path):
    """Labels rebuilt from the demo's XML and from its masks both equal the shipped cls_labels.json."""
    shipped = json.loads((demo_voc / "cls_labels.json").read_text())
    assert build_cls_labels(demo_voc / "VOC2012", progress=False) == shipped
    assert build_cls_labels(demo_voc / "VOC2012", prefer="mask", progress=False) == shipped
