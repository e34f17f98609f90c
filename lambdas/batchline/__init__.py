"""batchline: very large numbers of LLM requests through a provider at the lowest cost it allows.

The Lambda functions' code lives in this package's modules. From Python, `batchline.run`,
`batchline.estimate` and `batchline.submit` (see batchline_cli/api.py) take a table to a table;
they are loaded on first use, so the functions never import the command line's code.
"""

from typing import Any

_API = ("run", "estimate", "submit", "Job")


def __getattr__(name: str) -> Any:
    if name in _API:
        from batchline_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'batchline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
