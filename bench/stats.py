"""Statistics for benchmark samples: summaries, Student's t intervals, percentiles, Mann-Whitney U.

Standard library only, so the runner, the reports and `compare` share one implementation that
installs nowhere it should not. Every function checks its inputs and says what was wrong.

Conventions:
- `mean_ci` of no values raises `ValueError`; of one value it returns `sd = nan` and an infinite
  interval (`half_width = inf`, `lo = -inf`, `hi = inf`): one trial says nothing about spread, and
  an infinite interval overlaps everything, so it can never make a difference look significant.
- `percentile` takes `q` in percent (0..100) and interpolates linearly, like numpy's default.
- `mann_whitney_u` returns the U of the first sample and a two-sided p-value: exact when both
  samples have at most `EXACT_MAX_N` values and there are no ties, otherwise the normal
  approximation with tie and continuity corrections (as scipy's `method="asymptotic"`).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

# Largest sample size (each side) for which the exact Mann-Whitney distribution is used.
EXACT_MAX_N = 20

MwuMethod = Literal["exact", "asymptotic"]


def _finite(values: Iterable[float], what: str = "values") -> list[float]:
    out = [float(v) for v in values]
    for v in out:
        if not math.isfinite(v):
            raise ValueError(f"{what} must be finite numbers, got {v!r}")
    return out


# --------------------------------------------------------------------------------------------
# Student's t distribution


def _betacf(a: float, b: float, x: float) -> float:
    # Continued fraction for the incomplete beta function (modified Lentz's method).
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = tiny if abs(d) < tiny else d
    d = 1.0 / d
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = tiny if abs(d) < tiny else d
        c = 1.0 + aa / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = tiny if abs(d) < tiny else d
        c = 1.0 + aa / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            return h
    raise ArithmeticError(f"incomplete beta did not converge (a={a}, b={b}, x={x})")


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if a <= 0 or b <= 0:
        raise ValueError(f"betainc needs a > 0 and b > 0, got a={a}, b={b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc needs 0 <= x <= 1, got x={x}")
    if x == 0.0 or x == 1.0:
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    # The continued fraction converges fast for x < (a+1)/(a+b+2); use the symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    t2 = t * t
    if t2 < df:
        # Near the centre x = df/(df+t²) is close to 1, where I_x(df/2, 1/2) loses digits; the
        # symmetric form I_{1-x}(1/2, df/2) = P(|T| < |t|) keeps them.
        inner = 0.5 * betainc(0.5, df / 2.0, t2 / (df + t2))  # P(0 < T < |t|)
        return 0.5 + inner if t >= 0 else 0.5 - inner
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t2))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t such that P(T <= t) = p, for Student's t with `df` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if not 0.0 < p < 1.0:
        if p == 0.0:
            return -math.inf
        if p == 1.0:
            return math.inf
        raise ValueError(f"probability must be in [0, 1], got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    # Closed forms where they exist; bisection on the monotone cdf otherwise. Bisection is slow
    # by numeric standards (about 100 steps) but cannot fail, and this runs a few times per report.
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2.0 * p - 1.0) / math.sqrt(2.0 * p * (1.0 - p))
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def normal_sf(z: float) -> float:
    """P(Z > z) for the standard normal distribution."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


# --------------------------------------------------------------------------------------------
# Summaries


@dataclass(frozen=True)
class Summary:
    """Mean and Student's t confidence interval of a sample (`lo = mean - half_width`)."""

    n: int
    mean: float
    sd: float  # sample standard deviation (n - 1); nan when n == 1
    half_width: float  # inf when n == 1
    lo: float
    hi: float
    min: float
    max: float
    level: float = 0.95

    def overlaps(self, other: Summary) -> bool:
        """True when the two confidence intervals share at least one point."""
        return self.lo <= other.hi and other.lo <= self.hi


def mean(values: Sequence[float]) -> float:
    xs = _finite(values)
    if not xs:
        raise ValueError("mean of no values")
    return math.fsum(xs) / len(xs)


