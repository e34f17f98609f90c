"""Every command the README shows is run by a test, and prints what the README says it prints.

The README's ```bash blocks are read for `batchline` commands: each must be one this file runs
(against a `batchline local up` stack, from a scratch directory holding the example file as
`requests.jsonl`) or one another test runs, named in COVERED_ELSEWHERE. A README command no test
runs fails `test_every_readme_command_is_run_by_a_test`, so the README cannot drift unnoticed.

Where the README shows the output of a command whose output does not depend on timing (the demo's
table, `estimate`'s block), that command is run and each line shown must appear in what it printed,
in order, compared by shape: numbers, dollar figures, durations and ids are placeholders, box
drawing and runs of spaces are ignored. (The `status` and `cancel` blocks show a job caught half way
on a slowed stack; tests/cli checks those views.) A job id shown for the example file must be the id
the commands print for it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from batchline.domain.layout import content_hash, make_job_id
from cli_processes import BATCHLINE, ctrl_c_reaches_it

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
EXAMPLE = REPO_ROOT / "examples" / "feedback-1k.jsonl"

# The quick start's table job, as the README spells it (test_table_jobs_end_to_end runs it).
README_TABLE_COMMAND = (
    "batchline local run examples/feedback.csv --prompt 'Classify this feedback: {{ text }}' --model gpt-4o-mini "
    "--schema examples/feedback-schema.json --id-column id --out out/feedback"
)
# README commands another test runs: where.
COVERED_ELSEWHERE = {
    "batchline --version": "tests/e2e/test_installed_cli.py",
    "batchline estimate requests.jsonl": "tests/e2e/test_installed_cli.py (installed, offline)",
    "batchline submit requests.jsonl --stack Batchline --mode auto": "tests/cli/test_job_commands.py (deployed stack)",
    "batchline status $JOB --stack Batchline --watch": "tests/cli/test_job_commands.py (deployed stack)",
    "batchline results $JOB --stack Batchline --out results/": "tests/cli/test_job_commands.py (deployed stack)",
    "batchline cancel $JOB --stack Batchline": "tests/cli/test_cancel_command.py (the same command, local stack)",
    README_TABLE_COMMAND: "tests/e2e/test_table_jobs_end_to_end.py (the same command, its table read back)",
}
# README commands this file runs, in this order (after `local up`, which the fixture starts).
RUN_HERE = (
    "batchline local up",
    "batchline local run requests.jsonl --out results/",
    "batchline validate requests.jsonl",
    "batchline estimate requests.jsonl -m gpt-4.1-nano -m gpt-4o",
    "batchline estimate requests.jsonl --sample 50 --json",
    "batchline submit examples/feedback-1k.jsonl --budget-usd 0.05",
    "batchline status $JOB --watch",
    "batchline status",
    "batchline results $JOB --out out/",
)


def readme_blocks() -> list[tuple[str, list[str]]]:
    """(language, lines) of every fenced block at the start of a line."""
    blocks, language, lines = [], None, []
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            if language is None:
                language, lines = line[3:].strip(), []
            else:
                blocks.append((language, lines))
                language = None
        elif language is not None:
            lines.append(line)
    return blocks


def readme_commands() -> list[str]:
    """The batchline commands of the ```bash blocks, as a user types them (without .venv/bin/)."""
    found = []
    for language, lines in readme_blocks():
        if language != "bash":
            continue
        for line in lines:
            command = line.split("  #", 1)[0].strip()
            command = re.sub(r"^\w+=\$\((.*)\)$", r"\1", command)  # JOB=$(batchline submit ...)
            command = command.removeprefix(".venv/bin/")
            if command.startswith("batchline"):
                found.append(command)
    return found


def shown_outputs() -> list[tuple[str, list[str]]]:
    """(command, output lines) of each plain block that starts with `$ batchline ...`."""
    shown = []
    for language, lines in readme_blocks():
        if not language and lines and lines[0].startswith("$ batchline "):
            shown.append((lines[0][2:], [line for line in lines[1:] if line.strip() not in ("", "...")]))
    return shown


_PLACEHOLDERS = [
    (re.compile(r"feedback-1k-[0-9a-f]{8,}"), "JOB"),
    (re.compile(r"batch_[0-9a-f]{8,}"), "BATCH"),
    (re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d\S*"), "TIME"),
    (re.compile(r"[×x]?\$?\d[\d,]*(\.\d+)?( ?%| s)?"), "N"),
]


def shape(line: str) -> str:
    for pattern, token in _PLACEHOLDERS:
        line = pattern.sub(token, line)
    line = re.sub(r"[│┃┌┐└┘├┤┬┴┼─━╭╮╰╯]+", " ", line)
    return " ".join(line.split())


def assert_shows(shown: list[str], printed: str, what: str) -> None:
    """Each shown line's shape appears among the printed lines' shapes, in the same order."""
    printed_shapes = [shape(line) for line in printed.splitlines()]
    at = 0
    for line in shown:
        wanted = shape(line)
        if not wanted:
            continue
        try:
            at = printed_shapes.index(wanted, at) + 1
        except ValueError:
            pytest.fail(f"{what}: the README shows {line.strip()!r}, not printed in that shape:\n{printed}")


def test_every_readme_command_is_run_by_a_test():
    commands = readme_commands()
    assert commands, "the README shows no batchline command: is the parser still right?"
    unrun = [command for command in commands if command not in RUN_HERE and command not in COVERED_ELSEWHERE]
    assert unrun == [], f"README commands no test runs (add them to RUN_HERE or COVERED_ELSEWHERE): {unrun}"
    gone = [command for command in (*RUN_HERE, *COVERED_ELSEWHERE) if command not in commands]
    assert gone == [], f"commands tested as the README's that it no longer shows: {gone}"


def test_the_job_ids_the_readme_shows_for_the_example_are_the_ones_the_commands_print():
    example_id = make_job_id(EXAMPLE.name, content_hash([EXAMPLE.read_bytes()]))
    shown = set(re.findall(r"feedback-1k-[0-9a-f]+", README.read_text()))
    assert shown == {example_id}


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A user's directory: the example as requests.jsonl and under examples/, the repository's cdk.json."""
    (tmp_path / "examples").mkdir()
    shutil.copy(EXAMPLE, tmp_path / "examples" / EXAMPLE.name)
    shutil.copy(EXAMPLE, tmp_path / "requests.jsonl")
    shutil.copy(REPO_ROOT / "cdk.json", tmp_path / "cdk.json")
    return tmp_path


def _run(command: str, workdir: Path, env: dict, job: str = "", code: int = 0) -> subprocess.CompletedProcess:
    args = shlex.split(command.replace("$JOB", job))
    done = subprocess.run([BATCHLINE, *args[1:]], cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == code, f"{command}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def test_the_readme_commands_run_and_print_what_the_readme_shows(workdir):
    env = {**os.environ, "COLUMNS": "200", "BATCHLINE_LOCAL_STATE": str(workdir / "local.json")}
    env.pop("OPENAI_BASE_URL", None)
    env.pop("OPENAI_API_KEY", None)
    shown = dict(shown_outputs())
    demo_table = next(lines for language, lines in readme_blocks() if not language and "job feedback-1k-" in lines[0])

    ran = _run("batchline local run requests.jsonl --out results/", workdir, env)
    assert (workdir / "results" / "results.jsonl").is_file()
    demo = _run("batchline local run examples/feedback-1k.jsonl --out demo --ephemeral", workdir, env)
    assert_shows(demo_table, demo.stdout, "make demo's table")
    assert "succeeded" in ran.stdout

    validated = _run("batchline validate requests.jsonl", workdir, env)
    assert validated.stdout.strip() == "1,200 non-blank lines: all valid"
    estimated = _run("batchline estimate requests.jsonl -m gpt-4.1-nano -m gpt-4o", workdir, env)
    [(estimate_command, estimate_lines)] = [
        (c, lines) for c, lines in shown.items() if c.startswith("batchline estimate")
    ]
    assert_shows(estimate_lines, _run(estimate_command, workdir, env).stdout, estimate_command)
    assert "gpt-4.1-nano" in estimated.stdout and "gpt-4o" in estimated.stdout

    up = subprocess.Popen(
        [BATCHLINE, "local", "up"], cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=ctrl_c_reaches_it,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (workdir / "local.json").exists():
            assert up.poll() is None and time.monotonic() < deadline, "local up did not start"
            time.sleep(0.2)
        stack = json.loads((workdir / "local.json").read_text())
        # --sample sends to a real endpoint: here the local stack's emulator, named as a user names one.
        sampling = {**env, "OPENAI_BASE_URL": stack["openai_base_url"], "OPENAI_API_KEY": "local"}
        sampled = json.loads(_run("batchline estimate requests.jsonl --sample 50 --json", workdir, sampling).stdout)
        assert sampled["input_lines"] == 1200 and sampled["output_tokens_source"] != "max_tokens"

        job = _run("batchline submit examples/feedback-1k.jsonl --budget-usd 0.05", workdir, env).stdout.strip()
        assert job == make_job_id(EXAMPLE.name, content_hash([EXAMPLE.read_bytes()]))
        watched = _run("batchline status $JOB --watch", workdir, env, job)
        assert f"job {job}: succeeded" in watched.stdout
        listed = _run("batchline status", workdir, env)
        assert job in listed.stdout
        _run("batchline results $JOB --out out/", workdir, env, job)
        assert sorted(path.name for path in (workdir / "out").iterdir()) == [
            "errors.jsonl", "report.html", "results.jsonl", "summary.json"
        ]  # fmt: skip
    finally:
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=60)
