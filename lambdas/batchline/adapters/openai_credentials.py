"""Where the OpenAI API key comes from: never an environment variable in the deployed stack.

Deployed functions read it from Secrets Manager through Powertools Parameters, cached for a few
minutes so that a key replaced with `put-secret-value` is picked up without a redeploy. A local
run passes the key (or the emulator's dummy) directly.
"""

from __future__ import annotations

from aws_lambda_powertools.utilities import parameters

from batchline.settings import OPENAI_KEY_SECRET_ENV, RuntimeEnvironment, SettingsError

SECRET_MAX_AGE_SECONDS = 300


def openai_api_key(env: RuntimeEnvironment) -> str:
    if env.openai_api_key:
        return env.openai_api_key
    if env.openai_api_key_secret_arn:
        value = parameters.get_secret(env.openai_api_key_secret_arn, max_age=SECRET_MAX_AGE_SECONDS)
        key = value.strip() if isinstance(value, str) else ""
        if not key:
            raise SettingsError(f"the secret {env.openai_api_key_secret_arn} holds no OpenAI API key")
        return key
    raise SettingsError(f"no OpenAI API key: set OPENAI_API_KEY or {OPENAI_KEY_SECRET_ENV}")
