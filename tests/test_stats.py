"""bench.stats against reference values.

The reference numbers were computed once, offline, with scipy 1.17.1 and numpy (scipy.stats.t.ppf,
scipy.stats.t.cdf, scipy.stats.t.interval, numpy.percentile, scipy.stats.mannwhitneyu with
method='exact' or method='asymptotic') and are hard-coded: the tests never import scipy.
"""
from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.stats import (
    Summary,
    betainc,
    cv,
    mann_whitney_u,
    mean,
    mean_ci,
    min_achievable_p,
    mwu_method,
    percentile,
    stdev,
    t_cdf,
    t_quantile,
)

# --- Student's t -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("df", "table_value", "scipy_value"),
    [
        (1, 12.706, 12.706204736174694),
        (2, 4.303, 4.302652729749462),
        (4, 2.776, 2.7764451051977934),
        (10, 2.228, 2.228138851986274),
        (30, 2.042, 2.0422724563012378),
    ],
)
def test_t_quantile_matches_the_printed_table_and_scipy(df, table_value, scipy_value):
    q = t_quantile(0.975, df)
    assert q == pytest.approx(table_value, abs=5e-4)
    assert q == pytest.approx(scipy_value, rel=1e-12)


def test_t_quantile_and_cdf_match_scipy_off_the_usual_points():
    assert t_quantile(0.995, 7) == pytest.approx(3.4994832973504924, rel=1e-12)
    assert t_cdf(-1.5, 3) == pytest.approx(0.11529193262241147, rel=1e-12)
    assert t_cdf(2.5, 12.5) == pytest.approx(0.9863883710683061, rel=1e-12)


def test_t_quantile_is_antisymmetric_and_zero_at_the_median():
    assert t_quantile(0.5, 5) == 0.0
    assert t_quantile(0.025, 5) == pytest.approx(-t_quantile(0.975, 5), rel=1e-14)


@given(
    p=st.floats(min_value=1e-6, max_value=1 - 1e-6),
    df=st.floats(min_value=0.5, max_value=500),
)
def test_t_cdf_inverts_t_quantile(p, df):
    assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, rel=1e-9, abs=1e-12)


def test_betainc_has_its_closed_forms():
    # I_x(1, 1) = x and I_x(a, 1) = x**a.
    assert betainc(1, 1, 0.3) == pytest.approx(0.3, rel=1e-14)
    assert betainc(2.5, 1, 0.6) == pytest.approx(0.6**2.5, rel=1e-13)
    assert betainc(3, 4, 0.0) == 0.0 and betainc(3, 4, 1.0) == 1.0


def test_t_functions_reject_impossible_arguments():
    with pytest.raises(ValueError):
        t_quantile(1.5, 3)
    with pytest.raises(ValueError):
        t_quantile(0.9, 0)
    with pytest.raises(ValueError):
        t_cdf(1.0, -1)


# --- summaries ---------------------------------------------------------------------------------


def test_mean_ci_matches_scipy_t_interval():
    s = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert isinstance(s, Summary)
    assert (s.n, s.mean, s.min, s.max) == (5, 3.0, 1.0, 5.0)
    assert s.sd == pytest.approx(math.sqrt(2.5), rel=1e-14)
    assert (s.lo, s.hi) == pytest.approx((1.0367568385224428, 4.963243161477557), rel=1e-12)
    assert s.half_width == pytest.approx(s.hi - s.mean, rel=1e-12)


def test_mean_ci_honours_the_confidence_level():
    decode_tps = [101.2, 99.8, 100.5, 100.9, 99.4, 100.2]
    s = mean_ci(decode_tps, level=0.90)
    assert s.level == 0.90
    assert s.sd == pytest.approx(0.674289749786149, rel=1e-12)
    assert (s.lo, s.hi) == pytest.approx((99.77863557741708, 100.88803108924958), rel=1e-12)
    assert mean_ci(decode_tps, 0.99).half_width > mean_ci(decode_tps, 0.95).half_width


def test_mean_ci_of_one_value_is_an_infinite_interval():
    s = mean_ci([42.0])
    assert s.n == 1 and s.mean == 42.0 and s.min == s.max == 42.0
    assert math.isnan(s.sd)
    assert s.half_width == math.inf and s.lo == -math.inf and s.hi == math.inf
    # An infinite interval overlaps everything, so it can never make a change look significant.
    assert s.overlaps(mean_ci([1000.0, 1000.1, 999.9]))


