"""The infrastructure's fixed choices and paths, in one place.

What a user tunes lives in ``batchline.settings`` (cdk.json's ``batchline`` context); what is here
follows from the design and changes only with the code.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CDK_JSON = REPO_ROOT / "cdk.json"
LAMBDAS_DIR = REPO_ROOT / "lambdas"
UV_LOCK = REPO_ROOT / "uv.lock"
PYPROJECT = REPO_ROOT / "pyproject.toml"
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"  # uv and a pip, created by `make install`
ENCODINGS_CACHE = REPO_ROOT / ".cache" / "tiktoken"  # filled and verified by `make install`

SETTINGS_CONTEXT_KEY = "batchline"
# CDK feature flags the stack relies on. They belong in cdk.json's context; until they are there the
# app sets them (a value in cdk.json or on the command line still wins).
FEATURE_FLAGS = {
    # Server access logs are delivered under a bucket policy, not the legacy LogDeliveryWrite ACL.
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
}
STACK_ID = "Batchline"
from batchline.topology import SERVICE_NAME  # noqa: E402,F401  (one name for the functions and the dashboard)

# The layer's tiktoken/ folder lands here; the functions point TIKTOKEN_CACHE_DIR at it.
LAYER_ENCODINGS_DIR = "/opt/tiktoken"
SECRET_ARN_ENV = "OPENAI_API_KEY_SECRET_ARN"

ACCESS_LOG_RETENTION_DAYS = 90

TABLE_TTL_ATTRIBUTE = "expires_at"

# The functions that call OpenAI and so may read the API key.
OPENAI_CALLERS = frozenset({"submit", "check", "worker"})

# The realtime queue. AWS advises a visibility timeout of at least six times the consumer's timeout,
# so that a batch still being worked on (or retried by Lambda) is not delivered again meanwhile.
VISIBILITY_TIMEOUT_FACTOR = 6

# Keys under the staging prefix (batchline.domain.layout) that a grant narrower than the whole
# prefix covers; tests check that the layout's keys match them.
SHARD_FILES = "*/shards/*"  # a shard's requests.jsonl and manifest.tsv
REALTIME_BODIES = "*/realtime/bodies/*"  # request bodies too large for an SQS message
REALTIME_OUTCOMES = "*/realtime/outcomes/*"  # the workers' outcome records, one object per invocation
REALTIME_MERGED = ("*/realtime/results.jsonl", "*/realtime/errors.jsonl")  # finalize's join of the outcomes
