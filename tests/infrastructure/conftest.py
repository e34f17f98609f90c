"""Infrastructure tests synthesize the CDK app in-process (jsii runs it on Node)."""

from __future__ import annotations

import os

# Node 20 works with this aws-cdk-lib; the banner only clutters the test output.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
