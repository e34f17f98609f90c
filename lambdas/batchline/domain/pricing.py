"""Prices: US dollars per million tokens, at realtime and batch rates, and how a request is priced.

The prices come from a maintained table (genai-prices, read by `batchline.price_table` and pinned
in the lock: bumping the pin updates them), and from the `pricing` setting, which wins over the
table and adds the models it lacks. Where a price gives no batch rate, batch requests cost
`batch_discount` times the realtime price, input and output alike (OpenAI's Batch API: 50%).

A model with a long-context tier (OpenAI's gpt-5.4 and later: above 272K prompt tokens, every
token of the request at the dearer rate) is priced at that tier when the prompt tokens priced
at once are above its threshold. For one request that is the bill; for a shard's or a file's
totals it is a bound (the shard may hold a long prompt), so estimates and budget admissions
never come out below what the provider will charge.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

# The encodings the install puts in tiktoken's cache (scripts/install_encodings.py): any other
# would be downloaded on first use, which these machines and a locked-down Lambda cannot do.
Encoding = Literal["o200k_base", "cl100k_base"]


class _Rates(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)
    batch_input_per_million: float | None = Field(
        None, ge=0, description="the Batch API's input rate; None: batch_discount x input_per_million"
    )
    batch_output_per_million: float | None = Field(
        None, ge=0, description="the Batch API's output rate; None: batch_discount x output_per_million"
    )


class LongContextPrice(_Rates):
    """The dearer rates of a request whose prompt is above `above_prompt_tokens`: every token of it."""

    above_prompt_tokens: int = Field(ge=1)


class ModelPrice(_Rates):
    encoding: Encoding = Field(
        "o200k_base", description="tiktoken encoding that counts this model's tokens (o200k_base: every current model)"
    )
    long_context: LongContextPrice | None = None

    def ceiling_rates(self) -> tuple[float, float]:
        """(input, output) realtime rates no request of this model can exceed."""
        if self.long_context is None:
            return self.input_per_million, self.output_per_million
        tier = self.long_context
        return max(self.input_per_million, tier.input_per_million), max(
            self.output_per_million, tier.output_per_million
        )


class PriceTable(Protocol):
    """A maintained table of model prices (the port `batchline.price_table` fills)."""

    source: str

    def price_for(self, model: str) -> ModelPrice | None: ...

    def model_names(self) -> Iterable[str]: ...


# Dated snapshots ("gpt-4o-mini-2024-07-18") share their base's limits and, where the table has no
# entry of their own, its price; fine-tunes ("ft:gpt-4o-mini-2024-07-18:org::id") share its limits.
_SNAPSHOT_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def base_model(model: str) -> str:
    name = model
    if name.startswith("ft:"):
        name = name[3:].split(":", 1)[0]
    return _SNAPSHOT_SUFFIX.sub("", name)


def _setting_keys(model: str) -> tuple[str, ...]:
    """The `pricing` keys that price `model`: its own name, then its base ("ft:<base>" for a fine-tune)."""
    base = base_model(model)
    return (model, f"ft:{base}") if model.startswith("ft:") else (model, base)


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
        for key in _setting_keys(model):
            if key in self._prices:
                return self._prices[key], f"the 'pricing' setting ({key})"
        if self._table is None:
            return None, None
        price = self._table.price_for(model)
        if price is None and not model.startswith("ft:") and (base := base_model(model)) != model:
            price = self._table.price_for(base)
        return price, self._table.source if price is not None else None

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

    def _rates(self, model: str, input_tokens: int) -> _Rates:
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
        key = _setting_keys(model)[1] if model.startswith("ft:") else model  # a fine-tune: all of its base's
        example = json.dumps({"pricing": {key: {"input_per_million": 1.0, "output_per_million": 4.0}}})
        return (
            f"model {model!r} has no price: neither {source} nor the 'pricing' setting has it"
            + (f" (did you mean {', '.join(map(repr, close))}?)" if close else "")
            + f". To use it, give its price in cdk.json's batchline context, e.g. {example[1:-1]}"
            " (US dollars per million tokens; batch requests cost batch_discount times these unless"
            " batch_input_per_million and batch_output_per_million say otherwise)"
        )
