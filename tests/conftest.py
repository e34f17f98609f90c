"""Shared test set-up: tiktoken reads the encodings the install step verified, never the internet."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(REPO_ROOT / ".cache" / "tiktoken"))
