"""The statistics of results: Student-t quantiles, paired gains by seed, binomial test noise."""

from __future__ import annotations

import math

import pytest

from sakd.experiments.stats import (
    binomial_note,
    binomial_se,
    paired_gain,
    regularized_beta,
    t_cdf,
    t_critical,
    t_quantile,
)


@pytest.mark.parametrize(
    ("df", "expected"),
    [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (29, 2.045), (100, 1.984)],
)
def test_t_critical_matches_the_printed_table(df, expected):
    assert t_critical(df) == pytest.approx(expected, abs=5e-4)


def test_t_critical_tends_to_the_normal_quantile():
    assert t_critical(10**7) == pytest.approx(1.959964, abs=1e-5)


def test_t_quantile_closed_forms():
    # df=1 is the Cauchy distribution: quantile tan(pi (p - 1/2)); df=2: (2p-1) / sqrt(2p(1-p)).
    for p in (0.6, 0.9, 0.975, 0.995):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)
    assert t_quantile(0.025, 4) == pytest.approx(-t_quantile(0.975, 4))
    assert t_quantile(0.5, 7) == pytest.approx(0.0, abs=1e-9)


def test_t_cdf_and_regularized_beta_closed_forms():
    assert t_cdf(0.0, 5) == pytest.approx(0.5)
    assert t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: 1/2 + atan(1)/pi
    for x in (0.1, 0.5, 0.93):
        assert regularized_beta(x, 1, 1) == pytest.approx(x)
        assert regularized_beta(x, 3, 1) == pytest.approx(x**3)
        assert regularized_beta(x, 1, 2.5) == pytest.approx(1 - (1 - x) ** 2.5)


@pytest.mark.parametrize("bad", [(0.0, 3), (1.0, 3), (0.9, 0)])
def test_t_quantile_refuses_bad_input(bad):
    with pytest.raises(ValueError, match="t_quantile needs"):
        t_quantile(*bad)


def test_paired_gain_of_three_seeds_by_hand():
    # differences 1, 2, 3: mean 2, sd 1, half width 4.30265 / sqrt(3) = 2.48414
    gain = paired_gain({0: 81.0, 1: 82.0, 2: 83.0}, {0: 80.0, 1: 80.0, 2: 80.0})
    assert (gain.n, gain.unpaired) == (3, 0)
    assert gain.mean == pytest.approx(2.0)
    assert gain.sd == pytest.approx(1.0)
    assert gain.low == pytest.approx(2.0 - 2.48414, abs=1e-4)
    assert gain.high == pytest.approx(2.0 + 2.48414, abs=1e-4)
    assert gain.includes_zero is True
    assert gain.text() == "+2.00 ± 1.00, 95 % CI [-0.48, +4.48], n = 3"


def test_paired_gain_excluding_zero():
    # differences 0.5, 0.7, 0.6, 0.8, 0.4: mean 0.6, sd 0.15811, half 2.776 * 0.15811 / sqrt(5)
    gain = paired_gain(
        {s: 80 + d for s, d in enumerate([0.5, 0.7, 0.6, 0.8, 0.4])}, dict.fromkeys(range(5), 80.0)
    )
    assert gain.sd == pytest.approx(0.158114, abs=1e-6)
    assert gain.half_width == pytest.approx(0.19632, abs=1e-4)
    assert gain.includes_zero is False


def test_paired_gain_of_two_seeds_uses_df_one():
    # differences 1 and 3: mean 2, sd sqrt(2), half width 12.706 * sqrt(2) / sqrt(2) = 12.706
    gain = paired_gain({0: 71.0, 1: 73.0}, {0: 70.0, 1: 70.0})
    assert gain.n == 2
    assert gain.sd == pytest.approx(math.sqrt(2))
    assert gain.low == pytest.approx(2 - 12.7062, abs=1e-3)
    assert gain.high == pytest.approx(2 + 12.7062, abs=1e-3)


def test_paired_gain_of_one_seed_has_no_interval():
    gain = paired_gain({0: 84.8}, {0: 83.2})
    assert (gain.n, gain.sd, gain.low, gain.high, gain.includes_zero) == (1, None, None, None, None)
    assert gain.mean == pytest.approx(1.6)
    assert gain.text() == "+1.60 (n = 1, no interval)"


def test_paired_gain_pairs_only_common_seeds_and_counts_the_rest():
    # seeds 1 and 2 pair (differences 2 and 4); seed 0 (only in a) and seed 3 (only in b) drop
    gain = paired_gain({0: 50.0, 1: 62.0, 2: 64.0}, {1: 60.0, 2: 60.0, 3: 10.0})
    assert (gain.n, gain.unpaired) == (2, 2)
    assert gain.mean == pytest.approx(3.0)
    assert gain.text().endswith("n = 2; 2 unpaired seed(s) dropped")


def test_paired_gain_without_common_seeds():
    assert paired_gain({}, {}).text() == "–"
    gain = paired_gain({0: 1.0}, {1: 2.0})
    assert (gain.n, gain.mean, gain.unpaired) == (0, None, 2)
    assert gain.text() == "– (no seed in both cells)"


def test_binomial_se_by_hand():
    # sqrt(0.85 * 0.15 / 1000) = 0.011292 -> 1.13 points
    assert binomial_se(85.0, 1000) == pytest.approx(1.1292, abs=1e-4)
    assert binomial_se(50.0, 100) == pytest.approx(5.0)
    assert binomial_se(100.0, 500) == 0.0
    assert "1.13 points" in binomial_note(85.0, 1000)
    assert "1,000 test images" in binomial_note(85.0, 1000)


@pytest.mark.parametrize(("top1", "size"), [(85.0, 0), (101.0, 1000), (-1.0, 10)])
def test_binomial_se_refuses_bad_input(top1, size):
    with pytest.raises(ValueError, match="binomial_se needs"):
        binomial_se(top1, size)
