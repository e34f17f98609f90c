"""`--faults SPEC` on `batchline emulator` and `batchline local run`: checked up front, and it wins for that run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest
from batchline.settings import load_settings
from typer.testing import CliRunner

import batchline_local.emulator
import batchline_local.local_run
from batchline_cli.cli import app
from batchline_local.emulator import EmulatorServer, Faults, OpenAIEmulator
from batchline_local.emulator.faults import FAULTS_ENV
from batchline_local.local_run import openai_endpoint, run_local_job


@pytest.fixture
def input_file(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("{}\n")
    return path


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What `batchline local run` would run, captured instead of starting moto."""
    calls: list[dict[str, Any]] = []

    def fake_run(*args: Any, **kwargs: Any) -> None:
        calls.append(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(batchline_local.local_run, "run_local_job", fake_run)
    return calls


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _said(result) -> str:
    """The command's output on one line: rich wraps long messages at the terminal's width."""
    return " ".join(result.output.split())


def _sdk(base_url: str, api_key: str = "test") -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=10)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("explode=1", "--faults: unknown emulator fault 'explode=1'; known faults: token_limit"),
        ("expire=2", "--faults: emulator fault 'expire=2': the share must be between 0 and 1"),
        ("token_limit", "--faults: emulator fault 'token_limit' needs a value, e.g. token_limit=1"),
    ],
)
def test_a_wrong_faults_spec_exits_2_with_the_reason_before_anything_starts(
    spec: str, message: str, served, ran, input_file: Path
) -> None:
    for command in (["emulator", "--faults", spec], ["local", "run", str(input_file), "--faults", spec]):
        result = _invoke(*command)

        assert result.exit_code == 2, result.output
        assert message in _said(result)
    assert served == [] and ran == []


def test_a_wrong_environment_spec_is_also_refused_up_front(monkeypatch, served) -> None:
    monkeypatch.setenv(FAULTS_ENV, "stuck=-1")

    result = _invoke("emulator")

    assert result.exit_code == 2
    assert f"{FAULTS_ENV}: emulator fault 'stuck=-1': the count must not be negative" in _said(result)
    assert served == []


def test_the_faults_option_reaches_the_served_emulator(monkeypatch, served) -> None:
    monkeypatch.setenv(FAULTS_ENV, "stuck=3")

    assert _invoke("emulator", "--faults", "token_limit=2, expire=0.5").exit_code == 0
    assert _invoke("emulator").exit_code == 0

    assert [call["faults"] for call in served] == [Faults(token_limit=2, expire=0.5), None]


def test_the_faults_option_reaches_the_local_run(ran, input_file: Path) -> None:
    _invoke("local", "run", str(input_file), "--faults", "token_limit=2,expire=0.5,request_error=0.05")
    _invoke("local", "run", str(input_file), "--faults", "")
    _invoke("local", "run", str(input_file))

    assert [call["faults"] for call in ran] == [
        Faults(token_limit=2, expire=0.5, request_error=0.05),
        Faults(),
        None,
    ]


def test_given_faults_win_over_the_environment_and_the_settings(monkeypatch) -> None:
    settings = load_settings({"emulator": {"faults": "token_limit=3"}})
    monkeypatch.setenv(FAULTS_ENV, "stuck=1")

    assert OpenAIEmulator.from_settings(settings, faults=Faults(expire=0.5)).faults == Faults(expire=0.5)
    assert OpenAIEmulator.from_settings(settings, faults=Faults()).faults == Faults()
    assert OpenAIEmulator.from_settings(settings).faults == Faults(stuck=1)
    with EmulatorServer(settings=settings, faults=Faults(http_5xx=1.0)) as server:
        assert server.emulator.faults == Faults(http_5xx=1.0)
    with pytest.raises(TypeError):
        EmulatorServer(emulator=OpenAIEmulator(settings), faults=Faults())


def test_the_local_run_starts_its_emulator_with_the_given_faults(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv(FAULTS_ENV, "")

    with openai_endpoint(load_settings({}), faults=Faults(insufficient_quota=True)) as (base_url, api_key):
        with pytest.raises(openai.RateLimitError) as refused:
            _sdk(base_url, api_key).chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )

    assert refused.value.code == "insufficient_quota"


def test_faults_cannot_be_injected_into_an_endpoint_the_run_does_not_start(
    monkeypatch, input_file: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "k")

    with pytest.raises(SystemExit, match="unset OPENAI_BASE_URL"):
        with openai_endpoint(load_settings({}), faults=Faults(stuck=1)):
            pass
    with pytest.raises(ValueError, match="give them to the server passed as openai"):
        run_local_job(input_file, tmp_path, load_settings({}), openai=("http://x/v1", "k"), faults=Faults(stuck=1))


def test_without_given_faults_the_local_run_emulator_keeps_the_settings_faults(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)

    with openai_endpoint(load_settings({"emulator": {"faults": "insufficient_quota"}})) as (base_url, _):
        with pytest.raises(openai.RateLimitError):
            _sdk(base_url).embeddings.create(model="text-embedding-3-small", input="hi")
