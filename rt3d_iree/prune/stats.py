"""Paired statistics for `rt3d prune-table`: is one pruned model really better than another?

Two pruned models are evaluated on the same validation clips, so their accuracies are
paired: the clips both get right or both get wrong say nothing about which is better.
McNemar's test looks only at the discordant clips (b: the first right, the second wrong;
c: the reverse). Under "no difference" every discordant clip is a fair coin, so the exact
two-sided p-value is a binomial tail, computed here with ``math.comb`` (no SciPy needed).

Seeds are pooled by adding their discordant counts, each seed compared with itself (its
own dense model, data and clips): the pairing stays within a seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

ALPHA = 0.05


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value for ``b`` and ``c`` discordant pairs.

    It is twice the binomial(b + c, 1/2) tail at min(b, c), capped at 1; with no discordant
    pair there is no evidence either way (p = 1).
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0 (got b={b}, c={c})")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)  # integer true division: exact, no overflow for large n


def discordant(first: Sequence[int] | str, second: Sequence[int] | str) -> tuple[int, int]:
    """(b, c): clips only ``first`` got right, and clips only ``second`` got right.

    Accepts 0/1 sequences or bitstrings ("0110..."), as the table's JSON stores them; the
    two must cover the same clips, so a length mismatch is an error rather than a truncation.
    """
    a, s = _bits(first), _bits(second)
    if len(a) != len(s):
        raise ValueError(f"paired correctness vectors differ in length ({len(a)} vs {len(s)} clips)")
    b = sum(1 for x, y in zip(a, s, strict=True) if x and not y)
    c = sum(1 for x, y in zip(a, s, strict=True) if y and not x)
    return b, c


def _bits(v: Sequence[int] | str) -> list[int]:
    if isinstance(v, str):
        if set(v) - {"0", "1"}:
            raise ValueError("a correctness bitstring holds only '0' and '1'")
        return [ch == "1" for ch in v]
    return [int(bool(x)) for x in v]


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value: one seed has no spread)."""
    if not values:
        raise ValueError("mean_sd needs at least one value")
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def verdict(b: int, c: int, p: float, alpha: float = ALPHA) -> str:
    """How the claim "first >= second" fared: the direction of the discordant counts and
    whether McNemar's test finds it significant at ``alpha``. A tie is consistent with the
    claim; a reversal that is not significant is reported as such, not as a refutation."""
    if b >= c:
        return "holds" if p < alpha and b > c else "holds, not significant"
    return "reversed" if p < alpha else "reversed, not significant"


@dataclass(frozen=True)
class Comparison:
    """The paired test of one claim "better >= worse" over all seeds."""

    better: str
    worse: str
    seeds: int
    clips: int
    mean_diff: float  # accuracy points, better minus worse, mean over seeds
    per_seed_diff: tuple[float, ...]
    b: int  # clips only `better` got right (pooled over seeds)
    c: int  # clips only `worse` got right
    p: float
    verdict: str


def compare(better: str, worse: str, pairs: Sequence[tuple[str, str]], alpha: float = ALPHA) -> Comparison:
    """Test "better >= worse" from per-seed (better, worse) correctness bitstrings."""
    if not pairs:
        raise ValueError("compare needs at least one seed's pair of correctness vectors")
    b = c = clips = 0
    diffs = []
    for first, second in pairs:
        bs, cs = discordant(first, second)
        n = len(first)
        b, c, clips = b + bs, c + cs, clips + n
        diffs.append(100.0 * (bs - cs) / max(n, 1))
    p = mcnemar_exact(b, c)
    return Comparison(better, worse, len(pairs), clips, sum(diffs) / len(diffs), tuple(diffs), b, c, p,
                      verdict(b, c, p, alpha))
