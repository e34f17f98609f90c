"""What each model accepts: its kind (which endpoints serve it), context window and output cap.

The provider refuses a request whose model does not serve the endpoint ("This is a chat model and
not supported in the v1/completions endpoint"), whose output cap is above the model's, or whose
prompt and output cap together do not fit the context window. Checking these here costs nothing
and keeps such a line out of a batch, where it would come back as an error after the wait.

Limits are kept apart from prices (`pricing.py`): prices change monthly and come from a
maintained price table (genai-prices, `batchline.price_table`), limits change with model
releases (their value types, `ModelLimits` and `ModelKind`, are in `batchline.catalog`).
`Settings.model_limits` overrides or extends this table the way `Settings.pricing` does for prices.
A model is looked up by its name, then by its base name (`catalog.base_model`: dated snapshots and
fine-tunes share their base's limits), so a snapshot whose limits differ from its base
(gpt-4o-2024-05-13) has its own entry.

A priced model with no entry here is not refused: its parameters are checked for type and range,
but nothing depends on the model (no output cap, no context window, any endpoint). The genai-prices
package carries context windows only (no output caps, no kinds), which is why this table exists.
Figures: OpenAI's model pages and API reference.
"""

from __future__ import annotations

from batchline.catalog import ModelKind, ModelLimits, base_model


def _chat(context: int, output: int, kind: ModelKind = ModelKind.CHAT) -> ModelLimits:
    return ModelLimits(kind=kind, context_window=context, max_output_tokens=output)


def _embedding(dimensions: int, *, shortens: bool) -> ModelLimits:
    """An embedding model of `dimensions`; one that `shortens` takes a smaller `dimensions` (the v3 models)."""
    return ModelLimits(
        kind=ModelKind.EMBEDDING,
        context_window=8_192,
        max_dimensions=dimensions if shortens else 0,
        dimensions=dimensions,
    )


DEFAULT_LIMITS: dict[str, ModelLimits] = {
    "gpt-5": _chat(400_000, 128_000),
    "gpt-5-mini": _chat(400_000, 128_000),
    "gpt-5-nano": _chat(400_000, 128_000),
    "gpt-5-chat-latest": _chat(128_000, 16_384),
    "gpt-5-pro": _chat(400_000, 272_000, ModelKind.RESPONSES),
    "gpt-5-codex": _chat(400_000, 128_000, ModelKind.RESPONSES),
    "gpt-5.1": _chat(400_000, 128_000),
    "gpt-4.1": _chat(1_047_576, 32_768),
    "gpt-4.1-mini": _chat(1_047_576, 32_768),
    "gpt-4.1-nano": _chat(1_047_576, 32_768),
    "gpt-4o": _chat(128_000, 16_384),
    "gpt-4o-2024-05-13": _chat(128_000, 4_096),
    "gpt-4o-mini": _chat(128_000, 16_384),
    "chatgpt-4o-latest": _chat(128_000, 16_384),
    "gpt-4-turbo": _chat(128_000, 4_096),
    "gpt-4": _chat(8_192, 8_192),
    "o1": _chat(200_000, 100_000),
    "o1-mini": _chat(128_000, 65_536),
    "o1-pro": _chat(200_000, 100_000, ModelKind.RESPONSES),
    "o3": _chat(200_000, 100_000),
    "o3-mini": _chat(200_000, 100_000),
    "o3-pro": _chat(200_000, 100_000, ModelKind.RESPONSES),
    "o4-mini": _chat(200_000, 100_000),
    "gpt-3.5-turbo": _chat(16_385, 4_096),
    "gpt-3.5-turbo-instruct": _chat(4_096, 4_096, ModelKind.COMPLETION),
    "davinci-002": _chat(16_384, 16_384, ModelKind.COMPLETION),
    "babbage-002": _chat(16_384, 16_384, ModelKind.COMPLETION),
    "text-embedding-3-small": _embedding(1_536, shortens=True),
    "text-embedding-3-large": _embedding(3_072, shortens=True),
    "text-embedding-ada-002": _embedding(1_536, shortens=False),
    "omni-moderation-latest": ModelLimits(kind=ModelKind.MODERATION),
    "text-moderation-latest": ModelLimits(kind=ModelKind.MODERATION),
    "text-moderation-stable": ModelLimits(kind=ModelKind.MODERATION),
}


class ModelTable:
    """Looks a model's limits up by name, then by base name; remembers each answer."""

    def __init__(self, limits: dict[str, ModelLimits]) -> None:
        self._limits = limits
        self._resolved: dict[str, ModelLimits | None] = {}

    def known_models(self) -> list[str]:
        return sorted(self._limits)

    def limits_for(self, model: str) -> ModelLimits | None:
        try:
            return self._resolved[model]
        except KeyError:
            found = self._limits.get(model) or self._limits.get(base_model(model))
            self._resolved[model] = found
            return found
