"""VICE of map metrics: orientation, per-class, partial (residuals), run comparison (scipy), compute_VICE.py."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dywsss.errors import InputError
from dywsss.metrics.metric_vice import align_runs, metric_vice
from dywsss.metrics.per_sample import per_sample_table, write_per_sample_csv
from dywsss.metrics.vice import compare_vice, oriented, partial_vice, per_class_vice, vice
from test_eval_scripts import load_script


def residual(v, z):
    d = np.c_[np.ones(len(v)), z]
    return v - d @ np.linalg.lstsq(d, v, rcond=None)[0]


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    n = 80
    area = rng.uniform(0.05, 0.6, n)
    count = rng.integers(1, 5, n).astype(float)
    loss = rng.gamma(2, 0.1, n) + 0.2 * area
    metric = 0.6 - loss + 0.5 * area - 0.05 * count + rng.normal(0, 0.1, n)
    return loss, metric, np.c_[area, count]


def test_partial_vice_is_the_correlation_of_lstsq_residuals(data):
    loss, metric, z = data
    res = partial_vice(loss, metric, z, ["fg_fraction", "n_objects"], n_boot=300)
    rx, ry = residual(-loss, z), residual(metric, z)
    r = np.corrcoef(rx, ry)[0, 1]
    assert res.partial_vice == pytest.approx(r, rel=1e-10)
    # p: the t-test of x's coefficient in OLS metric ~ 1 + (-loss) + z (an independent route)
    X = np.c_[np.ones(len(loss)), -loss, z]
    beta, *_ = np.linalg.lstsq(X, metric, rcond=None)
    dof = len(loss) - X.shape[1]
    sigma2 = np.sum((metric - X @ beta) ** 2) / dof
    se = np.sqrt(sigma2 * np.linalg.inv(X.T @ X)[1, 1])
    assert res.p_value == pytest.approx(2 * stats.t.sf(abs(beta[1] / se), dof), rel=1e-6)
    assert res.ci_low < res.partial_vice < res.ci_high
    # with a constant covariate the result is that of the other covariate alone
    const = partial_vice(loss, metric, np.c_[z[:, 0], np.ones(len(loss))], n_boot=50)
    alone = np.corrcoef(residual(-loss, z[:, :1]), residual(metric, z[:, :1]))[0, 1]
    assert const.partial_vice == pytest.approx(alone, rel=1e-9)


def test_partial_vice_interval_is_scipys_paired_bootstrap(data):
    loss, metric, z = data
    res = partial_vice(loss, metric, z, n_boot=200, seed=4)

    def stat(l, m, a, c):  # the residual definition, one resample at a time
        zz = np.c_[a, c]
        return np.corrcoef(residual(-l, zz), residual(m, zz))[0, 1]

    ref = stats.bootstrap((loss, metric, z[:, 0], z[:, 1]), stat, paired=True, vectorized=False, n_resamples=200,
                          method="percentile", rng=np.random.default_rng(4))
    assert (res.ci_low, res.ci_high) == pytest.approx(tuple(ref.confidence_interval), rel=1e-9)


def test_compare_vice_matches_direct_scipy_calls(data):
    loss, metric, _ = data
    rng = np.random.default_rng(1)
    loss_b, metric_b = loss + rng.normal(0, 0.05, len(loss)), metric + rng.normal(0, 0.2, len(loss))
    res = compare_vice(loss, metric, loss_b, metric_b, n_boot=300, n_permutations=499, seed=7)

    def diff(la, ma, lb, mb):
        return stats.pearsonr(-la, ma).statistic - stats.pearsonr(-lb, mb).statistic

    assert res.difference == pytest.approx(diff(loss, metric, loss_b, metric_b), rel=1e-12)
    boot = stats.bootstrap((loss, metric, loss_b, metric_b), diff, paired=True, vectorized=False, n_resamples=300,
                           method="percentile", rng=np.random.default_rng(7))
    assert (res.ci_low, res.ci_high) == pytest.approx(tuple(boot.confidence_interval), rel=1e-9)
    # permutation: swap the runs within images; one observation = (loss, metric) of an image
    a, b = np.c_[loss, metric], np.c_[loss_b, metric_b]
    idx = np.arange(len(loss))
    perm = stats.permutation_test((idx, idx + len(loss)),
                                  lambda i, j: diff(*np.r_[a, b][i].T, *np.r_[a, b][j].T),
                                  permutation_type="samples", vectorized=False, n_resamples=499,
                                  rng=np.random.default_rng(7))
    assert res.p_value == pytest.approx(perm.pvalue)
    same = compare_vice(loss, metric, loss, metric, n_boot=50, n_permutations=99)
    assert same.difference == 0 and same.p_value == 1.0 and same.ci_low == same.ci_high == 0


def test_per_class_vice_uses_the_images_of_each_class(data):
    loss, metric, _ = data
    labels = np.zeros((len(loss), 3), int)
    labels[:40, 0] = 1
    labels[20:, 1] = 1
    labels[:2, 2] = 1  # two images: undefined
    out = per_class_vice(loss, metric, labels, ("a", "b", "c"), n_boot=100)
    assert out["a"]["vice"] == pytest.approx(stats.pearsonr(-loss[:40], metric[:40]).statistic)
    assert out["b"]["n"] == 60 and out["b"]["vice"] == pytest.approx(stats.pearsonr(-loss[20:], metric[20:])[0])
    assert out["c"] == {"vice": None, "n": 2, "reason": "needs at least 3 samples, got 2"}


def test_metric_vice_orients_deletion(data):
    loss, metric, z = data
    df = pd.DataFrame({"name_image": [f"i{i}" for i in range(len(loss))], "loss": loss, "deletion": metric,
                       "fg_fraction": z[:, 0], "n_objects": z[:, 1]})
    res = metric_vice(df, "deletion", -1, n_boot=100)
    assert res["sign"] == -1 and res["orientation"].startswith("lower is better")
    assert res["vice"] == pytest.approx(stats.pearsonr(-loss, -metric).statistic)
    assert res["vice"] == pytest.approx(vice(loss, oriented(metric, -1), n_boot=10).vice)
    assert res["partial"]["partial_vice"] == pytest.approx(
        np.corrcoef(residual(-loss, z), residual(-metric, z))[0, 1], rel=1e-9)


def test_align_runs_refuses_other_images(tmp_path):
    a = pd.DataFrame({"name_image": ["x", "y", "z"], "loss": [1.0, 2, 3]})
    b = pd.DataFrame({"name_image": ["z", "x", "y"], "loss": [3.0, 1, 2]})
    a2, b2 = align_runs(a, b, "A.csv", "B.csv")
    assert b2["name_image"].tolist() == ["x", "y", "z"] and b2["loss"].tolist() == [1, 2, 3]
    c = pd.DataFrame({"name_image": ["x", "y", "w"], "loss": [1.0, 2, 3]})
    with pytest.raises(InputError, match=r"C\.csv: not the same images as A\.csv .*'z' is in A\.csv but not in C"):
        align_runs(a, c, "A.csv", "C.csv")
    d = pd.DataFrame({"name_image": ["x", "x", "y"], "loss": [1.0, 2, 3]})
    with pytest.raises(InputError, match=r"D\.csv: image 'x' appears more than once"):
        align_runs(a, d, "A.csv", "D.csv")


# ------------------------------------------------------------------ the script
def write_run(path, seed, n=50, names=None):
    rng = np.random.default_rng(seed)
    logits = rng.normal(-1, 2, (n, 20))
    labels = (rng.random((n, 20)) < 0.15).astype(int)
    labels[:, 14] = 1
    ji = np.clip(0.5 - 0.1 * logits.mean(1) + rng.normal(0, 0.1, n), 0, 1)
    df = per_sample_table(names or [f"im{i}" for i in range(n)], logits, labels, ji, ji * 0.9)
    df["epg"] = np.clip(ji + rng.normal(0, 0.1, n), 0, 1)
    df.loc[3, "epg"] = np.nan  # undefined for one image
    df["deletion"] = 0.3 - 0.2 * ji + rng.normal(0, 0.05, n)
    df["fg_fraction"] = rng.uniform(0.1, 0.5, n)
    df["n_objects"] = rng.integers(1, 4, n)
    write_per_sample_csv(df, path)
    return df


def test_compute_vice_metric_all_and_compare(tmp_path):
    script = load_script("compute_VICE.py")
    csv = tmp_path / "A" / "per_sample.csv"
    df = write_run(csv, 0)
    script.main(["--dir_csv", str(csv), "--metric", "deletion", "--bootstrap", "100"])
    s = json.loads((csv.parent / "vice_deletion.json").read_text())
    assert s["metric"] == "deletion" and s["sign"] == -1 and "lower is better" in s["orientation"]
    assert s["vice"] == pytest.approx(stats.pearsonr(-df["loss"], -df["deletion"]).statistic)
    assert (csv.parent / "loss_vs_deletion.png").is_file()
    assert s["per_class"]["person"]["n"] == 50 and s["partial"]["n"] == 50

    script.main(["--dir_csv", str(csv), "--metric", "all", "--bootstrap", "100"])
    table = json.loads((csv.parent / "vice_metrics.json").read_text())["metrics"]
    assert list(table) == ["miou", "deletion", "epg"]
    ok = df["epg"].notna()
    assert table["epg"]["n"] == 49 and table["epg"]["n_dropped"] == 1
    assert table["epg"]["vice"] == pytest.approx(stats.pearsonr(-df["loss"][ok], df["epg"][ok]).statistic)
    assert json.loads((csv.parent / "vice.json").read_text())["ji_definition"] == "reference"
    assert (csv.parent / "loss_vs_metrics.png").is_file()

    csv_b = tmp_path / "B" / "per_sample.csv"
    df_b = write_run(csv_b, 1)
    script.main(["--compare", str(csv), str(csv_b), "--metric", "epg", "--bootstrap", "100",
                 "--permutations", "99"])
    c = json.loads((csv.parent / "vice_compare_epg.json").read_text())
    ok = df["epg"].notna() & df_b["epg"].notna()
    want = compare_vice(df["loss"][ok], df["epg"][ok], df_b["loss"][ok], df_b["epg"][ok], n_boot=100,
                        n_permutations=99)
    assert c["difference"] == pytest.approx(want.difference) and c["p_value"] == pytest.approx(want.p_value)
    assert c["n"] == 49 and c["n_dropped"] == 1

    csv_c = tmp_path / "C" / "per_sample.csv"
    write_run(csv_c, 2, names=[f"im{i}" for i in range(49)] + ["other"])
    with pytest.raises(InputError, match=r"C/per_sample\.csv: not the same images as .*'im49' is in"):
        script.main(["--compare", str(csv), str(csv_c)])
    with pytest.raises(InputError, match="--metric loss_x: no registered map metric"):
        script.main(["--dir_csv", str(csv), "--metric", "loss_x"])