def test_mean_ci_of_no_values_raises():
    with pytest.raises(ValueError, match="no values"):
        mean_ci([])


def test_mean_ci_rejects_nan_and_bad_levels():
    with pytest.raises(ValueError, match="finite"):
        mean_ci([1.0, math.nan])
    with pytest.raises(ValueError, match="level"):
        mean_ci([1.0, 2.0], level=95)


def test_ci_overlap_is_symmetric_and_detects_separation():
    a = mean_ci([100.8, 99.6, 100.3])
    b = mean_ci([90.5, 89.9, 90.7])
    c = mean_ci([100.1, 101.0, 99.9])
    assert not a.overlaps(b) and not b.overlaps(a)
    assert a.overlaps(c) and c.overlaps(a)


def test_cv_is_sd_over_mean():
    assert cv([9.0, 10.0, 11.0]) == pytest.approx(0.1, rel=1e-14)
    assert cv([-9.0, -10.0, -11.0]) == pytest.approx(0.1, rel=1e-14)


def test_cv_is_nan_where_it_means_nothing():
    assert math.isnan(cv([5.0]))
    assert math.isnan(cv([]))
    assert math.isnan(cv([-1.0, 1.0]))


# --- percentile --------------------------------------------------------------------------------

LATENCIES_MS = [12.5, 11.9, 13.4, 12.1, 15.8, 12.0, 11.7, 12.9, 30.2, 12.3, 12.6]


@pytest.mark.parametrize(
    ("q", "numpy_value"),
    [(0, 11.7), (10, 11.9), (50, 12.5), (90, 15.8), (99, 28.760000000000005), (100, 30.2),
     (37.5, 12.25)],
)
def test_percentile_interpolates_linearly_like_numpy(q, numpy_value):
    assert percentile(LATENCIES_MS, q) == pytest.approx(numpy_value, rel=1e-12)


def test_percentile_of_one_value_is_that_value():
    assert percentile([7.0], 99) == 7.0


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50), st.floats(0, 100),
       st.floats(0, 100))
def test_percentile_is_monotone_in_q_and_within_the_range(values, q1, q2):
    lo, hi = sorted((q1, q2))
    assert min(values) <= percentile(values, lo) <= percentile(values, hi) <= max(values)


def test_percentile_rejects_no_values_and_q_outside_0_100():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 100.5)
    with pytest.raises(ValueError):
        percentile([1.0], -1)


# --- Mann-Whitney U ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "y", "u", "p"),
    [
        ([1.1, 2.2, 3.3], [4.4, 5.5, 6.6, 7.7], 0.0, 0.05714285714285714),
        ([101.2, 99.8, 100.5, 100.9, 99.4, 100.2], [91.08, 89.82, 90.45, 90.81, 89.46, 90.18],
         36.0, 0.0021645021645021645),
        ([3.1, 5.2, 1.7, 8.4, 6.6, 2.9, 7.3], [4.0, 9.1, 5.9, 7.7, 8.8], 8.0, 0.148989898989899),
        ([i + 0.5 for i in range(20)], [2.0 * i + 1 for i in range(20)], 100.0,
         0.006144955649235766),
    ],
)
def test_mann_whitney_exact_matches_scipy_exact(x, y, u, p):
    assert mwu_method(x, y) == "exact"
    got_u, got_p = mann_whitney_u(x, y)
    assert got_u == u
    assert got_p == pytest.approx(p, rel=1e-12)


@pytest.mark.parametrize(
    ("x", "y", "u", "p"),
    [
        ([1, 2, 2, 3, 3, 3, 4], [3, 4, 4, 5, 5, 6], 3.5, 0.012999854364387305),
        ([10, 10, 10, 12, 12, 14], [11, 12, 12, 13, 15, 15, 16], 8.0, 0.06819962823319524),
        (list(range(25)), [i + 0.5 for i in range(5, 30)], 190.0, 0.017925777357406476),
    ],
)
def test_mann_whitney_asymptotic_matches_scipy_with_ties_and_continuity(x, y, u, p):
    assert mwu_method(x, y) == "asymptotic"  # ties, or more than 20 values on a side
    got_u, got_p = mann_whitney_u(x, y)
    assert got_u == u
    assert got_p == pytest.approx(p, rel=1e-10)


