"""The HTML report: gallery selection, panels, errors, and the page as headless Chromium renders it."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dywsss.data.voc import VOC_PALETTE
from dywsss.report.html import render_panels, select_gallery, vice_contributions, write_report
from dywsss.report.summary import RunNotFinished, load_run
from dywsss.errors import MissingInputError
from report_fixtures import make_data, make_run

NAMES = [f"im{i:02d}" for i in range(16)]
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    voc, gt = make_data(tmp / "data", NAMES)
    return make_run(tmp / "work_dirs", "run_a", voc, gt, NAMES, seed=3)


# ------------------------------------------------------------------ pieces
def test_vice_terms_average_to_the_pearson_correlation():
    rng = np.random.default_rng(0)
    loss, ji = rng.uniform(0, 1, 50), rng.uniform(0, 1, 50)
    assert vice_contributions(loss, ji).mean() == pytest.approx(np.corrcoef(-loss, ji)[0, 1], abs=1e-12)
    assert not vice_contributions(loss, np.full(50, 0.3)).any()


def test_gallery_picks_the_discordant_images():
    # mean loss 0.5, mean JI 0.5: "a","b" low loss + poor map; "e" high loss + good map; the rest concordant
    df = pd.DataFrame(dict(name_image=list("abcdef"), loss=[0.1, 0.3, 0.2, 0.9, 0.8, 0.7],
                           miou=[0.1, 0.4, 0.9, 0.05, 0.9, 0.64]))
    df["miou"] += 0.5 - df["miou"].mean()
    g = select_gallery(df, k=4)
    assert list(g["low_loss_poor_map"].name_image) == ["a", "b"]  # a lies further from both means
    assert list(g["high_loss_good_map"].name_image) == ["e", "f"]
    assert (g["low_loss_poor_map"].contribution < 0).all()
    assert list(select_gallery(df, k=1)["low_loss_poor_map"].name_image) == ["a"]


def test_panels_show_the_thresholded_maps_and_ground_truth():
    img = np.full((4, 6, 3), 100, np.uint8)
    cams = np.zeros((1, 4, 6), np.float32)
    cams[0, :, 3:] = 0.9  # right half above the threshold
    cams[0, :, :3] = 0.05
    mask = np.zeros((4, 6), np.uint8)
    mask[:2] = 8  # class 7 (cat) in the top rows
    mask[3, 0] = 255
    panels = dict(render_panels(img, np.array([7]), cams, mask, thresh=0.1, side=100))
    pal = np.asarray(VOC_PALETTE).reshape(256, 3)
    blend = np.round(0.4 * 100 + 0.6 * pal[8]).astype(np.uint8)
    pred = panels["maps &gt; 0.1"]
    assert (pred[:, 3:] == blend).all() and (pred[:, :3] == 100).all()
    gt = panels["ground truth"]
    assert (gt[:2] == blend).all() and (gt[2] == 100).all() and (gt[3, 0] == 255).all()
    assert (panels["image"] == img).all()
    assert not (panels["maps (max over classes)"][:, 0] == panels["maps (max over classes)"][:, 5]).all()


def test_missing_summary_is_named(run, tmp_path):
    broken = tmp_path / "run_b"
    shutil.copytree(run, broken)
    (broken / "eval" / "val_best" / "vice.json").unlink()
    with pytest.raises(RunNotFinished, match=r"vice\.json: not found \(written by compute_VICE\.py\)"):
        load_run(broken)
    (broken / "eval" / "val_best" / "vice.json").write_text(json.dumps({"vice": 0.2}))
    with pytest.raises(ValueError, match=r"vice\.json: missing key\(s\) n, ci_low"):
        load_run(broken)
    with pytest.raises(RunNotFinished, match="no evaluation for list 'train' and weights 'best'"):
        load_run(run, "train", "best")


def test_cli_writes_the_report(run, tmp_path, capsys):
    sys.path.insert(0, str(Path("scripts").resolve()))
    import make_report

    out = tmp_path / "r.html"
    assert make_report.main([str(run), "--list", "val", "--weights", "best", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out and out.read_text().startswith("<!DOCTYPE html>")
    assert not list(tmp_path.glob(".*tmp*"))  # written through a temporary name
    with pytest.raises(MissingInputError, match="nothing: run directory not found"):
        make_report.main([str(tmp_path / "nothing")])


# ------------------------------------------------------------------ in the browser
CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  for (const im of document.images) {
    im.setAttribute('data-loaded', im.complete && im.naturalWidth > 0 ? '1' : '0');
  }
  document.body.setAttribute('data-checked', String(document.images.length));
});
</script>"""


