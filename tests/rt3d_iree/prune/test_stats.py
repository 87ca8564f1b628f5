"""The paired statistics behind `rt3d prune-table`'s orderings: exact McNemar p-values against
known values, discordant counts, pooling over seeds, and the verdicts."""

from __future__ import annotations

import math

import pytest

from rt3d_iree.prune.stats import compare, discordant, mcnemar_exact, mean_sd, verdict


@pytest.mark.parametrize("b,c,p", [
    (10, 2, 0.03857),   # 2 * (1 + 12 + 66) / 4096
    (2, 10, 0.03857),   # symmetric
    (5, 5, 1.0),        # no evidence either way
    (0, 0, 1.0),        # no discordant clip at all
    (6, 0, 0.03125),    # 2 / 64: the smallest n that can reach p < 0.05
    (5, 0, 0.0625),     # one fewer cannot
    (20, 10, 0.09874),  # R: binom.test(20, 30)$p.value
])
def test_mcnemar_exact_known_values(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, abs=5e-5)


def test_mcnemar_exact_large_counts_stay_finite_and_tiny():
    p = mcnemar_exact(900, 600)
    assert 0.0 < p < 1e-13 and math.isfinite(p)


def test_mcnemar_rejects_negative_counts():
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def test_discordant_counts_bitstrings_and_lists_alike():
    assert discordant("1100", "1010") == (1, 1)
    assert discordant([1, 1, 1, 0], [0, 0, 1, 1]) == (2, 1)
    with pytest.raises(ValueError):
        discordant("110", "1100")
    with pytest.raises(ValueError):
        discordant("1x0", "110")


def test_mean_sd_is_the_sample_sd_and_none_for_one_seed():
    m, sd = mean_sd([80.0, 84.0])
    assert m == 82.0 and sd == pytest.approx(math.sqrt(8.0))
    assert mean_sd([71.5]) == (71.5, None)


def test_verdicts():
    assert verdict(10, 2, mcnemar_exact(10, 2)) == "holds"
    assert verdict(3, 2, mcnemar_exact(3, 2)) == "holds, not significant"
    assert verdict(4, 4, 1.0) == "holds, not significant"
    assert verdict(2, 3, mcnemar_exact(2, 3)) == "reversed, not significant"
    assert verdict(2, 10, mcnemar_exact(2, 10)) == "reversed"


def test_compare_pools_discordant_pairs_over_seeds():
    # Seed 0: A alone right on 4 clips, B alone on 1 (of 10). Seed 1: A alone on 6, B alone on 1.
    seed0 = ("1111000000", "0000100000")
    seed1 = ("1111110000", "0000001000")
    cmp = compare("A", "B", [seed0, seed1])
    assert (cmp.b, cmp.c, cmp.seeds, cmp.clips) == (10, 2, 2, 20)
    assert cmp.p == pytest.approx(mcnemar_exact(10, 2))
    assert cmp.per_seed_diff == pytest.approx((30.0, 50.0)) and cmp.mean_diff == pytest.approx(40.0)
    assert cmp.verdict == "holds"
    # The same evidence read the other way round is a significant reversal.
    assert compare("B", "A", [(s[1], s[0]) for s in (seed0, seed1)]).verdict == "reversed"
