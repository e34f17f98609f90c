"""`uv tool install .` gives a `batchline` that works from any directory, with no network.

The tool is installed from this checkout into a scratch tool directory (uv's cache, warm after
`make install`, supplies the packages), then run from a directory outside the checkout with an
empty home (no encodings cached anywhere) and every proxy variable pointing at a closed port, so
that any attempt to reach the internet (tiktoken's encodings, a price update) fails the command.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
UV = REPO_ROOT / ".tools" / "bin" / "uv"
NO_NETWORK = {
    name: "http://127.0.0.1:9" for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")
}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    if not UV.exists():
        pytest.fail("uv is installed by `make install`")
    root = tmp_path_factory.mktemp("tool")
    env = {**os.environ, "UV_TOOL_DIR": str(root / "tools"), "UV_TOOL_BIN_DIR": str(root / "bin")}
    subprocess.run([str(UV), "tool", "install", str(REPO_ROOT)], env=env, check=True, capture_output=True, timeout=600)
    return root / "bin" / "batchline"


def _run(batchline: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    env = {
        key: value for key, value in os.environ.items() if key != "TIKTOKEN_CACHE_DIR" and "PROXY" not in key.upper()
    }
    env |= {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "NO_PROXY": "127.0.0.1,localhost", **NO_NETWORK}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    return subprocess.run([str(batchline), *args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)


def test_the_installed_command_runs_outside_the_checkout_offline(installed, tmp_path):
    lines = [
        {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": model, "messages": [{"role": "user", "content": "Classify: the app is slow"}],
                  "max_completion_tokens": 20}}
        for i, model in enumerate(["gpt-5-mini", "o4-mini", "gpt-4.1-nano"])
    ]  # fmt: skip
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "requests.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))

    version = _run(installed, tmp_path, "--version")
    estimate = _run(installed, tmp_path, "estimate", "requests.jsonl", "--json")
    local = _run(installed, tmp_path, "local", "run", "requests.jsonl", "--ephemeral", "--out", "out")

    assert version.returncode == 0 and version.stdout.strip() == "batchline 0.1.0", version.stderr
    assert estimate.returncode == 0, estimate.stderr
    figures = json.loads(estimate.stdout)
    assert figures["input_lines"] == 3 and figures["invalid_lines"] == 0
    assert {group["model"] for group in figures["groups"]} == {"gpt-5-mini", "o4-mini", "gpt-4.1-nano"}
    assert figures["cost_usd_batch"] > 0
    assert (tmp_path / "home" / ".cache" / "batchline" / "tiktoken").is_dir(), "encodings unpacked from the package"
    assert local.returncode == 0, local.stdout + local.stderr
    summary = json.loads((tmp_path / "elsewhere" / "out" / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["succeeded"] == 3
