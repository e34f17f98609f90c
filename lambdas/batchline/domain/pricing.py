"""One pricing table: US dollars per million tokens at realtime rates, and how batch pricing derives.

Prices move; they live here and nowhere else, and `Settings.pricing` may override or extend them
(for example from cdk.json context) without a code change. Batch requests cost
`batch_discount` times the realtime price, input and output alike.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field


class ModelPrice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)
    encoding: str = Field(description="tiktoken encoding used to count this model's tokens")


DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-4o": ModelPrice(input_per_million=2.50, output_per_million=10.00, encoding="o200k_base"),
    "gpt-4o-mini": ModelPrice(input_per_million=0.15, output_per_million=0.60, encoding="o200k_base"),
    "gpt-4.1": ModelPrice(input_per_million=2.00, output_per_million=8.00, encoding="o200k_base"),
    "gpt-4.1-mini": ModelPrice(input_per_million=0.40, output_per_million=1.60, encoding="o200k_base"),
    "gpt-4.1-nano": ModelPrice(input_per_million=0.10, output_per_million=0.40, encoding="o200k_base"),
    "o4-mini": ModelPrice(input_per_million=1.10, output_per_million=4.40, encoding="o200k_base"),
    "gpt-3.5-turbo": ModelPrice(input_per_million=0.50, output_per_million=1.50, encoding="cl100k_base"),
    # The one completions-endpoint model still served, so that /v1/completions lines can be priced.
    "gpt-3.5-turbo-instruct": ModelPrice(input_per_million=1.50, output_per_million=2.00, encoding="cl100k_base"),
    "text-embedding-3-small": ModelPrice(input_per_million=0.02, output_per_million=0.0, encoding="cl100k_base"),
    "text-embedding-3-large": ModelPrice(input_per_million=0.13, output_per_million=0.0, encoding="cl100k_base"),
    "text-embedding-ada-002": ModelPrice(input_per_million=0.10, output_per_million=0.0, encoding="cl100k_base"),
    "omni-moderation-latest": ModelPrice(input_per_million=0.0, output_per_million=0.0, encoding="o200k_base"),
}

# Dated snapshots ("gpt-4o-mini-2024-07-18") and fine-tunes ("ft:gpt-4o-mini:org::id") bill as their base.
_SNAPSHOT_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def base_model(model: str) -> str:
    name = model
    if name.startswith("ft:"):
        name = name[3:].split(":", 1)[0]
    return _SNAPSHOT_SUFFIX.sub("", name)


class PriceBook:
    """Looks models up in the table and prices token counts at realtime and batch rates."""

    def __init__(self, prices: dict[str, ModelPrice], batch_discount: float) -> None:
        self._prices = prices
        self._batch_discount = batch_discount
        self._resolved: dict[str, ModelPrice | None] = {}

    def price_for(self, model: str) -> ModelPrice | None:
        try:
            return self._resolved[model]
        except KeyError:
            price = self._prices.get(model) or self._prices.get(base_model(model))
            self._resolved[model] = price
            return price

    def known_models(self) -> list[str]:
        return sorted(self._prices)

    def realtime_cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        price = self.price_for(model)
        if price is None:
            raise KeyError(model)
        return (input_tokens * price.input_per_million + output_tokens * price.output_per_million) / 1e6

    def batch_cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        return self.realtime_cost(model, input_tokens, output_tokens) * self._batch_discount
