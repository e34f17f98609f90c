"""The one way numbers are written for a reader: counts, dollars and percentages, terminal and report alike."""

from __future__ import annotations

import pytest
from batchline.presentation.numbers import count, percent, usd


@pytest.mark.parametrize(("value", "shown"), [(0, "0"), (7, "7"), (12345, "12,345"), (1_234_567_890, "1,234,567,890")])
def test_counts_and_tokens_have_thousands_separators(value, shown):
    assert count(value) == shown


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (1234.5, "$1,234.50"),  # from $1 up: cents
        (1, "$1.00"),
        (0.99996, "$1.00"),  # what would read $1.0000 is a dollar
        (0.010766, "$0.0108"),  # under $1: four decimals
        (0.00107698, "$0.0011"),
        (0.00002588, "<$0.0001"),  # four decimals would say $0.0000: it is not nothing
        (0.00000012, "<$0.0001"),
        (0, "$0"),
        (-0.25, "-$0.2500"),
        (None, "—"),
    ],
)
def test_dollars_show_cents_from_a_dollar_up_four_decimals_below_and_never_a_false_zero(amount, shown):
    assert usd(amount) == shown


@pytest.mark.parametrize(
    ("fraction", "shown"), [(0.625, "62.5%"), (0.100036, "10.0%"), (1, "100.0%"), (0, "0.0%"), (0.0001, "<0.1%")]
)
def test_percentages_have_one_decimal_and_a_tiny_share_is_not_shown_as_zero(fraction, shown):
    assert percent(fraction) == shown
