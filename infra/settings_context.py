"""The stack's settings: the ``batchline`` key of the CDK context, validated by batchline.settings.

cdk.json supplies the whole object (the CLI passes it in; an app run without the CLI reads the same
file); ``cdk synth -c batchline.map_max_concurrency=20`` overrides one field (nested ones with more
dots). A wrong value raises SettingsError naming the field, so synth stops before anything is built.
"""

from __future__ import annotations

import json
from typing import Any

from batchline.settings import Settings, SettingsError, load_settings
from constructs import Node

from infra.constants import CDK_JSON, SETTINGS_CONTEXT_KEY


def _parsed(value: Any) -> Any:
    """CLI context values arrive as strings; JSON ones ("20", "{...}") are read as JSON."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def settings_from_context(node: Node) -> Settings:
    values = _parsed(node.try_get_context(SETTINGS_CONTEXT_KEY))
    if values is None:  # not run by the CLI: take what it would have passed
        values = json.loads(CDK_JSON.read_text()).get("context", {}).get(SETTINGS_CONTEXT_KEY, {})
    if not isinstance(values, dict):
        raise SettingsError(f"invalid batchline settings: context key {SETTINGS_CONTEXT_KEY!r} must be an object")
    values = json.loads(json.dumps(values))  # a deep, mutable copy
    prefix = SETTINGS_CONTEXT_KEY + "."
    for key, value in node.get_all_context().items():
        if key.startswith(prefix):
            *parents, field = key[len(prefix) :].split(".")
            target = values
            for parent in parents:
                target = target.setdefault(parent, {})
                if not isinstance(target, dict):
                    raise SettingsError(f"invalid batchline settings: {key} sets a field of a non-object")
            target[field] = _parsed(value)
    return load_settings(values)
