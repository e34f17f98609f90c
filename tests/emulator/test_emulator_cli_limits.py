"""`batchline emulator --tpm/--rpm/--burst-seconds/--latency/--rate-limit-algorithm`: one run's limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from batchline.settings import EmulatorSettings
from typer.testing import CliRunner

from batchline_cli.cli import app


def _invoke(*args: str):
    return CliRunner().invoke(app, ["emulator", *args])


def _said(result) -> str:
    return " ".join(result.output.split())


def test_the_limit_options_set_the_served_emulators_limits(served) -> None:
    result = _invoke(
        "--tpm", "480000", "--rpm", "500", "--burst-seconds", "0.5", "--latency", "0.2",
        "--rate-limit-algorithm", "token_bucket",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    pace = served[0]["settings"].emulator
    assert (pace.tokens_per_minute, pace.requests_per_minute, pace.burst_seconds) == (480_000, 500, 0.5)
    assert (pace.realtime_latency_seconds, pace.rate_limit_algorithm) == (0.2, "token_bucket")
    assert "rate limits: 500 RPM and 480,000 TPM per model, token buckets holding 0.5 s of refill" in _said(result)


def test_without_options_the_settings_file_decides_and_fixed_window_can_be_chosen(served, tmp_path: Path) -> None:
    cdk_json = tmp_path / "cdk.json"
    emulator = {"tokens_per_minute": 1234, "rate_window_seconds": 5}
    cdk_json.write_text(json.dumps({"context": {"batchline": {"emulator": emulator}}}))

    assert _invoke("--cdk-json", str(cdk_json)).exit_code == 0
    assert _invoke("--cdk-json", str(cdk_json), "--rate-limit-algorithm", "fixed_window", "--rpm", "7").exit_code == 0

    first, second = (call["settings"].emulator for call in served)
    assert (first.tokens_per_minute, first.requests_per_minute, first.rate_limit_algorithm) == (
        1234,
        10_000,
        "token_bucket",
    )
    assert (second.tokens_per_minute, second.requests_per_minute, second.rate_limit_algorithm) == (
        1234,
        7,
        "fixed_window",
    )
    assert second.rate_window_seconds == 5


def test_no_settings_file_is_needed(served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a directory with no cdk.json

    result = _invoke("--tpm", "60000")

    assert result.exit_code == 0, result.output
    assert served[0]["settings"].emulator == EmulatorSettings(tokens_per_minute=60_000)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tpm", "0"], "--tpm: Input should be greater than or equal to 1"),
        (["--burst-seconds", "0"], "--burst-seconds: Input should be greater than 0"),
        (["--latency", "-1"], "--latency: Input should be greater than or equal to 0"),
        (["--rate-limit-algorithm", "leaky"], "--rate-limit-algorithm: Input should be 'token_bucket' or"),
        (["--cdk-json", "/nonexistent/cdk.json"], "--cdk-json: no such file: /nonexistent/cdk.json"),
    ],
)
def test_a_wrong_value_exits_2_naming_the_option_before_anything_starts(served, args: list[str], message: str) -> None:
    result = _invoke(*args)

    assert result.exit_code == 2, result.output
    assert message in _said(result)
    assert served == []