def stdev(values: Sequence[float]) -> float:
    """Sample standard deviation (divisor n - 1); nan for a single value."""
    xs = _finite(values)
    if not xs:
        raise ValueError("standard deviation of no values")
    if len(xs) == 1:
        return math.nan
    m = math.fsum(xs) / len(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def mean_ci(values: Sequence[float], level: float = 0.95) -> Summary:
    """Mean with a two-sided Student's t confidence interval at `level`.

    Raises `ValueError` for no values. One value gives `sd = nan` and an infinite interval.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be between 0 and 1, got {level}")
    xs = _finite(values)
    n = len(xs)
    if n == 0:
        raise ValueError("cannot summarise no values")
    m = math.fsum(xs) / n
    if n == 1:
        return Summary(1, m, math.nan, math.inf, -math.inf, math.inf, xs[0], xs[0], level)
    sd = stdev(xs)
    half = t_quantile(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)
    return Summary(n, m, sd, half, m - half, m + half, min(xs), max(xs), level)


def cv(values: Sequence[float]) -> float:
    """Coefficient of variation: sample sd / |mean|, as a fraction (0.02 = 2 %).

    nan for fewer than two values or a zero mean, where it means nothing.
    """
    xs = _finite(values)
    if len(xs) < 2:
        return math.nan
    m = math.fsum(xs) / len(xs)
    if m == 0.0:
        return math.nan
    return stdev(xs) / abs(m)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (q in 0..100) with linear interpolation, as numpy's default."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be between 0 and 100, got {q}")
    xs = sorted(_finite(values))
    if not xs:
        raise ValueError("percentile of no values")
    pos = (len(xs) - 1) * q / 100.0
    i = math.floor(pos)
    frac = pos - i
    if frac == 0.0 or i + 1 >= len(xs):
        return xs[i]
    return xs[i] + (xs[i + 1] - xs[i]) * frac


# --------------------------------------------------------------------------------------------
# Mann-Whitney U


def _ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    # Average ranks (1-based) and the sizes of the groups of ties.
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        avg = (i + j) / 2.0 + 1.0
        for k in range(i, j + 1):
            ranks[order[k]] = avg
        ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


@lru_cache(maxsize=256)
def _u_counts(n1: int, n2: int) -> tuple[int, ...]:
    # counts[u] = number of arrangements of n1 x's among n1 + n2 positions with statistic U = u,
    # i.e. the coefficients of the Gaussian binomial [n1 + n2 choose n1]_q. Built with
    # [n choose k]_q = [n-1 choose k-1]_q + q^k [n-1 choose k]_q, row by row over n.
    k_max = n1
    rows: list[list[int]] = [[1]] + [[0] for _ in range(k_max)]  # n = 0: [0 choose k]
    for n in range(1, n1 + n2 + 1):
        new: list[list[int]] = [[1]]
        for k in range(1, k_max + 1):
            if k > n:
                new.append([0])
                continue
            a = rows[k - 1]
            b = rows[k]
            size = max(len(a), len(b) + k)
            poly = [0] * size
            for i, c in enumerate(a):
                poly[i] += c
            for i, c in enumerate(b):
                if c:
                    poly[i + k] += c
            new.append(poly)
        rows = new
    counts = rows[k_max]
    counts = counts + [0] * (n1 * n2 + 1 - len(counts))
    return tuple(counts[: n1 * n2 + 1])


def min_achievable_p(n1: int, n2: int) -> float:
    """The smallest two-sided p-value the exact Mann-Whitney test can give: 2 / C(n1+n2, n1).

    If it is not below the chosen alpha, the exact test can never call a difference significant.
    """
    if n1 < 0 or n2 < 0:
        raise ValueError(f"sample sizes must be >= 0, got {n1} and {n2}")
    if n1 == 0 or n2 == 0:
        return 1.0
    return min(1.0, 2.0 / math.comb(n1 + n2, n1))


def mwu_method(x: Sequence[float], y: Sequence[float]) -> MwuMethod:
    """Which p-value `mann_whitney_u(x, y)` computes: exact for small samples without ties."""
    if len(x) > EXACT_MAX_N or len(y) > EXACT_MAX_N:
        return "asymptotic"
    pooled = list(x) + list(y)
    return "exact" if len(set(pooled)) == len(pooled) else "asymptotic"


def mann_whitney_u(
    x: Sequence[float], y: Sequence[float], method: MwuMethod | None = None
) -> tuple[float, float]:
    """Mann-Whitney U test: (U of x, two-sided p-value).

    U counts the pairs (xi, yj) with xi > yj, ties counting one half. `method=None` chooses
    as `mwu_method`. The exact test needs no ties; asked for with ties it raises `ValueError`.
    """
    xs = _finite(x, "x")
    ys = _finite(y, "y")
    n1, n2 = len(xs), len(ys)
    if n1 == 0 or n2 == 0:
        raise ValueError("Mann-Whitney U needs at least one value on each side")
    ranks, ties = _ranks(xs + ys)
    u1 = math.fsum(ranks[:n1]) - n1 * (n1 + 1) / 2.0
    chosen = method or mwu_method(xs, ys)
    if chosen == "exact":
        if any(t > 1 for t in ties):
            raise ValueError("the exact Mann-Whitney test needs samples without ties")
        counts = _u_counts(n1, n2)
        total = math.comb(n1 + n2, n1)
        u_big = round(max(u1, n1 * n2 - u1))
        # P(U >= u_big), doubled: the distribution is symmetric about n1*n2/2.
        p = 2.0 * sum(counts[u_big:]) / total
        return u1, min(1.0, p)
    if chosen != "asymptotic":
        raise ValueError(f"method must be 'exact' or 'asymptotic', got {method!r}")
    n = n1 + n2
    mu = n1 * n2 / 2.0
    tie_term = sum(t**3 - t for t in ties)
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if var <= 0.0:  # every value equal: no evidence of any difference
        return u1, 1.0
    z = (max(u1, n1 * n2 - u1) - mu - 0.5) / math.sqrt(var)
    return u1, min(1.0, 2.0 * normal_sf(z))


# --------------------------------------------------------------------------------------------
# The difference of two means


def welch_df(sd1: float, n1: int, sd2: float, n2: int) -> float:
    """Welch-Satterthwaite degrees of freedom for the difference of two means."""
    a, b = sd1 * sd1 / n1, sd2 * sd2 / n2
    if a + b == 0.0:
        return float(n1 + n2 - 2)
    return (a + b) ** 2 / (a * a / (n1 - 1) + b * b / (n2 - 1))


def diff_ci(
    base: Sequence[float], cand: Sequence[float], level: float = 0.95
) -> tuple[float, float]:
    """(mean(cand) - mean(base), half width of its Welch t interval at `level`).

    Raises ValueError for fewer than two values on either side (no interval).
    """
    b, c = _finite(base, "base"), _finite(cand, "cand")
    if len(b) < 2 or len(c) < 2:
        raise ValueError("a difference needs at least two values on each side")
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be between 0 and 1, got {level}")
    sb, sc = stdev(b), stdev(c)
    diff = math.fsum(c) / len(c) - math.fsum(b) / len(b)
    se = math.sqrt(sb * sb / len(b) + sc * sc / len(c))
    if se == 0.0:
        return diff, 0.0
    df = welch_df(sb, len(b), sc, len(c))
    return diff, t_quantile(0.5 + level / 2.0, df) * se


def change_pct_ci(
    base: Sequence[float], cand: Sequence[float], level: float = 0.95
) -> tuple[float, float]:
    """(change %, half width of its interval): the Welch interval of the difference of means
    relative to the baseline mean, which is taken as exact (its own spread is in the
    interval's standard error). Raises ValueError as `diff_ci`, or for a zero baseline mean."""
    diff, half = diff_ci(base, cand, level)
    m = math.fsum(base) / len(base)
    if m == 0.0:
        raise ValueError("the baseline mean is zero: no relative change")
    return diff / abs(m) * 100.0, half / abs(m) * 100.0
