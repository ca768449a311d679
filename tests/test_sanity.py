"""Sanity checks: cascade groups, seeded re-initialisation, similarity, verdicts, the stage end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from scipy import stats
from skimage.metrics import structural_similarity

from dywsss.config import session_paths
from dywsss.data.voc import CLASS_NAMES
from dywsss.engine.maps import generate_maps
from dywsss.engine.sanity import (
    SanitySettings, cascade_groups, map_similarity, reinitialize, run_sanity_checks, verdicts,
)
from dywsss.errors import ConfigError
from dywsss.metrics.per_sample import per_image_ji
from test_maps_engine import tiny_cfg

torch.set_num_threads(1)

MODELS = {
    "resnet18": ({}, ["head", "layer4", "layer3", "layer2", "layer1", "stem"]),
    "efficientnet_lite0": ({}, ["head", "neck"] + [f"blocks.{i}" for i in range(6, -1, -1)] + ["stem"]),
    "vit_tiny_patch16_224": (dict(img_size=32, patch_size=8, depth=3), ["head", "neck", "blocks.2", "blocks.1",
                                                                        "blocks.0", "stem"]),
}


@pytest.mark.parametrize("network", list(MODELS))
def test_cascade_groups_partition_the_parameters(network):
    kwargs, names = MODELS[network]
    model = timm.create_model(network, pretrained=False, num_classes=20, **kwargs)
    groups = cascade_groups(model)
    assert [g.name for g in groups] == names
    ids = [id(p) for g in groups for p in {id(q): q for m in g.modules for q in m.parameters()}.values()]
    ids += [id(p) for g in groups for p in g.params]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))  # each parameter in exactly one group
    assert sum(g.numel() for g in groups) == sum(p.numel() for p in model.parameters())


def test_reinitialize_is_seeded_and_local():
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=20)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(3.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    groups = cascade_groups(model)
    reinitialize(groups[1], seed=5)  # layer4
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("layer4.") for k in changed)
    assert torch.all(model.layer4[0].bn1.running_mean == 0)  # BatchNorm statistics reset
    twin = timm.create_model("resnet18", pretrained=False, num_classes=20)
    twin.load_state_dict(before)
    reinitialize(cascade_groups(twin)[1], seed=5)
    assert all(torch.equal(after[k], twin.state_dict()[k]) for k in after)
    rng_before = torch.random.get_rng_state()
    reinitialize(groups[0], seed=1)
    assert torch.equal(rng_before, torch.random.get_rng_state())  # the global RNG is left alone


def test_map_similarity_matches_scipy_and_skimage():
    rng = np.random.default_rng(0)
    a, b = rng.random((30, 40)), rng.random((30, 40))
    rho, ssim = map_similarity(a, b)
    assert rho == pytest.approx(stats.spearmanr(a.ravel(), b.ravel()).statistic)
    assert ssim == pytest.approx(structural_similarity(a, b, data_range=1.0))
    assert map_similarity(a, a) == (pytest.approx(1.0), pytest.approx(1.0))
    assert np.isnan(map_similarity(a, np.zeros_like(a))[0])


def test_verdicts_hand_made():
    steps = [{"step": "original", "ji": 0.40, "epg": 0.50, "vice": 0.30, "spearman": 1.0},
             {"step": "stem", "ji": 0.38, "epg": 0.20, "vice": 0.25, "spearman": 0.8}]
    v = verdicts(steps, {"epg_true_class": 0.5, "epg_random_class": 0.49}, tolerance=0.1)
    assert v["ji"].startswith("JI barely moves") and "image priors, not the model" in v["ji"]
    assert v["epg"].startswith("EPG changes") and "-60%" in v["epg"]
    assert v["vice"].startswith("VICE barely moves") and "-0.050" in v["vice"]
    assert "reflects the image more than the model" in v["maps"]
    assert "do not depend on the class" in v["random_logit"]
    steps[1]["zero_maps"] = 0.75
    assert verdicts(steps, {}, 0.1)["maps"].startswith("75% of the maps of the fully randomised model are all zero")
    with pytest.raises(ConfigError, match="sanity_n_images=2"):
        SanitySettings.from_cfg(tiny_cfg(Path(".")), n_images=2)


def test_sanity_stage_end_to_end(demo_voc, tmp_path):
    cfg = tiny_cfg(demo_voc, work_dir_root=str(tmp_path / "wd"), eval_list=str(demo_voc / "val.txt"),
                   session_name="san", crop_size=32)
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=20).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    res = run_sanity_checks(cfg, model=model, settings=SanitySettings(n_images=5, seed=2, n_examples=2),
                            progress=False)
    s = json.loads(res.json_path.read_text())
    assert [st["step"] for st in s["steps"]] == ["original", "head", "layer4", "layer3", "layer2", "layer1", "stem"]
    assert s["steps"][0]["spearman"] == pytest.approx(1.0) and s["steps"][0]["ssim"] == pytest.approx(1.0)
    assert all(0 <= st["zero_maps"] <= 1 for st in s["steps"])
    assert s["steps"][-1]["n_params_randomised"] == sum(p.numel() for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # the model itself is untouched
    assert len(res.step_maps) == 7 and len(res.step_maps[0]) == 2
    # the original step's JI is the map stage's: maps written by generate_maps, scored by per_image_ji
    lst = tmp_path / "subset.txt"
    lst.write_text("\n".join(s["names"]) + "\n")
    cfg2 = tiny_cfg(demo_voc, work_dir_root=str(tmp_path / "wd"), infer_list=str(lst), session_name="san")
    out = generate_maps(cfg2, model=model)
    ref, _ = per_image_ji(out, s["names"], cfg.gt_dir, t=float(cfg.eval_thresh), progress=False)
    assert s["steps"][0]["ji"] == pytest.approx(float(np.mean(ref)), rel=1e-6)
    labels = json.loads((demo_voc / "cls_labels.json").read_text())
    ids = {c: i for i, c in enumerate(CLASS_NAMES)}
    for pair in s["random_logit"]["pairs"]:
        assert ids[pair["random_class"]] not in labels[pair["name_image"]]
        assert ids[pair["true_class"]] in labels[pair["name_image"]]
    assert set(s["verdicts"]) == {"ji", "epg", "vice", "maps", "random_logit"}
    assert s["provenance"]["list"]["sha256"] and s["settings"]["method"] == "cam"
    assert res.json_path == session_paths(cfg).eval_dir(cfg.eval_list, cfg.weights) / "sanity.json"
