"""Collecting a study: tables, the consensus outputs, the per-model table and the cross-model correlations,
checked against direct scipy calls on the runs' own numbers."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dywsss.metrics.correlation import correlate
from dywsss.provenance import sha256_file
from dywsss.report.study import accuracy_sentence, verdict
from dywsss.study import load_study
from dywsss.study.collect import collect_study

from report_fixtures import make_run, make_study_inputs

MODELS = ("m1", "m2", "m3", "m4")
METHODS = ("cam", "gradcam")
N_BOOT = 300


def _eval_name(method: str) -> str:
    """A method's evaluation folder in its model's session: the first method's own, the others tagged."""
    return "val_best" if method == METHODS[0] else f"val_best_{method}"


def _page(method: str) -> str:
    return "report.html" if method == METHODS[0] else f"report_{method}.html"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A study of 4 models x 2 methods whose runs are synthetic finished runs (one session per model, the
    second method's maps and metrics under its map_tag, as the study makes them), plus one OOD tree."""
    tmp = tmp_path_factory.mktemp("study")
    names, voc, gt, labels, base = make_study_inputs(tmp, 10, "infer_list = 'val.txt'\nlist_root = 'voc12'\n")
    ood = tmp / "ood_tree"
    ood.mkdir()
    (ood / "manifest.json").write_text(json.dumps(dict(kind="corruption", list="val_noise.txt", voc12_root="VOC2012",
                                                       gt_dir="VOC2012/SegmentationClassAug",
                                                       cls_label="cls_labels.json")))
    models = ",\n".join(f"dict(name={m!r}, config={str(base)!r})" for m in MODELS)
    path = tmp / "study.py"
    path.write_text(
        f"study_name = 'fake'\nwork_dir = {str(tmp / 'work')!r}\nmodels = [{models}]\n"
        f"methods = {list(METHODS)!r}\nood = dict(trees=[{str(ood)!r}])\n"
        f"consensus = dict(sizes=[2, 3], trials=3, swap=dict(evaluated=['m1', 'm2'], extra=(1, 2), trials=4))\n"
        f"report = dict(n_boot={N_BOOT}, seed=0, primary_method='gradcam')\n")
    spec = load_study(path)
    rng = np.random.default_rng(0)
    for k, model in enumerate(MODELS):
        root = make_run(spec.runs_dir, model, voc, gt, names, seed=10 * k, extra_cfg=f"cls_label = {str(labels)!r}\n")
        for j, method in enumerate(METHODS[1:], 1):  # another method: the same weights, its own maps and metrics
            other = make_run(tmp / "other", model, voc, gt, names, seed=10 * k + j,
                             extra_cfg=f"cls_label = {str(labels)!r}\n")
            shutil.move(other / "eval" / "val_best", root / "eval" / _eval_name(method))
            shutil.move(other / "test" / "cam_val_best", root / "test" / f"cam_val_best_{method}")
            shutil.rmtree(other)
        for method in METHODS:
            (root / _page(method)).write_text("<html>run report</html>")
        ev = root / "eval" / "val_noise_best"  # the OOD evaluation, with the session's first method
        shutil.copytree(root / "eval" / "val_best", ev)
        ece = json.loads((ev / "ece.json").read_text())
        ece["mAP"] = float(rng.uniform(0.3, 0.6))
        (ev / "ece.json").write_text(json.dumps(ece))
    report = collect_study(spec, log=lambda s: None)
    return dict(spec=spec, root=spec.root, report=report, names=names)


def _summary(study, model, method, file):
    folder, name = file.split("/")
    folder = _eval_name(method) if folder == "val_best" else folder
    return json.loads((study["spec"].runs_dir / model / "eval" / folder / name).read_text())


def test_tables_and_the_model_frame_hold_the_runs_numbers(study):
    root = study["root"]
    for method in METHODS:
        for suffix in ("md", "csv", "tex"):
            assert (root / "tables" / f"{method}.{suffix}").is_file()
        table = pd.read_csv(root / "tables" / f"{method}.csv")
        assert list(table["session"]) == list(MODELS)
    assert (root / "tables" / "ood_val_noise.csv").is_file()
    models = pd.read_csv(root / "models.csv", index_col="model")
    for m in MODELS:
        assert models.loc[m, "map"] == pytest.approx(_summary(study, m, "cam", "val_best/ece.json")["mAP"])
        assert models.loc[m, "ood_map"] == pytest.approx(_summary(study, m, "cam", "val_noise_best/ece.json")["mAP"])
        assert models.loc[m, "vice:gradcam"] == pytest.approx(_summary(study, m, "gradcam", "val_best/vice.json")["vice"])
        assert models.loc[m, "best_miou:gradcam"] == pytest.approx(
            _summary(study, m, "gradcam", "val_best/ji_curve.json")["best_miou"])


def test_cross_model_correlations_equal_direct_scipy_calls(study):
    models = pd.read_csv(study["root"] / "models.csv", index_col="model")
    corr = pd.read_csv(study["root"] / "correlations.csv")
    assert {"map", "ood_map", "ece_ml", "best_miou:cam", "vice:gradcam", "consensus_score:cam"} <= set(corr["x"]) | set(
        corr["y"])
    for _, row in corr.iterrows():
        x, y = models[row["x"]].to_numpy(float), models[row["y"]].to_numpy(float)
        if not np.isfinite(row["pearson"]):
            continue
        assert row["pearson"] == pytest.approx(stats.pearsonr(x, y).statistic)
        assert row["pearson_p"] == pytest.approx(stats.pearsonr(x, y).pvalue)
        assert row["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic)
        assert row["spearman_p"] == pytest.approx(stats.spearmanr(x, y).pvalue)
    # the bootstrap interval of one pair, against scipy's paired percentile bootstrap with the same seed
    row = corr[(corr["x"] == "map") & (corr["y"] == "best_miou:gradcam")].iloc[0]
    x, y = models["map"].to_numpy(float), models["best_miou:gradcam"].to_numpy(float)
    res = stats.bootstrap((x, y), lambda a, b: stats.pearsonr(a, b).statistic, paired=True, vectorized=False,
                          n_resamples=N_BOOT, method="percentile", rng=np.random.default_rng(0))
    dist = res.bootstrap_distribution
    lo, hi = np.nanquantile(dist, [0.025, 0.975]) if np.isnan(dist).any() else (res.confidence_interval.low,
                                                                                  res.confidence_interval.high)
    assert (row["pearson_ci_low"], row["pearson_ci_high"]) == pytest.approx((lo, hi))


def test_the_accuracy_answer_is_stated_with_its_interval(study):
    cross = json.loads((study["root"] / "cross_model.json").read_text())
    head = cross["headline"]
    assert head.startswith("Does the more accurate model explain better (by best mIoU (gradcam))?")
    answer = next(a for a in cross["answers"] if a["column"] == "best_miou:gradcam")
    c = answer["correlation"]
    assert f"[{c['pearson_ci_low']:.2f}, {c['pearson_ci_high']:.2f}]" in head
    assert answer["verdict"] == verdict(c)
    record = next(i for i in cross["inputs"] if i.get("method") == "gradcam" and i["model"] == "m3")
    assert record["files"][0]["sha256"] == sha256_file(study["spec"].runs_dir / "m3/eval/val_best_gradcam/ece.json")
    assert record["weights"]["sha256"] == sha256_file(study["spec"].runs_dir / "m3/model/best.pth")


def test_verdicts_and_sentences_by_hand():
    up = correlate(np.arange(8.0), np.arange(8.0) ** 1.5, n_boot=200)
    assert verdict(up) == "yes" and "Yes: across models, higher clean mAP goes with higher VICE" in accuracy_sentence(
        up, "VICE")
    down = correlate(np.arange(8.0), -np.arange(8.0), n_boot=200)
    assert verdict(down) == "opposite"
    flat = correlate([0.1, 0.5, 0.2, 0.4, 0.3], [0.3, 0.1, 0.5, 0.2, 0.4], n_boot=500)
    assert verdict(flat) == "not shown" and "includes 0" in accuracy_sentence(flat, "VICE")
    none = correlate([1, 2], [3, 4])
    assert verdict(none) == "undefined" and "needs at least 3 pairs" in accuracy_sentence(none, "VICE")


def test_consensus_outputs_and_the_per_sample_column(study):
    out = study["root"] / "consensus" / "cam"
    summary = json.loads((out / "summary.json").read_text())
    assert [m["name"] for m in summary["members"]] == list(MODELS)
    assert summary["rule"] == "l2" and summary["similarity"] == "cosine" and summary["rbf_sigma"] > 0
    assert summary["n_pairs"] == len(study["names"])
    scores = pd.read_csv(out / "member_scores.csv", index_col="model")
    models = pd.read_csv(study["root"] / "models.csv", index_col="model")
    assert models["consensus_score:cam"].to_numpy() == pytest.approx(scores["consensus_score"].to_numpy())
    c = summary["correlations"]["map"]
    assert c["pearson"] == pytest.approx(stats.pearsonr(scores["consensus_score"], scores["map"]).statistic)
    per_image = pd.read_csv(out / "per_image.csv", index_col="name_image")
    sample = pd.read_csv(out / "per_sample" / "m2.csv")
    assert sample["consensus_score"].to_numpy() == pytest.approx(per_image.loc[sample["name_image"], "m2"].to_numpy())
    assert models.loc["m2", "vice_consensus:cam"] == pytest.approx(
        stats.pearsonr(-sample["loss"], sample["consensus_score"]).statistic)
    committees = pd.read_csv(out / "committees.csv")
    assert (committees["kind"] == "size").sum() == 3 + 3  # 3 trials of size 2 (of 6) and of size 3 (of 4)
    assert (committees["kind"] == "swap").sum() == 4
    for f in ("committee_size.png", "committee_swap.png", "score_vs_map.png"):
        assert (out / f).stat().st_size > 1000
    assert len(list((out / "maps").glob("*.npz"))) == len(study["names"])


def test_consensus_pass_is_reused_while_inputs_are_unchanged(study):
    from dywsss.study.collect import _runs, consensus_for_method

    first = json.loads((study["root"] / "consensus" / "cam" / "summary.json").read_text())
    lines: list[str] = []
    notes: list[str] = []
    frame = pd.DataFrame(index=list(MODELS))
    again = consensus_for_method(study["spec"], "cam", _runs(study["spec"], notes), frame, notes, lines.append)
    assert any("inputs unchanged, reusing" in line for line in lines)
    assert again["members"] == first["members"] and again["fingerprint"] == first["fingerprint"]


def test_study_report_links_every_run(study):
    text = study["report"].read_text()
    for m in MODELS:
        for method in METHODS:
            assert f'href="runs/{m}/{_page(method)}"' in text
    assert 'src="figures/scatter_matrix.png"' in text and "Does the more accurate model explain better" in text
    assert (study["root"] / "figures" / "scatter_matrix.png").stat().st_size > 5000
