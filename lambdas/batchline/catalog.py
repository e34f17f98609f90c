"""The model catalog's plain values: what a model costs and accepts, and the names it is found under.

Neutral ground between the settings and the domain: the settings hold these values as the user
gives them (`pricing`, `model_limits`), the domain prices and validates with them
(`domain.pricing.PriceBook`, `domain.model_limits.ModelTable`), and the maintained price table
(`batchline.price_table`) produces them. Nothing here imports the domain or the settings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

# -- prices ---------------------------------------------------------------------------------------

# The encodings the install puts in tiktoken's cache (scripts/install_encodings.py): any other
# would be downloaded on first use, which these machines and a locked-down Lambda cannot do.
Encoding = Literal["o200k_base", "cl100k_base"]


class Rates(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)
    batch_input_per_million: float | None = Field(
        None, ge=0, description="the Batch API's input rate; None: batch_discount x input_per_million"
    )
    batch_output_per_million: float | None = Field(
        None, ge=0, description="the Batch API's output rate; None: batch_discount x output_per_million"
    )


class LongContextPrice(Rates):
    """The dearer rates of a request whose prompt is above `above_prompt_tokens`: every token of it."""

    above_prompt_tokens: int = Field(ge=1)


class ModelPrice(Rates):
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


def price_setting_keys(model: str) -> tuple[str, ...]:
    """The `pricing` keys that price `model`: its own name, then its base ("ft:<base>" for a fine-tune)."""
    base = base_model(model)
    return (model, f"ft:{base}") if model.startswith("ft:") else (model, base)


def find_price(
    prices: Mapping[str, ModelPrice], table: PriceTable | None, model: str
) -> tuple[ModelPrice | None, str | None]:
    """`model`'s price and where it comes from, as a user would look it up: the `pricing` setting
    first, then the table (a dated snapshot falls back to its base there; a fine-tune never does,
    as the provider bills fine-tunes at their own rates). (None, None): it has none."""
    for key in price_setting_keys(model):
        if key in prices:
            return prices[key], f"the 'pricing' setting ({key})"
    if table is None:
        return None, None
    price = table.price_for(model)
    if price is None and not model.startswith("ft:") and (base := base_model(model)) != model:
        price = table.price_for(base)
    return price, table.source if price is not None else None


# -- limits ---------------------------------------------------------------------------------------


class ModelKind(StrEnum):
    CHAT = "chat"  # chat completions and responses
    RESPONSES = "responses"  # the responses endpoint only (the pro and codex models)
    COMPLETION = "completion"  # the legacy completions endpoint only
    EMBEDDING = "embedding"
    MODERATION = "moderation"


KIND_ENDPOINTS: dict[ModelKind, frozenset[str]] = {
    ModelKind.CHAT: frozenset(("/v1/chat/completions", "/v1/responses")),
    ModelKind.RESPONSES: frozenset(("/v1/responses",)),
    ModelKind.COMPLETION: frozenset(("/v1/completions",)),
    ModelKind.EMBEDDING: frozenset(("/v1/embeddings",)),
    ModelKind.MODERATION: frozenset(("/v1/moderations",)),
}


class ModelLimits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ModelKind
    context_window: int | None = Field(
        None, ge=1, description="tokens of prompt and output together; for embeddings, per input; None: not checked"
    )
    max_output_tokens: int | None = Field(None, ge=1, description="the largest output cap a request may set")
    max_dimensions: int = Field(0, ge=0, description="embeddings: the largest `dimensions`; 0: not accepted")
    dimensions: int = Field(0, ge=0, description="embeddings: the vector's length when a request sets no `dimensions`")

    @property
    def endpoints(self) -> frozenset[str]:
        return KIND_ENDPOINTS[self.kind]
