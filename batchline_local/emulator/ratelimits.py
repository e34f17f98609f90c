"""The ``x-ratelimit-*`` headers OpenAI sends on every response.

Batchline's realtime path reads these headers to pace itself, so the emulator always sends them,
in OpenAI's format (durations such as ``1s`` or ``6m0s``). The limits are generous and are not
enforced yet: a request is never refused for rate, it only sees its own cost subtracted.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimits:
    requests_per_minute: int = 10_000
    tokens_per_minute: int = 30_000_000

    def headers(self, token_cost: int) -> dict[str, str]:
        """Headers for a request costing ``token_cost`` tokens (prompt plus the output it may produce)."""
        return {
            "x-ratelimit-limit-requests": str(self.requests_per_minute),
            "x-ratelimit-limit-tokens": str(self.tokens_per_minute),
            "x-ratelimit-remaining-requests": str(self.requests_per_minute - 1),
            "x-ratelimit-remaining-tokens": str(max(0, self.tokens_per_minute - token_cost)),
            "x-ratelimit-reset-requests": "6ms",
            "x-ratelimit-reset-tokens": "0s",
        }
