#!/usr/bin/env python3
"""The CDK app: settings from the ``batchline`` context, the stack, and cdk-nag on every synth."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from infra.constants import FEATURE_FLAGS, STACK_ID
from infra.settings_context import settings_from_context
from infra.stack import BatchlineStack


def build_app(context: Mapping[str, Any] | None = None, outdir: str | None = None) -> App:
    """Raises batchline.settings.SettingsError, naming the field, when a setting is wrong."""
    app = App(context={**FEATURE_FLAGS, **(context or {})}, outdir=outdir)
    settings = settings_from_context(app.node)
    BatchlineStack(
        app,
        STACK_ID,
        settings=settings,
        description="batchline: OpenAI requests at scale, as batches or through the realtime queue",
        env=Environment(region=settings.region),
    )
    # Any unacknowledged finding fails synth; acknowledgements sit beside the resources they concern.
    Validations.of(app).add_plugins(AwsSolutionsChecks(app, write_suppressions_to_cloud_formation=True))
    return app


if __name__ == "__main__":
    build_app().synth()
