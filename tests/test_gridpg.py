"""GridPG: selection, seeded grids, cell scores against a hand-made map, and the stage end to end."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

import dywsss.engine.gridpg as gp
from dywsss.data.transforms import val_transform
from dywsss.data.voc import load_image
from dywsss.errors import ConfigError, InputError
from dywsss.explain.cam import CAM
from dywsss.viz.gridpg import plot_gridpg_examples
from test_maps_engine import tiny_cfg

torch.set_num_threads(1)


def slow_mean5(m):
    """5x5 mean with zero padding, by loops."""
    h, w = m.shape
    p = np.pad(m, 2)
    return np.array([[p[y:y + 5, x:x + 5].sum() / 25 for x in range(w)] for y in range(h)])


def test_cell_scores_hand_made_map():
    maps = torch.zeros(4, 8, 8)
    maps[0, 1, 1] = 3.0   # cell 0 (top left)
    maps[0, 6, 6] = 1.0   # cell 3 (bottom right)
    maps[0, 2, 2] = -5.0  # negative: ignored (A+)
    maps[1, 0, 5] = 2.0   # cell 1 (top right): all inside
    maps[2] = 0.0         # no positive mass: skipped
    maps[3, 5, 1] = 1.0   # in cell 2, not cell 3
    s = gp.cell_scores(maps, 2, "none")
    assert s[0] == pytest.approx(0.75) and s[1] == 1.0 and np.isnan(s[2]) and s[3] == 0.0
    rng = np.random.default_rng(0)
    m = rng.normal(0, 1, (9, 12, 12))
    got = gp.cell_scores(torch.from_numpy(m), 3, "mean5")
    for i in range(9):
        a = np.maximum(slow_mean5(m[i]), 0)
        y, x = divmod(i, 3)
        assert got[i] == pytest.approx(a[4 * y:4 * y + 4, 4 * x:4 * x + 4].sum() / a.sum(), rel=1e-9)


def test_assemble_grid_row_major():
    cells = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 2, 3, 3).contiguous()
    g = gp.assemble_grid(cells, 2)
    assert g.shape == (2, 6, 6)
    assert g[0, 0, 0] == 0 and g[0, 0, 5] == 1 and g[1, 5, 0] == 2 and g[1, 5, 5] == 3


def test_confident_images_and_grids():
    labels = np.zeros((6, 20))
    labels[[0, 1, 2, 3, 4], [2, 2, 5, 7, 9]] = 1
    labels[5, [1, 3]] = 1  # two classes: never a candidate
    probs = np.full((6, 20), 0.1)
    probs[0, 2], probs[1, 2], probs[2, 5], probs[3, 7], probs[4, 9] = 0.97, 0.94, 0.99, 0.99, 0.99
    probs[3, 11] = 0.6  # predicts a second class: not correct
    probs[5, [1, 3]] = 0.99
    found = gp.confident_images(probs, labels, 0.95, 0.5, 100, np.random.default_rng(0))
    assert found == {2: [0], 5: [2], 9: [4]}
    with pytest.raises(InputError, match="needs confident single-class images of 4 classes, but only 3"):
        gp.build_grids(found, 5, 2, np.random.default_rng(0))
    cands = {c: [10 * c, 10 * c + 1] for c in range(6)}
    g1 = gp.build_grids(cands, 20, 2, np.random.default_rng(3))
    assert g1 == gp.build_grids(cands, 20, 2, np.random.default_rng(3))  # seeded
    for g in g1:
        cls = [c for c, _ in g]
        assert len(set(cls)) == 4 and all(i in cands[c] for c, i in g)
    capped = gp.confident_images(np.tile(probs[:1], (5, 1)), np.tile(labels[:1], (5, 1)), 0.95, 0.5, 2,
                                 np.random.default_rng(0))
    assert len(capped[2]) == 2


def test_settings_are_checked(tmp_path):
    cfg = tiny_cfg(tmp_path)
    assert gp.GridPGSettings.from_cfg(cfg).grid == 2
    with pytest.raises(ConfigError, match="gridpg_grid=4: expected one of"):
        gp.GridPGSettings.from_cfg(cfg, grid=4)
    with pytest.raises(ConfigError, match="gridpg_smooth='gauss'"):
        gp.GridPGSettings.from_cfg(cfg, smooth="gauss")


def test_gridpg_stage_end_to_end(demo_voc, tmp_path, monkeypatch):
    lst = tmp_path / "all.txt"
    lst.write_text((demo_voc / "train_aug.txt").read_text() + (demo_voc / "val.txt").read_text())
    cfg = tiny_cfg(demo_voc, work_dir_root=str(tmp_path / "work_dirs"), eval_list=str(lst), session_name="g",
                   cam_method="cam", crop_size=32)
    labels = json.loads((demo_voc / "cls_labels.json").read_text())

    def oracle(model, inputs, device, batch_size=32, head=None):  # a perfect, confident classifier on the candidates
        names = [n for n in lst.read_text().split() if len(labels[n]) == 1]
        p = np.full((len(names), 20), 0.01)
        for i, n in enumerate(names):
            p[i, labels[n][0]] = 0.99
        assert len(inputs) == len(names)
        return p

    monkeypatch.setattr(gp, "input_probs", oracle)
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=20).eval()
    settings = gp.GridPGSettings(grid=2, n_grids=6, smooth="none", seed=1, batch_size=4, n_examples=2)
    res = gp.run_gridpg(cfg, model=model, settings=settings, progress=False)
    out = res.json_path
    s = json.loads(out.read_text())
    table = pd.read_csv(out.with_name("gridpg.csv"))
    assert len(table) == 24 and s["n_grids"] == 6 and s["n_cells"] == 24
    assert s["gridpg"] == pytest.approx(table["score"].mean())
    assert s["settings"]["grid_side"] == 64 and s["settings"]["method"] == "cam"
    assert s["provenance"]["weights"]["sha256"] is None  # the model was passed in, no weights file
    assert len(s["provenance"]["list"]["sha256"]) == 64
    assert len(res.examples) == 2 and res.examples[0][0].shape == (64, 64, 3)
    png = plot_gridpg_examples(res.examples, 2, res.figure_path)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 300

    # recompute grid 1 independently: inputs, CAM of all classes, bilinear upsampling, cell masses
    g = table[table["grid"] == 1].sort_values("cell")
    tf = val_transform(32)
    cells = [tf(load_image(demo_voc / "VOC2012/JPEGImages" / f"{n}.jpg")) for n in g["name_image"]]
    grid = torch.cat([torch.cat(cells[0:2], 2), torch.cat(cells[2:4], 2)], 1)[None]
    with torch.no_grad():
        cam = CAM(model).all_class_maps(grid)[0]
    for cell, (c, score) in enumerate(zip(g["class_id"], g["score"])):
        a = F.interpolate(cam[c][None, None], size=(64, 64), mode="bilinear", align_corners=False)[0, 0]
        a = a.clamp(min=0).double().numpy()
        y, x = divmod(cell, 2)
        want = a[32 * y:32 * y + 32, 32 * x:32 * x + 32].sum() / a.sum() if a.sum() > 0 else np.nan
        np.testing.assert_allclose(score, want, rtol=1e-5)
    assert len(set(g["class_id"])) == 4
