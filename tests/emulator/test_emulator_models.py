"""`GET /v1/models` through the SDK: the models the emulator serves, in OpenAI's shape."""

from __future__ import annotations

import openai
import pytest
from batchline.settings import load_settings

from batchline_local.emulator import EmulatorServer

from .helpers import sdk_client


def test_the_model_list_names_the_priced_and_tabled_models(client: openai.OpenAI) -> None:
    models = list(client.models.list())

    ids = [model.id for model in models]
    assert {
        "gpt-4o-mini",
        "gpt-4.1-nano",
        "o4-mini",
        "gpt-5",
        "text-embedding-3-small",
        "omni-moderation-latest",
    } <= set(ids)
    assert ids == sorted(set(ids))
    assert {(model.object, model.owned_by) for model in models} == {("model", "system")}


def test_one_model_is_retrieved_by_name_also_as_a_snapshot_or_fine_tune(client: openai.OpenAI) -> None:
    assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    assert client.models.retrieve("gpt-4o-mini-2024-07-18").id == "gpt-4o-mini-2024-07-18"
    assert client.models.retrieve("ft:gpt-4o-mini:acme::abc123").object == "model"


def test_an_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-9-ultra")

    assert missing.value.body["code"] == "model_not_found"
    assert "gpt-9-ultra" in missing.value.body["message"]


def test_a_model_priced_in_settings_is_listed() -> None:
    settings = load_settings(
        {"pricing": {"acme-chat-1": {"input_per_million": 1, "output_per_million": 2, "encoding": "o200k_base"}}}
    )
    with EmulatorServer(settings=settings) as server:
        ids = [model.id for model in sdk_client(server).models.list()]

    assert "acme-chat-1" in ids and "gpt-4o" in ids
