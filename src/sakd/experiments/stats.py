"""Statistics of results over seeds: paired gains with Student-t intervals, binomial test noise.

Pure Python (``math`` only): the Student-t quantile is the inverse of the t distribution's CDF,
``1 − I_x(df/2, 1/2) / 2`` with ``x = df / (df + t²)``, found by bisection; the regularized
incomplete beta ``I_x(a, b)`` comes from its continued fraction (modified Lentz).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

CONFIDENCE = 0.95
_CF_TINY = 1e-300
_CF_EPS = 1e-15
_CF_MAX_TERMS = 1000


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of ``I_x(a, b)`` (converges fast for ``x < (a + 1) / (a + b + 2)``)."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
    value = d
    for m in range(1, _CF_MAX_TERMS + 1):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _CF_TINY else _CF_TINY
            value *= c * d
        if abs(c * d - 1.0) < _CF_EPS:
            break
    return value


def regularized_beta(x: float, a: float, b: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)`` for ``0 <= x <= 1``, ``a, b > 0``."""
    if not 0.0 <= x <= 1.0 or a <= 0 or b <= 0:
        raise ValueError(f"regularized_beta needs 0 <= x <= 1 and a, b > 0 (got {x}, {a}, {b})")
    if x in (0.0, 1.0):
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"t_cdf needs df > 0 (got {df})")
    tail = 0.5 * regularized_beta(df / (df + t * t), df / 2.0, 0.5)
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``0 < p < 1``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile needs 0 < p < 1 (got {p})")
    if df <= 0:
        raise ValueError(f"t_quantile needs df > 0 (got {df})")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, high * 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low <= 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


def t_critical(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided critical value: ``t`` with P(|T| <= t) = ``confidence`` (df=4, 95 %: 2.776)."""
    return t_quantile(0.5 + confidence / 2.0, df)


@dataclass(frozen=True)
class PairedGain:
    """``a − b`` paired by seed: mean, sample sd, a Student-t interval, the pairs and the unpaired.

    ``sd`` is None below two pairs, the interval (``low``, ``high``) too; ``unpaired`` counts the
    seeds present in only one of the two cells (dropped from the statistic).
    """

    n: int
    mean: float | None
    sd: float | None
    low: float | None
    high: float | None
    unpaired: int = 0
    confidence: float = CONFIDENCE

    @property
    def half_width(self) -> float | None:
        """Half the interval's width (None without an interval)."""
        return None if self.low is None or self.high is None else (self.high - self.low) / 2.0

    @property
    def includes_zero(self) -> bool | None:
        """Whether the interval contains 0 (None without an interval)."""
        return None if self.low is None or self.high is None else self.low <= 0.0 <= self.high

    def text(self) -> str:
        """``+0.40 ± 0.55, 95 % CI [−0.28, +1.08], n = 5`` (``+0.40, n = 1, no interval``; ``–``)."""
        if self.mean is None:
            found = "no seed in both cells" if self.unpaired else ""
            return f"– ({found})" if found else "–"
        dropped = f"; {self.unpaired} unpaired seed(s) dropped" if self.unpaired else ""
        if self.sd is None or self.low is None or self.high is None:
            return f"{self.mean:+.2f} (n = {self.n}, no interval{dropped})"
        percent = f"{self.confidence * 100:g} %"
        return (
            f"{self.mean:+.2f} ± {self.sd:.2f}, {percent} CI [{self.low:+.2f}, {self.high:+.2f}], "
            f"n = {self.n}{dropped}"
        )


def paired_gain(
    a: Mapping[int, float], b: Mapping[int, float], confidence: float = CONFIDENCE
) -> PairedGain:
    """``a[seed] − b[seed]`` over the seeds in both: mean, sd and the Student-t interval."""
    common = sorted(set(a) & set(b))
    unpaired = len(set(a) ^ set(b))
    diffs = [a[s] - b[s] for s in common]
    if not diffs:
        return PairedGain(0, None, None, None, None, unpaired, confidence)
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return PairedGain(1, mean, None, None, None, unpaired, confidence)
    sd = statistics.stdev(diffs)
    half = t_critical(len(diffs) - 1, confidence) * sd / math.sqrt(len(diffs))
    return PairedGain(len(diffs), mean, sd, mean - half, mean + half, unpaired, confidence)


def binomial_se(top1: float, test_size: int) -> float:
    """Standard error, in points, of a top-1 of ``top1`` % measured on ``test_size`` images."""
    if test_size <= 0:
        raise ValueError(f"binomial_se needs a positive test-set size (got {test_size})")
    if not 0.0 <= top1 <= 100.0:
        raise ValueError(f"binomial_se needs a top-1 in % between 0 and 100 (got {top1})")
    p = top1 / 100.0
    return 100.0 * math.sqrt(p * (1.0 - p) / test_size)


def binomial_note(top1: float, test_size: int) -> str:
    """One sentence on the test set's own sampling noise at accuracy ``top1``."""
    se = binomial_se(top1, test_size)
    return (
        f"Test-set noise: at {top1:.1f} % top-1 on {test_size:,} test images the binomial "
        f"standard error of one accuracy is {se:.2f} points (two independent accuracies: "
        f"{se * math.sqrt(2):.2f} points on their difference); gains below that are not resolved "
        "by this test set."
    )