class _Collect(HTMLParser):
    """data-key elements (attributes and text) and img attributes of a DOM dump."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[str, list[tuple[dict, str]]] = {}
        self.imgs: list[dict] = []
        self.body: dict = {}
        self._open: list[tuple[str, dict, list[str]]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        if tag == "body":
            self.body = a
        if "data-key" in a:
            self._open.append((tag, a, []))

    def handle_data(self, data):
        for _, _, text in self._open:
            text.append(data)

    def handle_endtag(self, tag):
        if self._open and self._open[-1][0] == tag:
            _, a, text = self._open.pop()
            self.keys.setdefault(a["data-key"], []).append((a, "".join(text)))


def _render(page: Path, tmp: Path) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium); browser test skipped")
def test_report_renders_offline_with_the_json_numbers(run, tmp_path):
    report = write_report(run)
    assert report == run / "report.html"
    page = report.read_text()
    # self-contained: every src/href is an embedded data URI or an in-page anchor
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(r.startswith(("data:image/png;base64,", "#")) for r in refs)
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"))
    dom = _Collect()
    dom.feed(_render(probe, tmp_path))

    assert dom.body.get("data-checked") == str(len(dom.imgs))
    assert len(dom.imgs) >= 4 + 4  # 3 stage figures + JI curve, and at least one gallery sample
    assert all(im.get("data-loaded") == "1" for im in dom.imgs), [im.get("alt") for im in dom.imgs
                                                                   if im.get("data-loaded") != "1"]

    ev = run / "eval" / "val_best"
    ece, vice, ji = (json.loads((ev / f).read_text()) for f in ("ece.json", "vice.json", "ji_curve.json"))
    expected = {  # key: (stored value, text shown)
        "map": (ece["mAP"], f"{100 * ece['mAP']:.2f}"),
        "acc_ml": (ece["acc_ml"], f"{100 * ece['acc_ml']:.2f}"),
        "ece_ml": (ece["ece_ml"], f"{100 * ece['ece_ml']:.2f}"),
        "vice": (vice["vice"], f"{vice['vice']:.3f}"),
        "vice_ci_low": (vice["ci_low"], f"{vice['ci_low']:.3f}"),
        "vice_ci_high": (vice["ci_high"], f"{vice['ci_high']:.3f}"),
        "n": (vice["n"], str(vice["n"])),
        "spearman": (vice["spearman"], f"{vice['spearman']:.3f}"),
        "best_threshold": (ji["best_threshold"], f"{ji['best_threshold']:.2f}"),
        "best_miou": (ji["best_miou"], f"{100 * ji['best_miou']:.2f}"),
    }
    for key, (value, text) in expected.items():
        (attrs, shown), = dom.keys[key]
        assert float(attrs["data-value"]) == value, key
        assert shown.strip() == text, key
    assert dom.keys["ji_definition"][0][1] == vice["ji_definition"]
    assert dom.keys["cfg.network"][0][1] == "resnet18"
    assert dom.keys["cfg.ji_definition"][0][1] == "reference"

    # gallery losses and JIs are the per-sample CSV's
    csv = pd.read_csv(ev / "per_sample.csv").set_index("name_image")
    samples = re.findall(r'data-name="([^"]+)"', page)
    assert samples and len(samples) == len(dom.keys["loss"])
    for name, (_, loss), (_, j) in zip(samples, dom.keys["loss"], dom.keys["ji"]):
        assert float(loss) == pytest.approx(csv.loc[name, "loss"], abs=5e-5)
        assert float(j) == pytest.approx(csv.loc[name, "miou"], abs=5e-4)


def test_report_compares_the_maps_with_the_centred_blob_baseline(tmp_path):
    voc, gt = make_data(tmp_path / "data", NAMES)
    root = make_run(tmp_path / "work_dirs", "run_b", voc, gt, NAMES, seed=5)
    ev = root / "eval" / "val_best"
    ji = json.loads((ev / "ji_curve.json").read_text())
    assert 'data-key="blob_best_miou"' not in write_report(root).read_text()  # optional: absent -> no row

    blob = dict(ji, best_miou=ji["best_miou"] - 0.1234, best_threshold=0.3)
    (ev / "ji_curve_blob.json").write_text(json.dumps(blob))
    dom = _Collect()
    dom.feed(write_report(root).read_text())
    (attrs, text), = dom.keys["blob_best_miou"]
    assert float(attrs["data-value"]) == pytest.approx(blob["best_miou"])
    assert text.strip() == f"{100 * blob['best_miou']:.2f}%"
    assert "beat it by +12.34 points" in write_report(root).read_text()
