"""Prices: US dollars per million tokens, at realtime and batch rates, and how a request is priced.

The prices come from a maintained table (genai-prices, read by `batchline.price_table` and pinned
in the lock: bumping the pin updates them), and from the `pricing` setting, which wins over the
table and adds the models it lacks (the price values and their look-up are in `batchline.catalog`).
Where a price gives no batch rate, batch requests cost `batch_discount` times the realtime price,
input and output alike (OpenAI's Batch API: 50%).

A model with a long-context tier (OpenAI's gpt-5.4 and later: above 272K prompt tokens, every
token of the request at the dearer rate) is priced at that tier when the prompt tokens priced
at once are above its threshold. For one request that is the bill; for a shard's or a file's
totals it is a bound (the shard may hold a long prompt), so estimates and budget admissions
never come out below what the provider will charge.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping

from batchline.catalog import ModelPrice, PriceTable, Rates, find_price, price_setting_keys


class PriceBook:
    """Finds a model's price (the `pricing` setting first, then the table) and prices token counts.

    A fine-tune is billed at the provider's fine-tuned rates, never at its base model's (which are
    lower): one the table does not know has no price until the `pricing` setting gives it one.
    """

    def __init__(
        self, prices: Mapping[str, ModelPrice], batch_discount: float, table: PriceTable | None = None
    ) -> None:
        self._prices = prices
        self._batch_discount = batch_discount
        self._table = table
        self._resolved: dict[str, tuple[ModelPrice | None, str | None]] = {}

    def price_for(self, model: str) -> ModelPrice | None:
        return self._lookup(model)[0]

    def known_models(self) -> list[str]:
        """Every model with a price: the `pricing` setting's, then the table's."""
        table = list(self._table.model_names()) if self._table is not None else []
        return list(dict.fromkeys([*self._prices, *table]))

    def source_of(self, model: str) -> str | None:
        """Where `model`'s price comes from, as a user would look it up; None: it has none."""
        return self._lookup(model)[1]

    def _lookup(self, model: str) -> tuple[ModelPrice | None, str | None]:
        try:
            return self._resolved[model]
        except KeyError:
            found = self._resolved[model] = self._find(model)
            return found

    def _find(self, model: str) -> tuple[ModelPrice | None, str | None]:
        return find_price(self._prices, self._table, model)

    def batch_rates(self, model: str, input_tokens: int = 0) -> tuple[float, float]:
        """(input, output) USD per million tokens at the Batch API, the discount applied where no rate is given."""
        rates = self._rates(model, input_tokens)
        discount = self._batch_discount
        input_rate, output_rate = rates.batch_input_per_million, rates.batch_output_per_million
        return (
            rates.input_per_million * discount if input_rate is None else input_rate,
            rates.output_per_million * discount if output_rate is None else output_rate,
        )

    def realtime_cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        rates = self._rates(model, input_tokens)
        return (input_tokens * rates.input_per_million + output_tokens * rates.output_per_million) / 1e6

    def batch_cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        input_rate, output_rate = self.batch_rates(model, input_tokens)
        return (input_tokens * input_rate + output_tokens * output_rate) / 1e6

    def _rates(self, model: str, input_tokens: int) -> Rates:
        price = self.price_for(model)
        if price is None:
            raise KeyError(model)
        tier = price.long_context
        return tier if tier is not None and input_tokens > tier.above_prompt_tokens else price

    def unpriced_message(self, model: str) -> str:
        """Why `model` is refused, and the setting that would price it."""
        source = f"the price table ({self._table.source})" if self._table is not None else "the price table"
        names = [*self._prices, *(self._table.model_names() if self._table is not None else ())]
        close = difflib.get_close_matches(model, dict.fromkeys(names), n=3, cutoff=0.8)
        key = price_setting_keys(model)[1] if model.startswith("ft:") else model  # a fine-tune: all of its base's
        example = json.dumps({"pricing": {key: {"input_per_million": 1.0, "output_per_million": 4.0}}})
        return (
            f"model {model!r} has no price: neither {source} nor the 'pricing' setting has it"
            + (f" (did you mean {', '.join(map(repr, close))}?)" if close else "")
            + f". To use it, give its price in cdk.json's batchline context, e.g. {example[1:-1]}"
            " (US dollars per million tokens; batch requests cost batch_discount times these unless"
            " batch_input_per_million and batch_output_per_million say otherwise)"
        )
