"""Cross-model consensus (beyond-spec §2): voting rules, scores, sigma, AP, committees, the one-pass builder."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image
from scipy import stats
from sklearn.metrics import average_precision_score

from dywsss.errors import InputError, MissingInputError
from dywsss.mapfile import load_maps, save_maps
from dywsss.metrics.consensus import (
    Member,
    average_precision_rows,
    build_consensus,
    cosine_scores,
    distances,
    images_all_correct,
    member_terms,
    pixel_ap,
    plan_committees,
    rbf_scores,
    rbf_sigma,
    vote,
)

A = 1 / math.sqrt(2)
# three members, three pixels (worked by hand below)
L = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 2.0]])


def test_l2_vote_by_hand():
    # terms: [1,0,0], [a,a,0], [0,0,1]
    assert vote(L, "l2") == pytest.approx([(1 + A) / 3, A / 3, 1 / 3])


def test_printed_lime_vote_by_hand():
    # L^2 / ||L||: [1,0,0]/1, [1,1,0]/sqrt2, [0,0,4]/2
    assert vote(L, "lime_printed") == pytest.approx([(1 + A) / 3, A / 3, 2 / 3])


def test_minmax_vote_by_hand():
    # (L - min) / (max - min): [1,0,0], [1,1,0], [0,0,1]
    assert vote(L, "minmax") == pytest.approx([2 / 3, 1 / 3, 1 / 3])


def test_printed_form_drops_the_sign_l2_keeps_it():
    signed = np.array([[-3.0, 4.0], [3.0, 4.0]])
    assert vote(signed, "l2") == pytest.approx([0.0, 0.8])
    assert vote(signed, "lime_printed") == pytest.approx([9 / 5, 16 / 5])


def test_zero_member_contributes_nothing_and_votes_are_batched():
    maps = np.array([[0.0, 0.0, 0.0], [0.0, 3.0, 4.0]])
    assert vote(maps, "l2") == pytest.approx([0.0, 0.3, 0.4])
    assert vote(np.array([[2.0, 2.0], [0.0, 1.0]]), "minmax") == pytest.approx([0.0, 0.5])  # constant member -> 0
    batch = np.stack([L, L[::-1]])
    assert vote(batch, "l2") == pytest.approx(np.stack([vote(L, "l2"), vote(L[::-1], "l2")]))


def test_cosine_and_distance_by_hand():
    terms = member_terms(L, "l2")
    c = vote(L, "l2")
    norm_c = math.sqrt((3 + math.sqrt(2)) / 9)  # |c|^2 = ((1+a)^2 + a^2 + 1) / 9 = (3 + sqrt2) / 9
    dots = np.array([(1 + A) / 3, ((1 + A) * A + A * A) / 3, 1 / 3])
    assert cosine_scores(terms, c)[:, 0] == pytest.approx(dots / norm_c)
    assert distances(terms, c)[:, 0] == pytest.approx(np.sqrt(1 + norm_c ** 2 - 2 * dots))
    assert cosine_scores(np.zeros((1, 3)), c)[0, 0] == 0.0  # a zero map has score 0, not NaN


def test_rbf_sigma_is_the_median_distance_and_score_formula():
    d = np.array([[0.2, 0.5], [0.1, 0.9], [0.4, 0.3]])
    assert rbf_sigma(d) == pytest.approx(0.35)  # median of 0.1 0.2 0.3 0.4 0.5 0.9
    assert rbf_scores(np.array([0.0, 0.35, 0.7]), 0.35) == pytest.approx([1.0, math.exp(-0.5), math.exp(-2.0)])
    with pytest.raises(ValueError, match="sigma"):
        rbf_scores(d, 0.0)


def slow_ap(labels: np.ndarray, scores: np.ndarray) -> float:
    """AP = sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds, highest first."""
    total = labels.sum()
    ap, prev_recall = 0.0, 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        sel = scores >= t
        tp = (labels & sel).sum()
        recall, precision = tp / total, tp / sel.sum()
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def test_pixel_ap_against_the_slow_definition_and_sklearn_with_ignored_pixels():
    rng = np.random.default_rng(3)
    mask = rng.choice([0, 4, 255], size=(9, 11), p=[0.5, 0.3, 0.2]).astype(np.uint8)
    maps = np.stack([np.round(rng.random((9, 11)), 1), rng.random((9, 11)), np.zeros((9, 11))])  # ties; no ties; all tied
    maps[0][mask == 255] = 1.0  # ignored pixels must not count even with top scores
    keep = mask != 255
    got = pixel_ap(mask, 3, maps)
    for r in range(3):
        assert got[r] == pytest.approx(slow_ap(mask[keep] == 4, maps[r][keep]))
        assert got[r] == pytest.approx(average_precision_score(mask[keep] == 4, maps[r][keep]))
    assert np.isnan(pixel_ap(mask, 7, maps)).all()  # class absent from the mask


def test_batched_ap_equals_sklearn_on_many_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(30):
        k = int(rng.integers(2, 300))
        y = rng.random(k) < rng.uniform(0.05, 0.9)
        if not y.any():
            y[0] = True
        rows = np.round(rng.random((4, k)), int(rng.integers(1, 4)))
        expected = [average_precision_score(y, r) for r in rows]
        assert average_precision_rows(y, rows) == pytest.approx(expected)


def test_committees_exhaustive_when_few_seeded_otherwise():
    c = plan_committees(4, sizes=[2, 3], trials=10)
    assert c.kind[0] == "full" and c.members[0].all()
    assert sum(k == "size" for k in c.kind) == 6 + 4  # C(4,2) + C(4,3), all of them
    assert len({tuple(r) for r in c.members[1:]}) == 10
    a = plan_committees(8, sizes=[3], trials=5, seed=1)
    b = plan_committees(8, sizes=[3], trials=5, seed=1)
    assert (a.members == b.members).all() and (a.size[1:] == 3).all()
    assert len({tuple(r) for r in a.members[1:]}) == 5
    s = plan_committees(6, sizes=[], swap_evaluated=[0, 2], swap_extra=(1, 2), swap_trials=12, seed=0)
    swap = s.members[[k == "swap" for k in s.kind]]
    assert swap[:, [0, 2]].all() and set(swap.sum(1)) <= {3, 4} and len(swap) == 12
    assert (s.evaluated[1:].sum(1) == 2).all()
    assert np.allclose(s.weights().sum(1), 1.0)


# ----------------------------------------------------------- the one pass
def _write_member(folder, maps_by_image):
    for name, (classes, cams) in maps_by_image.items():
        save_maps(folder / f"{name}.npz", np.array(classes), np.array(cams, dtype=np.float32), dtype="float32")


@pytest.fixture
def tiny_committee(tmp_path):
    """Three members, two images (one with two classes), 3x4 maps and masks."""
    rng = np.random.default_rng(0)
    gt = tmp_path / "gt"
    gt.mkdir()
    masks = {
        "img_a": np.array([[0, 1, 1, 0], [0, 1, 1, 255], [0, 0, 0, 0]], np.uint8),
        "img_b": np.array([[3, 3, 0, 6], [3, 255, 0, 6], [0, 0, 0, 6]], np.uint8),
    }
    for name, m in masks.items():
        Image.fromarray(m, mode="L").save(gt / f"{name}.png")
    labels = {"img_a": [0], "img_b": [2, 5]}
    members = []
    raw = {}
    for j in range(3):
        folder = tmp_path / f"m{j}"
        maps = {n: (labels[n] + ([7] if j == 1 else []),  # an extra class in one member is ignored
                    [rng.random((3, 4)).round(2) for _ in range(len(labels[n]) + (j == 1))]) for n in masks}
        _write_member(folder, maps)
        members.append(Member(f"m{j}", folder))
        raw[j] = maps
    return dict(members=members, labels=labels, gt=gt, masks=masks, raw=raw, names=list(masks))


def test_build_consensus_matches_a_direct_computation(tiny_committee, tmp_path):
    t = tiny_committee
    run = build_consensus(t["members"], t["names"], t["labels"], t["gt"], rule="l2", out_dir=tmp_path / "cons",
                          progress=False)
    assert run.pairs == [("img_a", 0), ("img_b", 2), ("img_b", 5)]
    expect_cos, expect_ap, expect_cons_ap = [], [], []
    for name, cls in run.pairs:
        stack = np.stack([t["raw"][j][name][1][t["raw"][j][name][0].index(cls)].reshape(-1) for j in range(3)])
        terms = stack / np.linalg.norm(stack, axis=1, keepdims=True)
        c = terms.mean(0)
        expect_cos.append(terms @ c / (np.linalg.norm(terms, axis=1) * np.linalg.norm(c)))
        mask = t["masks"][name].reshape(-1)
        keep = mask != 255
        expect_ap.append([slow_ap(mask[keep] == cls + 1, stack[j][keep]) for j in range(3)])
        expect_cons_ap.append(slow_ap(mask[keep] == cls + 1, c[keep]))
        # the written consensus map is c min-max normalised to [0, 1]
        classes, cams = load_maps(tmp_path / "cons" / f"{name}.npz")
        got = cams[list(classes).index(cls)].reshape(-1)
        assert got == pytest.approx((c - c.min()) / (c.max() - c.min()), abs=1e-6)  # float32 storage
    expect_cos = np.array(expect_cos)
    assert run.pair_scores("cosine") == pytest.approx(expect_cos)
    assert run.member_scores("cosine") == pytest.approx(expect_cos.mean(0))
    assert run.member_ap == pytest.approx(np.array(expect_ap))
    assert run.consensus_ap() == pytest.approx(np.mean(expect_cons_ap))
    per_image = run.per_image_scores("cosine")
    assert per_image.loc["img_a"].to_numpy() == pytest.approx(expect_cos[0])
    assert per_image.loc["img_b"].to_numpy() == pytest.approx(expect_cos[1:].mean(0))
    # RBF: sigma is the median of all 9 member distances, recorded in the summary
    sigma = np.median(run.dist[:, :, 0])
    assert run.sigma() == pytest.approx(sigma)
    assert run.member_scores("rbf") == pytest.approx(np.exp(-0.5 * (run.dist[:, :, 0] / sigma) ** 2).mean(0))
    assert run.summary("rbf")["rbf_sigma"] == pytest.approx(sigma)
    assert len(run.provenance["members"][0]["maps_sha256"]) == 64


def test_sub_committee_scores_and_robustness_pearson(tiny_committee):
    t = tiny_committee
    committees = plan_committees(3, sizes=[2], trials=10)  # all three pairs of members
    run = build_consensus(t["members"], t["names"], t["labels"], t["gt"], rule="minmax", committees=committees,
                          progress=False)
    rob = run.robustness("cosine")
    full = run.member_scores("cosine", 0)
    for row in range(1, 4):
        sub = np.flatnonzero(committees.members[row])
        scores = []
        for name, cls in run.pairs:
            stack = np.stack([t["raw"][j][name][1][t["raw"][j][name][0].index(cls)].reshape(-1) for j in range(3)])
            terms = (stack - stack.min(1, keepdims=True)) / np.ptp(stack, axis=1, keepdims=True)
            c = terms[sub].mean(0)
            scores.append(terms @ c / (np.linalg.norm(terms, axis=1) * np.linalg.norm(c)))
        member = np.mean(scores, axis=0)
        assert run.member_scores("cosine", row) == pytest.approx(member)
        assert rob.loc[row, "pearson_vs_full"] == pytest.approx(stats.pearsonr(member, full).statistic)
    assert rob.loc[0, "pearson_vs_full"] == pytest.approx(1.0)
    assert run.default_similarity() == "rbf"


def test_maps_of_another_size_are_resized_to_the_mask(tiny_committee):
    t = tiny_committee
    big = t["members"][0].map_dir / "img_a.npz"
    classes, cams = load_maps(big)
    save_maps(big, classes, np.repeat(np.repeat(cams, 2, axis=1), 2, axis=2), dtype="float32")  # 6x8
    run = build_consensus(t["members"], t["names"], t["labels"], t["gt"], progress=False)
    assert np.isfinite(run.cos).all()


def test_bad_committees_fail_before_work(tiny_committee):
    t = tiny_committee
    (t["members"][2].map_dir / "img_b.npz").unlink()
    with pytest.raises(MissingInputError, match="member 'm2'"):
        build_consensus(t["members"], t["names"], t["labels"], t["gt"], progress=False)
    with pytest.raises(InputError, match="at least 2"):
        build_consensus(t["members"][:1], t["names"], t["labels"], t["gt"], progress=False)
    labels = dict(t["labels"], img_a=[4])  # a class no member explained
    with pytest.raises(InputError, match="no map of class 4"):
        build_consensus(t["members"][:2], ["img_a"], labels, t["gt"], progress=False)


def test_images_all_correct(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("name_image,loss,label,prediction\nx,0.1,1 4,4 1\ny,0.2,2,2 3\nz,0.3,5,5\n")
    b.write_text("name_image,loss,label,prediction\nx,0.1,1 4,1 4\ny,0.2,2,2\nz,0.3,5,\n")
    assert images_all_correct([a, b]) == ["x"]


def test_correlations_across_members(tiny_committee):
    t = tiny_committee
    run = build_consensus(t["members"], t["names"], t["labels"], t["gt"], progress=False)
    acc = np.array([0.5, 0.7, 0.6])
    c = run.correlations({"map": acc})["map"]
    s = run.member_scores()
    assert c.pearson == pytest.approx(stats.pearsonr(s, acc).statistic)
    assert c.spearman_p == pytest.approx(stats.spearmanr(s, acc).pvalue)


def test_written_signed_consensus_keeps_the_votes_ranking_and_ap(tmp_path):
    """A signed (raw) l2 vote: the written map is min-max(c), so its AP against the mask equals the
    recorded consensus AP, for a vote that is negative everywhere and for one of mixed sign; a
    constant vote is written as zeros (its AP, the share of positives, is unchanged too)."""
    rng = np.random.default_rng(5)
    gt = tmp_path / "gt"
    gt.mkdir()
    shape = (6, 8)
    masks = {n: rng.choice([0, 3, 255], size=shape, p=[0.55, 0.35, 0.1]).astype(np.uint8)
             for n in ("neg", "mixed", "flat")}
    for name, m in masks.items():
        Image.fromarray(m, mode="L").save(gt / f"{name}.png")
    labels = {n: [2] for n in masks}
    raw = {n: [] for n in masks}
    members = []
    for j in range(3):
        folder = tmp_path / f"m{j}"
        for name in masks:
            if name == "neg":
                r = -rng.random(shape) - 0.1  # every pixel negative: the vote's max is < 0
            elif name == "mixed":
                r = rng.normal(0.0, 1.0, shape)
            else:
                r = np.full(shape, -2.0 + 1.5 * j)  # constant per member: the vote is constant
            raw[name].append(r.reshape(-1))
            save_maps(folder / f"{name}.npz", np.array([2]), np.zeros((1, *shape), np.float32), dtype="float32",
                      raw=r[None].astype(np.float32))
        members.append(Member(f"m{j}", folder))
    out = tmp_path / "cons"
    run = build_consensus(members, list(masks), labels, gt, rule="l2", out_dir=out, source="raw", progress=False)
    assert [n for n, _ in run.pairs] == list(masks)
    written_ap = []
    for p, name in enumerate(masks):
        stack = np.stack(raw[name]).astype(np.float32).astype(np.float64)  # the stored float32 raw maps
        norms = np.linalg.norm(stack, axis=1, keepdims=True)
        c = (stack / norms).mean(0)  # the l2 vote, by hand
        keep = masks[name].reshape(-1) != 255
        y = masks[name].reshape(-1)[keep] == 3
        classes, cams = load_maps(out / f"{name}.npz")
        got = cams[0].reshape(-1).astype(np.float64)
        if name == "flat":
            assert np.ptp(c) < 1e-12 and not got.any()  # constant vote -> zeros
        else:
            assert got.min() == 0.0 and got.max() == 1.0
            assert got == pytest.approx((c - c.min()) / (c.max() - c.min()), abs=1e-6)
        expected = average_precision_score(y, c[keep])
        assert run.committee_ap[p, 0] == pytest.approx(expected, rel=1e-12)
        written_ap.append(average_precision_score(y, got[keep]))
        assert written_ap[-1] == pytest.approx(run.committee_ap[p, 0], rel=1e-12)
    assert run.consensus_ap() == pytest.approx(np.mean(written_ap), rel=1e-12)
    meta = json.loads((out / "consensus_meta.json").read_text())
    assert meta["source"] == "raw" and meta["normalisation"].startswith("min-max")
