"""The blocking entry point the CLI calls, and the server's lifecycle as a context manager."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import openai
import pytest
from batchline.settings import load_settings

from batchline_local.emulator import EmulatorServer

SERVE_SCRIPT = """
import sys
from batchline.settings import load_settings
from batchline_local.emulator import serve_forever
serve_forever("127.0.0.1", int(sys.argv[1]), load_settings({}))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_healthy(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def test_serve_forever_answers_the_sdk_until_the_process_stops() -> None:
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVE_SCRIPT, str(port)])
    try:
        _wait_until_healthy(f"http://127.0.0.1:{port}/_emulator/health")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="test", max_retries=0)

        answer = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])

        assert answer.choices[0].message.content
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_stopped_server_no_longer_accepts_connections() -> None:
    server = EmulatorServer(settings=load_settings({})).start()
    health = f"{server.root_url}/_emulator/health"
    with urllib.request.urlopen(health, timeout=5) as response:
        assert response.status == 200

    server.stop()

    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(health, timeout=2)
