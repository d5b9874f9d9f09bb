"""dl4smlm.evaluate: the SMLM Challenge 2016 matching rules on hand-built cases, greedy matching equal to
the literal protocol, Hungarian matching optimal, metrics as strict JSON, the CRLB beside the RMSE."""
import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from fastcore.test import test_close as assert_close, test_eq as assert_eq

from dl4smlm.evaluate import assess, efficiency, exclude_border, ground_truth_crlb, match_localizations
from dl4smlm.crlb import crlb


def table(frame, x, y, index=None):
    return pd.DataFrame({"frame": frame, "x [nm]": np.asarray(x, float), "y [nm]": np.asarray(y, float)}, index=index)


def pairs_of(m): return list(zip(m["truth"].tolist(), m["localization"].tolist()))


def test_efficiency_examples():
    assert_close(efficiency(80, 20), 71.7, eps=0.05)
    assert_close(efficiency(50, 30), 41.7, eps=0.05)
    assert_close(efficiency(100, 10, alpha=0.5), 95.0, eps=1e-12)


def test_distance_exactly_at_the_tolerance_matches():
    t = table([1, 1], [0, 10_000], [0, 0])
    l = table([1, 1], [0 + 250, 10_000 + 250.0000001], [0, 0])
    assert_eq(pairs_of(match_localizations(t, l)), [(0, 0)])
    assert_eq(pairs_of(match_localizations(t, l, method="hungarian")), [(0, 0)])
    assert_eq(pairs_of(match_localizations(t, l, tolerance_nm=100)), [])
    assert_eq(len(match_localizations(t, table([1], [60], [80]), tolerance_nm=100)), 1)   # 3-4-5: exactly 100


def test_ties_are_broken_by_row_order():
    t = table([1, 1], [-100, 100], [0, 0], index=[7, 3])
    l = table([1], [0], [0], index=[5])
    assert_eq(pairs_of(match_localizations(t, l)), [(7, 5)])        # the earlier row, whatever its label
    l2 = table([1, 1], [0, 0], [50, -50], index=[9, 4])
    assert_eq(pairs_of(match_localizations(table([1], [0], [0]), l2)), [(0, 9)])


def test_greedy_takes_the_nearest_pair_first():
    t = table([1, 1], [0, 390], [0, 0])
    l = table([1, 1], [200, 600], [0, 0])
    assert_eq(pairs_of(match_localizations(t, l)), [(1, 0)])
    assert_eq(pairs_of(match_localizations(t, l, method="hungarian")), [(0, 0), (1, 1)])


def test_frames_are_matched_separately_and_empty_frames_are_fine():
    t = table([1, 2, 2, 5], [0, 0, 100, 0], [0, 0, 0, 0])
    l = table([2, 3, 5, 5], [0, 0, 10, 5], [0, 0, 0, 0])
    m = match_localizations(t, l)
    assert_eq(m[["frame", "truth", "localization"]].values.tolist(), [[2, 1, 0], [5, 3, 3]])
    assert_eq(m["dx [nm]"].tolist(), [0.0, 5.0])
    for a, b in ((t.iloc[:0], l), (t, l.iloc[:0]), (t.iloc[:0], l.iloc[:0])):
        m = match_localizations(a, b)
        assert_eq(len(m), 0); assert "dx [nm]" in m


def test_large_frame_numbers_and_negative_coordinates():
    t = table([100_000, 99_999], [-300.0, -300.0], [-5.0, -5.0])
    l = table([100_000, 100_000], [-310.0, -300.0], [-5.0, -500.0])
    assert_eq(pairs_of(match_localizations(t, l)), [(0, 0)])


def literal_greedy(t, l, tol):
    "The protocol, literally (ties: earlier truth row, then earlier localization row)."
    out = []
    for f in sorted(set(t["frame"]) & set(l["frame"])):
        ti = [k for k in range(len(t)) if t["frame"].iloc[k] == f]
        li = [k for k in range(len(l)) if l["frame"].iloc[k] == f]
        while ti and li:
            d, a, b = min((math.hypot(l["x [nm]"].iloc[b] - t["x [nm]"].iloc[a], l["y [nm]"].iloc[b] - t["y [nm]"].iloc[a]), a, b)
                          for a in ti for b in li)
            if d > tol: break
            out.append((a, b)); ti.remove(a); li.remove(b)
    return sorted(out)


