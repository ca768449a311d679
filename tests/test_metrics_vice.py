"""VICE (Eq. 8), its bootstrap interval and loss bins; the per-sample table and CSV."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from dywsss.mapfile import save_maps
from dywsss.metrics.per_sample import (
    PER_SAMPLE_COLUMNS, parse_ids, per_image_ji, per_sample_table, read_per_sample_csv, write_per_sample_csv,
)
from dywsss.metrics.vice import bootstrap_ci, loss_bins, vice, vice_coefficient


# -------------------------------------------------------------------- VICE
def test_vice_hand_worked():
    # -loss = (-1, -2, -3), JI = (0.5, 0.1, 0.3): centred (1, 0, -1), (0.2, -0.2, 0)
    # r = 0.2 / sqrt(2 * 0.08) = 0.5
    assert vice_coefficient([1.0, 2.0, 3.0], [0.5, 0.1, 0.3]) == pytest.approx(0.5)


def test_vice_of_linear_relation_is_one():
    loss = np.linspace(0.1, 2.0, 30)
    assert vice_coefficient(loss, 0.9 - 0.3 * loss) == pytest.approx(1.0)
    assert vice_coefficient(loss, 0.1 + 0.3 * loss) == pytest.approx(-1.0)


def test_vice_matches_scipy_and_extras():
    rng = np.random.default_rng(0)
    loss = rng.gamma(2, 0.1, 200)
    ji = np.clip(0.6 - loss + rng.normal(0, 0.15, 200), 0, 1)
    r = vice(loss, ji, n_boot=500, seed=3)
    ref = stats.pearsonr(-loss, ji)
    assert r.vice == pytest.approx(ref.statistic, rel=1e-12)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert r.spearman == pytest.approx(stats.spearmanr(-loss, ji).statistic)
    assert r.n == 200 and r.ci_low < r.vice < r.ci_high
    assert set(r.summary()) >= {"vice", "n", "ci_low", "ci_high", "spearman", "p_value"}


def test_bootstrap_matches_plain_loop_with_same_draws():
    rng = np.random.default_rng(1)
    loss, ji = rng.random(25), rng.random(25)
    lo, hi = bootstrap_ci(loss, ji, n_boot=300, seed=7, chunk=300)
    draws = np.random.default_rng(7).integers(0, 25, size=(300, 25))
    rs = [np.corrcoef(-loss[i], ji[i])[0, 1] for i in draws]
    np.testing.assert_allclose([lo, hi], np.quantile(rs, [0.025, 0.975]), rtol=1e-10)
    assert bootstrap_ci(loss, ji, n_boot=300, seed=7) == bootstrap_ci(loss, ji, n_boot=300, seed=7)


@pytest.mark.parametrize("loss, ji, match", [
    ([1.0, 2.0], [0.1, 0.2], "at least 3 samples"),
    ([1.0, 1.0, 1.0], [0.1, 0.2, 0.3], "loss is constant"),
    ([1.0, 2.0, 3.0], [0.2, 0.2, 0.2], "JI is constant"),
])
def test_undefined_vice_is_nan_with_warning(loss, ji, match):
    with pytest.warns(UserWarning, match=match):
        r = vice(loss, ji)
    assert math.isnan(r.vice) and math.isnan(r.ci_low) and r.summary()["vice"] is None


def test_nan_inputs_rejected():
    with pytest.raises(ValueError, match="NaN or inf at rows \\[1\\]"):
        vice([1.0, np.nan, 2.0, 3.0], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="3 losses but 2 JI"):
        vice([1.0, 2.0, 3.0], [0.1, 0.2])


def test_loss_bins_match_plain_split():
    rng = np.random.default_rng(2)
    loss, ji = rng.random(23), rng.random(23)
    order = np.argsort(loss, kind="stable")
    k, m = divmod(23, 4)
    groups = [order[i * k + min(i, m):(i + 1) * k + min(i + 1, m)] for i in range(4)]
    mean_loss, mean_ji, count = loss_bins(loss, ji, 4)
    np.testing.assert_allclose(mean_loss, [loss[g].mean() for g in groups])
    np.testing.assert_allclose(mean_ji, [ji[g].mean() for g in groups])
    np.testing.assert_array_equal(count, [6, 6, 6, 5])
    with pytest.raises(ValueError, match="loss bins"):
        loss_bins(loss, ji, 24)


# ------------------------------------------------------------ per-sample CSV
def _table(n=4, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (n, 20))
    labels = (rng.random((n, 20)) < 0.1).astype(int)
    labels[:, 4] = 1
    return logits, labels, rng.random(n), rng.random(n)


def test_per_sample_table_values():
    logits, labels, ref, paper = _table()
    logits[1] = -5.0  # nothing predicted
    df = per_sample_table([f"n{i}" for i in range(4)], logits, labels, ref, paper, "paper")
    assert tuple(df.columns) == PER_SAMPLE_COLUMNS
    p = 1 / (1 + np.exp(-logits))
    i = 0
    want_loss = np.mean(-(labels[i] * np.log(p[i]) + (1 - labels[i]) * np.log(1 - p[i])))
    assert df.loc[i, "loss"] == pytest.approx(want_loss)
    assert df.loc[i, "prediction"] == " ".join(str(c) for c in np.flatnonzero(p[i] > 0.5))
    assert df.loc[i, "label"] == " ".join(str(c) for c in np.flatnonzero(labels[i]))
    assert df.loc[1, "prediction"] == "" and df.loc[1, "confidence"] == pytest.approx(p[1].max())
    np.testing.assert_allclose(df["miou"], paper)
    np.testing.assert_allclose(df[[f"p_{c:02d}" for c in range(20)]].to_numpy(), p)
    with pytest.raises(ValueError, match="ji_definition"):
        per_sample_table(["a"], logits[:1], labels[:1], ref[:1], paper[:1], "best")
    with pytest.raises(ValueError, match="lengths differ"):
        per_sample_table(["a"], logits, labels, ref, paper)


def test_csv_round_trip_and_errors(tmp_path):
    logits, labels, ref, paper = _table()
    logits[1] = -5.0
    df = per_sample_table([f"n{i}" for i in range(4)], logits, labels, ref, paper)
    path = write_per_sample_csv(df, tmp_path / "per_sample.csv")
    back = read_per_sample_csv(path)
    assert back.loc[1, "prediction"] == ""
    np.testing.assert_array_equal(back["loss"].to_numpy(), df["loss"].to_numpy())  # full precision
    assert parse_ids(back.loc[0, "label"]) == np.flatnonzero(labels[0]).tolist()
    df.drop(columns=["p_03"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"bad\.csv: missing column\(s\) \['p_03'\]"):
        read_per_sample_csv(tmp_path / "bad.csv")
    df2 = df.copy()
    df2.loc[2, "miou"] = np.nan
    df2.to_csv(tmp_path / "nan.csv", index=False)
    with pytest.raises(ValueError, match=r"nan\.csv: column 'miou' has NaN values \(rows \[3\]\)"):
        read_per_sample_csv(tmp_path / "nan.csv")
    with pytest.warns(UserWarning, match="dropping 1 row"):
        assert len(read_per_sample_csv(tmp_path / "nan.csv", dropna=True)) == 3
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_per_sample_csv(tmp_path / "missing.csv")


def test_parse_original_id_formats():
    assert parse_ids("[ 4 14]") == [4, 14]
    assert parse_ids("[4, 14]") == [4, 14]
    assert parse_ids("") == [] and parse_ids("[]") == []
    with pytest.raises(ValueError, match="outside 0..19"):
        parse_ids("3 20")


def test_per_image_ji_from_files(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "g").mkdir()
    # 1x6 image, gt: bg bg cls1 cls1 cls2 255 ; maps: class 0 (mask 1) over pixels 2..3, class 1 nowhere
    gt = np.array([[0, 0, 1, 1, 2, 255]], np.uint8)
    cams = np.array([[[0.0, 0.3, 0.9, 0.05, 0.0, 0.0]], [[0.0, 0.0, 0.0, 0.0, 0.1, 0.9]]])
    Image.fromarray(gt, mode="L").save(tmp_path / "g" / "a.png")
    save_maps(tmp_path / "m" / "a.npz", np.array([0, 1]), cams, dtype="float32")
    ref, paper = per_image_ji(tmp_path / "m", ["a"], tmp_path / "g", t=0.1, progress=False)
    # t = 0.1: pred = bg 1 1 bg bg(0.1 == t) - : bg: TP 1 (px0), T 2, P 3 -> 1/4; cls1: TP 1, T 2, P 2 -> 1/3;
    # cls2: TP 0, T 1 -> 0 (missed)
    assert ref[0] == pytest.approx((1 / 4 + 1 / 3) / 2)
    assert paper[0] == pytest.approx((1 / 4 + 1 / 3 + 0) / 3)
