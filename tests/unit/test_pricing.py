"""What a request costs: the maintained table's prices, the batch rule, the user's own prices, and refusals.

The price book's rules are walked with a hand-made table (the figures are the test's, not today's);
the last tests read the pinned genai-prices table itself, with the network off, as a run does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest
from batchline.catalog import LongContextPrice, ModelPrice
from batchline.composition import model_table, price_book
from batchline.domain.pricing import PriceBook
from batchline.domain.request_line import InvalidLine, RequestValidator, ValidRequest
from batchline.engines.tokenization import token_counter
from batchline.price_table import GenaiPricesTable
from batchline.settings import BATCH_ENDPOINTS, SettingsError, load_settings
from lines import chat


class FakeTable:
    """A maintained table of a few models, matched by exact name only."""

    source = "the fake table 1.0"

    def __init__(self, prices: dict[str, ModelPrice]) -> None:
        self._prices = prices
        self.asked: list[str] = []

    def price_for(self, model: str) -> ModelPrice | None:
        self.asked.append(model)
        return self._prices.get(model)

    def model_names(self) -> Iterable[str]:
        return list(self._prices)


MINI = ModelPrice(
    input_per_million=0.2, output_per_million=0.8, batch_input_per_million=0.1, batch_output_per_million=0.3
)
NO_BATCH_RATE = ModelPrice(input_per_million=1.0, output_per_million=3.0, encoding="cl100k_base")
FINE_TUNED = ModelPrice(input_per_million=0.4, output_per_million=1.6)
LONG = ModelPrice(
    input_per_million=2.0,
    output_per_million=10.0,
    long_context=LongContextPrice(above_prompt_tokens=1000, input_per_million=4.0, output_per_million=15.0),
)
TABLE = {"mini": MINI, "legacy": NO_BATCH_RATE, "ft:mini-2024-07-18": FINE_TUNED, "long": LONG}


def book(user: dict[str, ModelPrice] | None = None, discount: float = 0.5) -> PriceBook:
    return PriceBook(user or {}, discount, FakeTable(TABLE))


def test_a_model_in_the_table_is_priced_at_its_realtime_and_its_own_batch_rates():
    prices = book()

    assert prices.realtime_cost("mini", 1_000_000, 1_000_000) == pytest.approx(0.2 + 0.8)
    assert prices.batch_cost("mini", 1_000_000, 1_000_000) == pytest.approx(0.1 + 0.3)
    assert prices.source_of("mini") == "the fake table 1.0"


def test_where_the_table_gives_no_batch_rate_batch_costs_the_discount_times_realtime():
    assert book(discount=0.5).batch_cost("legacy", 1_000_000, 1_000_000) == pytest.approx((1.0 + 3.0) * 0.5)
    assert book(discount=0.8).batch_cost("legacy", 1_000_000, 1_000_000) == pytest.approx((1.0 + 3.0) * 0.8)


def test_a_dated_snapshot_the_table_lacks_is_priced_as_its_base_model():
    prices = book()

    assert prices.price_for("mini-2025-01-31") == MINI
    assert prices.price_for("legacy-2024-05-13").encoding == "cl100k_base"


def test_a_fine_tune_bills_at_fine_tuned_rates_and_never_at_its_cheaper_base():
    prices = book()

    assert prices.price_for("ft:mini-2024-07-18:acme::abc123") is None  # the fake table matches exact names only
    assert prices.price_for("ft:mini-2024-07-18") == FINE_TUNED
    # A fine-tune the table does not know is refused, not billed as "mini" (half its real price).
    assert prices.price_for("ft:mini:acme::abc123") is None
    message = prices.unpriced_message("ft:mini:acme::abc123")
    assert '"pricing": {"ft:mini": {"input_per_million"' in message


def test_a_price_in_the_pricing_setting_wins_over_the_table_and_prices_its_dated_snapshots_and_fine_tunes():
    mine = ModelPrice(input_per_million=5.0, output_per_million=6.0)
    tuned = ModelPrice(input_per_million=7.0, output_per_million=8.0)
    prices = book({"mini": mine, "ft:mini": tuned, "my-model": mine})

    assert prices.realtime_cost("mini", 1_000_000, 0) == pytest.approx(5.0)
    assert prices.price_for("mini-2025-01-31") == mine  # the user's base price over the table's
    assert prices.price_for("ft:mini:acme::abc123") == tuned
    assert prices.price_for("my-model") == mine
    assert prices.batch_cost("my-model", 1_000_000, 1_000_000) == pytest.approx((5.0 + 6.0) * 0.5)
    assert prices.source_of("ft:mini:acme::abc123") == "the 'pricing' setting (ft:mini)"


def test_a_prompt_over_the_long_context_threshold_prices_every_token_at_the_dearer_tier():
    prices = book()

    assert prices.realtime_cost("long", 1000, 100) == pytest.approx((1000 * 2.0 + 100 * 10.0) / 1e6)
    assert prices.realtime_cost("long", 1001, 100) == pytest.approx((1001 * 4.0 + 100 * 15.0) / 1e6)
    assert prices.batch_cost("long", 1001, 100) == pytest.approx((1001 * 4.0 + 100 * 15.0) / 1e6 * 0.5)
    assert LONG.ceiling_rates() == (4.0, 15.0)  # a realtime request's budget reservation never falls short


def test_an_unpriced_model_is_refused_with_the_setting_that_prices_it_and_that_setting_works():
    prices = book()

    assert prices.price_for("mystery-1") is None
    message = prices.unpriced_message("mystery-1")
    assert "model 'mystery-1' has no price" in message and "the fake table 1.0" in message
    example = message.split("e.g. ", 1)[1].split(" (US dollars", 1)[0]
    settings = json.loads("{" + example + "}")
    priced = PriceBook(
        {name: ModelPrice(**price) for name, price in settings["pricing"].items()}, 0.5, FakeTable(TABLE)
    )
    assert priced.realtime_cost("mystery-1", 1_000_000, 1_000_000) == pytest.approx(1.0 + 4.0)


def test_a_near_miss_is_named_in_the_refusal():
    assert "did you mean 'mini'" in book().unpriced_message("mni")


def test_a_line_with_an_unpriced_model_is_refused_with_its_line_field_and_how_to_price_it():
    settings = load_settings()
    validator = RequestValidator(
        endpoints=BATCH_ENDPOINTS,
        prices=price_book(settings),
        models=model_table(settings),
        assumed_output_tokens=256,
        max_line_bytes=4096,
        token_counters=token_counter,
    )

    outcome = validator.validate(7, chat("r1", model="gpt-9-ultra").encode())

    assert isinstance(outcome, InvalidLine)
    assert (outcome.line, outcome.custom_id, outcome.code) == (7, "r1", "unknown_model")
    assert "'pricing' setting" in outcome.message
    assert '"pricing": {"gpt-9-ultra": {"input_per_million": 1.0, "output_per_million": 4.0}}' in outcome.message


def test_a_model_priced_in_the_settings_is_accepted_where_it_was_refused():
    settings = load_settings({"pricing": {"gpt-9-ultra": {"input_per_million": 3, "output_per_million": 9}}})
    validator = RequestValidator(
        endpoints=BATCH_ENDPOINTS,
        prices=price_book(settings),
        models=model_table(settings),
        assumed_output_tokens=256,
        max_line_bytes=4096,
        token_counters=token_counter,
    )

    assert isinstance(validator.validate(1, chat("r1", model="gpt-9-ultra").encode()), ValidRequest)
    assert price_book(settings).batch_cost("gpt-9-ultra", 1_000_000, 0) == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"pricing": {"m": {"input_per_million": -1, "output_per_million": 1}}}, "pricing.m.input_per_million"),
        ({"pricing": {"m": {"input_per_million": 1}}}, "pricing.m.output_per_million"),
        ({"pricing": {"m": {"input_per_million": 1, "output_per_million": 1, "encoding": "p50k_base"}}}, "encoding"),
        ({"pricing": {"m": {"input_per_million": 1, "output_per_million": 1, "batch_rate": 1}}}, "batch_rate"),
    ],
)
def test_a_wrong_price_in_the_settings_fails_naming_it(values, named):
    with pytest.raises(SettingsError, match=named.replace(".", r"\.")):
        load_settings(values)


# ----- the maintained table (genai-prices, pinned) -------------------------------------------------


@pytest.mark.parametrize(
    ("model", "realtime", "batch"),
    [
        ("gpt-5", (1.25, 10.0), (0.625, 5.0)),
        ("gpt-5-mini", (0.25, 2.0), (0.125, 1.0)),
        ("o3", (2.0, 8.0), (1.0, 4.0)),
        ("o4-mini", (1.1, 4.4), (0.55, 2.2)),
        ("gpt-4.1-nano", (0.1, 0.4), (0.05, 0.2)),
        ("gpt-4o-mini", (0.15, 0.6), (0.075, 0.3)),
    ],
)
def test_current_models_are_priced_from_the_maintained_table(model, realtime, batch):
    prices = price_book(load_settings())

    assert prices.source_of(model) == "genai-prices 0.2.3"
    assert prices.realtime_cost(model, 1_000_000, 1_000_000) == pytest.approx(sum(realtime))
    assert prices.batch_cost(model, 1_000_000, 1_000_000) == pytest.approx(sum(batch))
    assert prices.price_for(model).encoding == "o200k_base"


def test_dated_ids_are_priced_as_openai_bills_them():
    prices = price_book(load_settings())

    assert prices.price_for("gpt-4o-mini-2024-07-18") == prices.price_for("gpt-4o-mini")
    assert prices.price_for("gpt-5-mini-2025-08-07") == prices.price_for("gpt-5-mini")
    # gpt-4o's first snapshot has prices of its own, dearer than gpt-4o's.
    assert prices.realtime_cost("gpt-4o-2024-05-13", 1_000_000, 0) == pytest.approx(5.0)
    assert prices.realtime_cost("gpt-4o", 1_000_000, 0) == pytest.approx(2.5)


def test_a_fine_tuned_model_is_billed_at_openais_fine_tuned_rates():
    prices = price_book(load_settings())

    tuned = "ft:gpt-4o-mini-2024-07-18:acme:labels:AbC123"
    assert prices.realtime_cost(tuned, 1_000_000, 1_000_000) == pytest.approx(0.3 + 1.2)
    assert prices.batch_cost(tuned, 1_000_000, 1_000_000) == pytest.approx(0.15 + 0.6)
    # One the table does not know is refused rather than billed as its base.
    assert prices.price_for("ft:gpt-4.1-mini-2025-04-14:acme::x") is None


def test_embeddings_use_the_rule_and_moderations_are_free():
    prices = price_book(load_settings())

    assert prices.batch_cost("text-embedding-3-small", 1_000_000, 0) == pytest.approx(0.02 * 0.5)
    assert prices.price_for("text-embedding-3-small").encoding == "cl100k_base"
    assert prices.realtime_cost("omni-moderation-latest", 1_000_000, 0) == 0


def test_a_model_priced_only_per_character_or_second_has_no_token_price():
    assert price_book(load_settings()).price_for("tts-1") is None


def test_prices_follow_the_date_the_table_gives_their_changes():
    # o3 fell from $10/$40 to $2/$8 on 2025-06-10.
    assert GenaiPricesTable(at=datetime(2025, 6, 1, tzinfo=UTC)).price_for("o3").input_per_million == 10.0
    assert GenaiPricesTable(at=datetime(2025, 6, 11, tzinfo=UTC)).price_for("o3").input_per_million == 2.0


def test_a_long_context_tier_of_the_table_is_kept():
    prices = price_book(load_settings())

    tier = prices.price_for("gpt-5.4").long_context
    assert tier is not None and tier.above_prompt_tokens == 272_000
    assert prices.realtime_cost("gpt-5.4", 272_001, 0) == pytest.approx(272_001 * 5.0 / 1e6)


def test_the_table_is_read_offline_and_never_starts_its_updater():
    # The unit tier's network is off (conftest): a fetch would fail this test.
    before = {thread.name for thread in threading.enumerate()}
    table = GenaiPricesTable()

    assert table.price_for("gpt-5-nano") is not None
    assert {thread.name for thread in threading.enumerate()} == before
