"""The maintained price table: OpenAI's models in the pinned genai-prices package, as plain ModelPrices.

The only importer of genai-prices. Its data ships inside the package (a Python module), so nothing
is fetched: the package's auto-update (`UpdatePrices`) is never started, and a price moves only
when the lock's pin does. The data is loaded on the first look-up (about 0.4 s and 75 MB, once per
process) and each model's price is kept once converted.

What is taken from each model: the realtime input and output rates in force at `at` (the table
dates its price changes), the Batch API's rates where the table has them (otherwise the price book
applies `batch_discount`), and a long-context tier where the price has one. A model the table
prices in no unit at all is free (OpenAI's moderation models); one priced only per character,
second or image (speech, transcription) has no token price and is not priced here. The tiktoken
encoding is tiktoken's own for the table's model id (o200k_base where tiktoken does not know it).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from importlib.metadata import version
from typing import Any

import tiktoken.model

from batchline.catalog import Encoding, LongContextPrice, ModelPrice

PROVIDER = "openai"
BATCH_CONTEXT = {"processing": "batch"}
_BUNDLED_ENCODINGS: frozenset[Encoding] = frozenset(("o200k_base", "cl100k_base"))
_UNPRICED: Any = object()


class GenaiPricesTable:
    """genai-prices' OpenAI models, looked up as genai-prices matches them (dated ids, fine-tunes)."""

    def __init__(self, at: datetime | None = None) -> None:
        self.source = f"genai-prices {version('genai-prices')}"
        self._at = at
        self._provider: Any = None
        self._lock = threading.Lock()
        self._converted: dict[str, ModelPrice | None] = {}

    def price_for(self, model: str) -> ModelPrice | None:
        found = self._openai().find_model(model)
        if found is None:
            return None
        converted = self._converted.get(found.id, _UNPRICED)
        if converted is _UNPRICED:
            converted = self._converted[found.id] = _convert(found, self._at or datetime.now(UTC))
        return converted

    def model_names(self) -> Iterable[str]:
        return [model.id for model in self._openai().models]

    def _openai(self) -> Any:
        if self._provider is None:
            with self._lock:
                if self._provider is None:
                    from genai_prices.data import providers

                    self._provider = next(provider for provider in providers if provider.id == PROVIDER)
        return self._provider


@cache
def maintained_table() -> GenaiPricesTable:
    """The one table of the process, priced at the time of each first look-up."""
    return GenaiPricesTable()


def _convert(model: Any, at: datetime) -> ModelPrice | None:
    realtime = model.get_prices(at)
    rates = {key: value for key, value in vars(realtime).items() if value is not None}
    if not rates:
        return ModelPrice(input_per_million=0, output_per_million=0, encoding=_encoding(model.id))
    if realtime.input_mtok is None:
        return None
    batch = model.get_prices(at, BATCH_CONTEXT) if _has_batch_price(model, at) else None
    base: dict[str, float | None] = {
        "input_per_million": _base(realtime.input_mtok),
        "output_per_million": _base(realtime.output_mtok) or 0.0,
        "batch_input_per_million": _base(batch.input_mtok) if batch is not None else None,
        "batch_output_per_million": (_base(batch.output_mtok) or 0.0) if batch is not None else None,
    }
    tiered = [price for price in (realtime.input_mtok, realtime.output_mtok) if hasattr(price, "tiers")]
    long_context = None
    if tiered and tiered[0].tiers:
        long_context = LongContextPrice(
            above_prompt_tokens=tiered[0].tiers[0].start,
            input_per_million=_top(realtime.input_mtok),
            output_per_million=_top(realtime.output_mtok) or 0.0,
            batch_input_per_million=_top(batch.input_mtok) if batch is not None else None,
            batch_output_per_million=(_top(batch.output_mtok) or 0.0) if batch is not None else None,
        )
    return ModelPrice(**base, encoding=_encoding(model.id), long_context=long_context)


def _has_batch_price(model: Any, at: datetime) -> bool:
    return any(
        variant.when == BATCH_CONTEXT and (variant.constraint is None or variant.constraint.active(at))
        for variant in model.price_variants or ()
    )


def _base(price: Any) -> float | None:
    """A flat rate, or a tiered price's rate below its first tier."""
    if price is None:
        return None
    return float(price.base if hasattr(price, "tiers") else price)


def _top(price: Any) -> float | None:
    """A tiered price's dearest rate (OpenAI's have one tier), or the flat rate."""
    if price is None:
        return None
    if not hasattr(price, "tiers"):
        return float(price)
    return float(max([Decimal(price.base), *(tier.price for tier in price.tiers)]))


def _encoding(name: str) -> Encoding:
    try:
        encoding = tiktoken.model.encoding_name_for_model(name)
    except KeyError:
        return "o200k_base"
    return encoding if encoding in _BUNDLED_ENCODINGS else "o200k_base"
