from __future__ import annotations

import pytest
from cli_processes import standalone_emulator


@pytest.fixture
def emulator(tmp_path):
    """A standalone emulator for the test: its root URL (the ledger is at /_emulator/ledger)."""
    with standalone_emulator(tmp_path) as root:
        yield root
