"""How every number a user reads is written, in the terminal and in report.html: one rule, here.

- counts and token counts: whole, with thousands separators (``12,345``);
- dollars: ``$`` and two decimals from $1 up (``$1,234.50``), four below (``$0.0108``); an amount
  so small that four decimals would show nothing is ``<$0.0001`` (an AWS cost of a few requests),
  so a cost is never shown as zero when it is not, and a column of dollars keeps its width;
  zero is ``$0``;
- percentages: one decimal (``62.5%``), and ``<0.1%`` for a share too small to show but not zero.

Prices per million tokens are rates, not amounts: they are written as the price table gives them
(``$0.075 in``), not rounded to this rule.
"""

from __future__ import annotations

NOTHING = "—"  # a figure that is not known


def count(value: object) -> str:
    """A number of things (lines, requests, tokens, shards): 12,345."""
    return f"{int(value or 0):,}"


def usd(value: float | None) -> str:
    """US dollars: $1,234.50, $0.0108, <$0.0001, $0."""
    if value is None:
        return NOTHING
    amount = float(value)
    sign, amount = ("-" if amount < 0 else ""), abs(amount)
    if amount == 0:
        return "$0"
    if amount >= 0.99995:  # $1.00 and up (what four decimals would round to $1.0000 included)
        return f"{sign}${amount:,.2f}"
    if amount >= 0.00005:  # four decimals show it
        return f"{sign}${amount:.4f}"
    return f"{sign}<$0.0001"


def percent(fraction: float | None) -> str:
    """A share, given as a fraction (0.625 for 62.5%): one decimal."""
    if fraction is None:
        return NOTHING
    share = 100 * float(fraction)
    if 0 < abs(share) < 0.05:
        return "<0.1%"
    return f"{share:.1f}%"
