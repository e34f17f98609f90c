"""Fixtures that put the emulator on a real port, for the official openai SDK to drive."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from batchline.settings import Settings, load_settings

import batchline_local.emulator
from batchline_local.emulator import EmulatorServer, OpenAIEmulator
from batchline_local.emulator.faults import FAULTS_ENV

from .helpers import sdk_client


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What `batchline emulator` would serve, captured instead of blocking on a port."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(
        batchline_local.emulator,
        "serve_forever",
        lambda host, port, settings, *, faults=None: calls.append({"settings": settings, "faults": faults}),
    )
    return calls


@pytest.fixture
def fast_settings() -> Settings:
    return load_settings({"emulator": {"validating_seconds": 0, "in_progress_seconds": 0.05, "finalizing_seconds": 0}})


@pytest.fixture
def start_server() -> Iterator[Callable[[OpenAIEmulator], EmulatorServer]]:
    """Start a server for a given emulator (test limits, manual clock); stopped after the test."""
    started: list[EmulatorServer] = []

    def start(emulator: OpenAIEmulator) -> EmulatorServer:
        server = EmulatorServer(emulator=emulator).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(fast_settings: Settings) -> Iterator[EmulatorServer]:
    with EmulatorServer(settings=fast_settings) as running:
        yield running


@pytest.fixture
def client(server: EmulatorServer) -> openai.OpenAI:
    return sdk_client(server)


@pytest.fixture(autouse=True)
def _no_faults_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A BATCHLINE_EMULATOR_FAULTS left in the shell must not inject faults into every test here."""
    monkeypatch.delenv(FAULTS_ENV, raising=False)
