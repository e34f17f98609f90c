"""Shared test set-up: tiktoken reads the encodings the install step verified, never the internet."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(REPO_ROOT / ".cache" / "tiktoken"))


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _local_state_in_tmp(tmp_path_factory, monkeypatch):
    """A `batchline local run` in a test keeps its state in a directory of its own, never in the checkout."""
    monkeypatch.setenv("BATCHLINE_STATE_DIR", str(tmp_path_factory.mktemp("local-state")))