@pytest.mark.parametrize("seed", range(6))
def test_greedy_equals_the_literal_protocol(seed):
    r = np.random.default_rng(seed)
    n, m = r.integers(5, 40, 2)
    grid = 10.0 if seed % 2 else 1e-6                                # coarse grid: many exact ties
    t = table(r.integers(1, 4, n), (r.uniform(0, 1200, n) / grid).round() * grid, (r.uniform(0, 1200, n) / grid).round() * grid)
    l = table(r.integers(1, 4, m), (r.uniform(0, 1200, m) / grid).round() * grid, (r.uniform(0, 1200, m) / grid).round() * grid)
    assert_eq(sorted(pairs_of(match_localizations(t, l, 250))), literal_greedy(t, l, 250))


def brute_force_optimum(t, l, tol):
    "(most pairs, least total distance) over all matchings of one small frame."
    d = np.hypot(l["x [nm]"].to_numpy()[None] - t["x [nm]"].to_numpy()[:, None], l["y [nm]"].to_numpy()[None] - t["y [nm]"].to_numpy()[:, None])
    best = (0, 0.0)
    for k in range(1, min(len(t), len(l)) + 1):
        for rows in itertools.combinations(range(len(t)), k):
            for cols in itertools.permutations(range(len(l)), k):
                ds = d[list(rows), list(cols)]
                if (ds <= tol).all() and (k, -ds.sum()) > (best[0], -best[1]): best = (k, ds.sum())
    return best


@pytest.mark.parametrize("seed", range(8))
def test_hungarian_is_optimal(seed):
    r = np.random.default_rng(100 + seed)
    n, m = r.integers(1, 6, 2)
    t = table([1] * n, r.uniform(0, 600, n), r.uniform(0, 600, n))
    l = table([1] * m, r.uniform(0, 600, m), r.uniform(0, 600, m))
    h = match_localizations(t, l, 250, method="hungarian")
    k, total = brute_force_optimum(t, l, 250)
    assert_eq(len(h), k)
    assert_close(h["distance [nm]"].sum(), total, eps=1e-6)
    assert len(h) >= len(match_localizations(t, l, 250))


def test_border_exclusion():
    t = table([1] * 5, [450, 449.999, 1000, 1550, 1550.001], [1000, 1000, 450, 1550, 1000])
    assert_eq(exclude_border(t, (2000, 2000)).index.tolist(), [0, 2, 3])
    assert_eq(len(exclude_border(t, (2000, 2000), border_nm=0)), 5)
    assert_eq(len(exclude_border(t, (2000, 2000), border_nm=1000)), 0)
    with pytest.raises(ValueError, match="border_nm"): exclude_border(t, (2000, 2000), border_nm=-1)
    with pytest.raises(ValueError, match="field_nm"): exclude_border(t, (2000, 0))


def test_all_localizations_in_the_border():
    gt = table([1, 1], [1000, 1200], [1000, 1000])
    locs = table([1, 1, 2], [100, 1950, 1000], [1000, 1000, 30])
    m = assess(gt, locs, (2000, 2000))
    assert_eq((m["n_ground_truth"], m["n_localizations"], m["tp"], m["fp"], m["fn"]), (2, 0, 0, 0, 2))
    assert_eq((m["precision_pct"], m["recall_pct"], m["jaccard_pct"], m["rmse_nm"], m["efficiency_pct"]), (None, 0.0, 0.0, None, None))
    json.dumps(m, allow_nan=False)


def test_assess_counts_and_errors_on_a_hand_built_case():
    gt = table([1, 1, 2, 2, 3], [1000, 2000, 1000, 2000, 1000], [1000, 1000, 1000, 1000, 1000])
    locs = table([1, 1, 2, 3, 3], [1030, 2000, 1000, 1000, 1500], [1000, 1040, 1000, 1000, 1500])   # last: false positive
    m = assess(gt, locs, (3000, 3000))
    assert_eq((m["tp"], m["fp"], m["fn"]), (4, 1, 1))
    assert_close(m["jaccard_pct"], 100 * 4 / 6, eps=1e-9)
    assert_close(m["precision_pct"], 80.0, eps=1e-9); assert_close(m["recall_pct"], 80.0, eps=1e-9)
    assert_close(m["rmse_nm"], math.sqrt((30 ** 2 + 40 ** 2) / 4), eps=1e-9)
    assert_close((m["rmse_x_nm"], m["rmse_y_nm"]), (math.sqrt(30 ** 2 / 4), math.sqrt(40 ** 2 / 4)), eps=1e-9)
    assert_close((m["mean_dx_nm"], m["mean_dy_nm"]), (7.5, 10.0), eps=1e-9)
    assert_close(m["efficiency_pct"], efficiency(m["jaccard_pct"], m["rmse_nm"]), eps=1e-12)
    assert_eq(m["tolerance_nm"], 250.0); assert_eq(m["method"], "greedy")
    json.dumps(m, allow_nan=False)
    # the tolerance and the border are parameters
    assert_eq(assess(gt, locs, (3000, 3000), tolerance_nm=35)["tp"], 3)
    assert_eq(assess(gt, locs, (3000, 3000), border_nm=1001)["n_ground_truth"], 0)


