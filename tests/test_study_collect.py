"""Collecting a study from synthetic finished runs (one session per model, as the study makes them):
the consensus pass is rebuilt when ``write_maps`` changes or its ``maps/`` folder is incomplete, and a
``metrics`` column without values is a note, not a silent drop."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from dywsss.io import load_npz
from dywsss.study import load_study
from dywsss.study.collect import _runs, collect_study, consensus_for_method

from report_fixtures import make_run, make_study_inputs

torch.set_num_threads(1)
MODELS = ("m1", "m2", "m3")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three synthetic finished runs in ``work/runs/<model>/`` (the study's sessions) and a base config."""
    tmp = tmp_path_factory.mktemp("collect")
    names, voc, gt, labels, base = make_study_inputs(tmp, 8)
    for k, model in enumerate(MODELS):
        make_run(tmp / "work" / "runs", model, voc, gt, names, seed=k, extra_cfg=f"cls_label = {str(labels)!r}\n")
    return dict(tmp=tmp, base=base, names=names)


def _study(data, body: str):
    models = ", ".join(f"dict(name={m!r}, config={str(data['base'])!r})" for m in MODELS)
    path = data["tmp"] / "study.py"
    path.write_text(f"study_name = 'collect'\nwork_dir = {str(data['tmp'] / 'work')!r}\nmodels = [{models}]\n"
                    "methods = ['cam']\nreport = dict(n_boot=50)\n" + body)
    return load_study(path)


def _consensus(spec) -> tuple[list[str], dict]:
    lines: list[str] = []
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the synthetic runs' outputs carry no provenance records
        summary = consensus_for_method(spec, "cam", _runs(spec, notes), pd.DataFrame(index=list(MODELS)), notes,
                                       lines.append)
    return lines, summary


def _rebuilt(lines: list[str]) -> bool:
    reused = any("inputs unchanged, reusing" in line for line in lines)
    built = any("voting the maps" in line for line in lines)
    assert reused != built, lines
    return built


def test_write_maps_is_part_of_the_pass_and_a_missing_map_folder_is_rewritten(data):
    maps = data["tmp"] / "work" / "consensus" / "cam" / "maps"
    wanted = {f"{n}.npz" for n in data["names"]} | {"consensus_meta.json"}
    off = _study(data, "consensus = dict(sizes=(), write_maps=False)\n")
    lines, first = _consensus(off)
    assert _rebuilt(lines) and not maps.exists()
    lines, _ = _consensus(off)
    assert not _rebuilt(lines)  # nothing changed: the pass is reused

    on = _study(data, "consensus = dict(sizes=(), write_maps=True)\n")
    lines, second = _consensus(on)
    assert _rebuilt(lines), "turning write_maps on must not reuse the pass that wrote no maps"
    assert {p.name for p in maps.iterdir()} == wanted
    assert second["fingerprint"] != first["fingerprint"]
    assert second["members"] == first["members"]  # the same vote, only the maps differ
    run = load_npz(data["tmp"] / "work" / "consensus" / "cam" / "run.npz")
    assert str(run["fingerprint"]) == second["fingerprint"]
    lines, _ = _consensus(on)
    assert not _rebuilt(lines)

    (maps / f"{data['names'][3]}.npz").unlink()  # a deleted map file (or folder) is noticed and rewritten
    lines, _ = _consensus(on)
    assert _rebuilt(lines) and any("incomplete" in line and data["names"][3] in line for line in lines)
    assert {p.name for p in maps.iterdir()} == wanted
    for p in maps.iterdir():
        p.unlink()
    maps.rmdir()
    lines, _ = _consensus(on)
    assert _rebuilt(lines) and {p.name for p in maps.iterdir()} == wanted
    # every written map lies in [0, 1] and spans it (min-max of a non-constant vote)
    for n in data["names"]:
        cams = load_npz(maps / f"{n}.npz")["cams"]
        assert cams.min() == 0.0 and cams.max() == 1.0

    lines, _ = _consensus(off)  # off again: rebuilt, and the maps of the earlier pass do not linger
    assert _rebuilt(lines) and not maps.exists()


def test_a_metrics_column_without_values_is_a_note_and_the_others_are_correlated(data):
    spec = _study(data, "consensus = dict(sizes=(), write_maps=False)\nmetrics = ['map', 'ood_map', 'vice:cam']\n")
    lines: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        collect_study(spec, log=lines.append)
    root = data["tmp"] / "work"
    cross = json.loads((root / "cross_model.json").read_text())
    assert cross["columns"] == ["map", "vice:cam"]
    note = [n for n in cross["notes"] if n.startswith("metrics:")]
    assert len(note) == 1 and "ood_map" in note[0] and "no values" in note[0]
    assert any(note[0] in line for line in lines)
    models = pd.read_csv(root / "models.csv", index_col="model")
    corr = pd.read_csv(root / "correlations.csv")
    assert list(zip(corr["x"], corr["y"])) == [("map", "vice:cam")]
    # the values themselves: each run's ece.json mAP and vice.json VICE, and their Pearson
    for m in MODELS:
        ev = root / "runs" / m / "eval" / "val_best"
        assert models.loc[m, "map"] == pytest.approx(json.loads((ev / "ece.json").read_text())["mAP"])
        assert models.loc[m, "vice:cam"] == pytest.approx(json.loads((ev / "vice.json").read_text())["vice"])
    assert corr.loc[0, "pearson"] == pytest.approx(
        stats.pearsonr(models["map"], models["vice:cam"]).statistic)
    assert np.isfinite(corr.loc[0, "pearson"])