def test_mann_whitney_of_identical_constant_samples_is_not_significant():
    assert mann_whitney_u([5.0, 5.0, 5.0], [5.0, 5.0]) == (3.0, 1.0)


def test_mann_whitney_exact_refuses_ties():
    with pytest.raises(ValueError, match="ties"):
        mann_whitney_u([1.0, 2.0], [2.0, 3.0], method="exact")


def test_mann_whitney_needs_values_on_both_sides():
    with pytest.raises(ValueError):
        mann_whitney_u([], [1.0])


@given(
    st.lists(st.integers(-20, 20), min_size=1, max_size=12),
    st.lists(st.integers(-20, 20), min_size=1, max_size=12),
)
def test_mann_whitney_u_of_both_sides_adds_up_and_p_is_symmetric(x, y):
    u1, p1 = mann_whitney_u(x, y)
    u2, p2 = mann_whitney_u(y, x)
    assert u1 + u2 == len(x) * len(y)
    assert p1 == pytest.approx(p2, rel=1e-12)
    assert 0.0 < p1 <= 1.0


@given(st.integers(1, 20), st.integers(1, 20))
def test_complete_separation_reaches_the_minimum_achievable_p(n1, n2):
    x = [float(i) for i in range(n1)]
    y = [float(n1 + j) for j in range(n2)]
    _, p = mann_whitney_u(x, y)
    assert p == pytest.approx(min_achievable_p(n1, n2), rel=1e-12)


def test_min_achievable_p_decides_whether_the_exact_test_can_reach_alpha():
    assert min_achievable_p(3, 3) == pytest.approx(0.1)  # 2 / C(6, 3): never below 0.05
    assert min_achievable_p(3, 4) == pytest.approx(2 / 35)
    assert min_achievable_p(4, 4) == pytest.approx(2 / 70)
    assert min_achievable_p(0, 5) == 1.0
    assert min_achievable_p(1, 1) == 1.0


# --- the difference of two means ---------------------------------------------------------------


def test_welch_df_equals_the_pooled_df_for_equal_spreads_and_sizes():
    from bench.stats import welch_df

    assert welch_df(2.0, 6, 2.0, 6) == pytest.approx(10.0)
    # Unequal spreads: Welch's df lies between the smaller n - 1 and n1 + n2 - 2.
    df = welch_df(1.0, 5, 4.0, 8)
    assert 4.0 < df < 11.0


def test_diff_ci_matches_the_formula_and_covers_zero_for_one_sample_twice():
    from bench.stats import diff_ci, t_quantile, welch_df

    base = [100.0, 101.5, 99.2, 100.8, 99.9]
    cand = [95.1, 96.0, 94.2, 95.7, 94.9, 95.5]
    diff, half = diff_ci(base, cand)
    sb, sc = stdev(base), stdev(cand)
    se = math.sqrt(sb**2 / 5 + sc**2 / 6)
    assert diff == pytest.approx(mean(cand) - mean(base))
    assert half == pytest.approx(t_quantile(0.975, welch_df(sb, 5, sc, 6)) * se)
    assert diff + half < 0  # a clear slowdown: the interval excludes zero
    d2, h2 = diff_ci(base, base)
    assert d2 == 0.0 and h2 > 0
    with pytest.raises(ValueError):
        diff_ci([1.0], [1.0, 2.0])


def test_change_pct_ci_is_the_difference_interval_relative_to_the_baseline():
    from bench.stats import change_pct_ci, diff_ci

    base, cand = [10.0, 10.2, 9.8, 10.1], [11.0, 11.1, 10.9, 11.2]
    pct, half = change_pct_ci(base, cand)
    diff, dhalf = diff_ci(base, cand)
    assert pct == pytest.approx(diff / mean(base) * 100)
    assert half == pytest.approx(dhalf / mean(base) * 100)
    with pytest.raises(ValueError, match="zero"):
        change_pct_ci([0.0, 0.0], [1.0, 2.0])