def test_assess_accepts_other_indexes_and_refuses_bad_input():
    gt = table([1, 1], [1000, 2000], [1000, 1000], index=["a", "b"])
    locs = table([1], [1010], [1000], index=[42])
    m = assess(gt, locs, (3000, 3000), crlb_nm=pd.Series([3.0, 4.0], index=["a", "b"]).to_numpy())
    assert_eq(m["tp"], 1); assert_close(m["crlb_nm"], 3 * math.sqrt(2), eps=1e-12)
    assert_close(m["rmse_over_crlb"], 10 / (3 * math.sqrt(2)), eps=1e-12)
    with pytest.raises(ValueError, match="method"): assess(gt, locs, (3000, 3000), method="nearest")
    with pytest.raises(ValueError, match="tolerance_nm"): assess(gt, locs, (3000, 3000), tolerance_nm=0)
    with pytest.raises(ValueError, match="'frame'"): assess(gt.drop(columns="frame"), locs, (3000, 3000))
    with pytest.raises(ValueError, match="crlb_nm"): assess(gt, locs, (3000, 3000), crlb_nm=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="crlb_nm"): assess(gt, locs, (3000, 3000), crlb_nm="uncertainty [nm]")


def test_assess_refuses_what_the_csv_reader_refuses():
    gt = table([1, 2], [1000, 2000], [1000, 1000])
    bad = {"has 0 in data row 2; ThunderSTORM frames are numbered from 1": gt.assign(frame=[1, 0]),
           "has 1.5 in data row 1; ThunderSTORM frames are whole numbers": gt.assign(frame=[1.5, 2]),
           r"'x \[nm\]' has a missing or non-finite value \(nan\) in data row 2": gt.assign(**{"x [nm]": [1000, np.nan]}),
           r"'y \[nm\]' has a missing or non-finite value \(inf\)": gt.assign(**{"y [nm]": [np.inf, 1000]})}
    for message, t in bad.items():
        with pytest.raises(ValueError, match="^localizations: column .*" + message): assess(gt, t, (3000, 3000))
        with pytest.raises(ValueError, match="^ground_truth: column .*" + message): assess(t, gt, (3000, 3000))
    assert_eq(assess(gt.assign(frame=[1.0, 2.0]), gt, (3000, 3000))["jaccard_pct"], 100.0)   # whole floats are frames


def test_ground_truth_crlb_follows_the_simulator():
    gt = pd.DataFrame({"intensity [photon]": [1000.0, 2000.0, 2000.0], "sigma [nm]": [100.0, 100.0, 150.0]})
    c = ground_truth_crlb(gt, background=10, pixel_nm=100)
    assert_close(c[:2], [4.1, 2.7], eps=0.05)                                 # REFERENCE §3's worked values
    assert_close(c[2], crlb(2000, 10, 150, 100), eps=1e-12)
    assert_close(ground_truth_crlb(gt, 10, 100, excess_noise=2), c * math.sqrt(2), eps=1e-9)
    assert_close(ground_truth_crlb(gt, 10, 100, qe=0.9)[0], crlb(900, 9, 100, 100), eps=1e-12)
    with pytest.raises(ValueError, match="qe"): ground_truth_crlb(gt, 10, qe=0)
    with pytest.raises(ValueError, match="sigma"): ground_truth_crlb(gt.drop(columns="sigma [nm]"), 10)


def test_efficient_errors_reach_the_crlb():
    r = np.random.default_rng(9)
    n = 4000
    gt = pd.DataFrame({"frame": np.arange(n) // 10 + 1, "x [nm]": r.uniform(0, 6400, n), "y [nm]": r.uniform(0, 6400, n),
                       "sigma [nm]": 110.0, "intensity [photon]": r.uniform(500, 5000, n)})
    c = ground_truth_crlb(gt, 20, 100, excess_noise=2)
    locs = gt.assign(**{"x [nm]": gt["x [nm]"] + r.normal(size=n) * c, "y [nm]": gt["y [nm]"] + r.normal(size=n) * c})
    m = assess(gt, locs, (6400, 6400), crlb_nm=c)
    assert_close(m["rmse_over_crlb"], 1.0, eps=0.05)
    gt["crlb [nm]"] = c
    assert_close(assess(gt, locs, (6400, 6400), crlb_nm="crlb [nm]")["crlb_nm"], m["crlb_nm"], eps=1e-12)
