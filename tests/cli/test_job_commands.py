"""`batchline submit`, `status` and `results` against a running local stack, and against a "deployed" one.

The stack is what `batchline local up` runs, described by a state file in tmp_path (see
running_stack); a deployed stack is found by its CloudFormation outputs, which moto serves too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from accounting_check import assert_every_line_accounted_for
from batchline.domain.layout import make_job_id
from batchline.settings import load_settings
from lines import chat, embedding
from running_stack import FAST, Stack, read_jsonl, running_stack, sha256, write
from typer.testing import CliRunner

from batchline_cli.cli import app

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fast_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("fast"), load_settings(FAST)) as stack:
        yield stack


# -- submit, status, results ---------------------------------------------------------------------
def test_a_submitted_file_is_watched_to_its_end_and_its_outputs_downloaded(fast_stack, tmp_path):
    path = write(tmp_path / "reviews.jsonl", [chat(f"r{i}") for i in range(9)] + ["{not json", chat("r9")])

    submitted = fast_stack.run("submit", str(path), "--mode", "batch", "--budget-usd", "2")
    job_id = submitted.stdout.strip()
    assert job_id == make_job_id("reviews.jsonl", sha256(path))  # the id Plan gives it
    head = fast_stack.aws.client("s3").head_object(Bucket=fast_stack.aws.names.input_bucket, Key="reviews.jsonl")
    assert head["Metadata"] == {"batchline-mode": "batch", "batchline-budget-usd": "2.0"}

    view = fast_stack.status(job_id, "--watch", "--interval", "0.3")  # returns once the job ended
    assert (view["finished"], view["status"], view["route"]) == (True, "completed_with_errors", "batch")
    assert (view["valid"], view["invalid"], view["done"]) == (10, 1, 10)
    assert [shard["status"] for shard in view["shards"]] == ["collected"] * 3
    assert view["spend"]["cap_usd"] == 2.0 and 0 < view["spend"]["spent_usd"] == pytest.approx(
        view["cost_usd"], abs=1e-6
    )

    listed = json.loads(fast_stack.run("status", "--json").stdout)
    assert {(job["job_id"], job["status"], job["done"]) for job in listed} >= {(job_id, "completed_with_errors", 10)}

    out = tmp_path / "out"
    downloaded = fast_stack.run("results", job_id, "--out", str(out), code=1)  # 1: an invalid line
    names = [Path(line).name for line in downloaded.stdout.split()]
    assert names[:3] == ["results.jsonl", "errors.jsonl", "summary.json"]
    results, errors = assert_every_line_accounted_for(path, out)  # and the files match the summary
    assert (len(results), [(e["line"], e["code"]) for e in errors]) == (10, [(10, "invalid_json")])
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["job_id"], summary["status"], summary["budget"]["job_cap_usd"]) == (job_id, view["status"], 2.0)
    # The local stack's bucket is nowhere the user can go: the downloaded report lists the files beside it.
    report = (out / "report.html").read_text()
    listed = report[report.index('<section class="panel" id="outputs">') :].split("</section>")[0]
    assert "s3://" not in listed and f"<code>{(out / 'results.jsonl').resolve()}</code>" in listed

    printed = fast_stack.run("results", job_id, code=1)  # no --out: results.jsonl on stdout, to pipe on
    assert printed.stdout.encode() == (out / "results.jsonl").read_bytes()
    assert f"job {job_id}: completed_with_errors, 10 succeeded" in printed.stderr


def test_model_override_sends_every_request_to_that_model_and_keeps_line_numbers(fast_stack, tmp_path):
    path = write(tmp_path / "override.jsonl", [chat("a", model="gpt-4o"), "", chat("b", model="gpt-4o-mini")])

    submitted = fast_stack.run("submit", str(path), "--model", "gpt-4.1-nano")
    job_id = submitted.stdout.strip()
    assert "body.model = gpt-4.1-nano in all 2 requests" in submitted.stderr
    fast_stack.status(job_id, "--watch", "--interval", "0.3")
    fast_stack.run("results", job_id, "--out", str(tmp_path / "out"))

    results = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert [(r["line"], r["custom_id"], r["model"]) for r in results] == [
        (1, "a", "gpt-4.1-nano"),
        (3, "b", "gpt-4.1-nano"),
    ]


def test_model_override_refuses_a_file_that_mixes_endpoints(fast_stack, tmp_path):
    path = write(tmp_path / "mixed.jsonl", [chat("a"), embedding("e")])

    refused = fast_stack.run("submit", str(path), "--model", "gpt-4o-mini", code=2)

    assert "split the file by endpoint" in refused.stderr
    assert "/v1/embeddings (1)" in refused.stderr


def test_commands_say_what_to_do_when_the_job_or_the_stack_is_not_there(fast_stack, tmp_path):
    missing = fast_stack.run("results", "no-such-job-0000", "--out", str(tmp_path), code=1)
    assert "no job 'no-such-job-0000'" in missing.stderr and "`batchline status` lists" in missing.stderr

    no_state = CliRunner().invoke(app, ["status", "--local", "--state-file", str(tmp_path / "none.json")])
    assert no_state.exit_code == 1 and "batchline local up" in no_state.stderr

    # moto answers CloudFormation too (LocalAws points AWS_ENDPOINT_URL at it): a stack that is not there.
    no_stack = CliRunner().invoke(app, ["status", "--stack", "NoSuchStack", "--region", "us-east-1"])
    assert no_stack.exit_code == 1
    assert "no stack named 'NoSuchStack'" in no_stack.stderr and "cdk deploy" in no_stack.stderr


def test_a_deployed_stack_is_found_by_its_cloudformation_outputs(fast_stack, tmp_path, monkeypatch):
    names = fast_stack.aws.names
    outputs = {
        "InputBucketName": names.input_bucket,
        "OutputBucketName": names.output_bucket,
        "JobTableName": names.table,
        "StateMachineArn": fast_stack.aws.state_machine_arn,
    }
    template = {
        "Resources": {"Alarms": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {name: {"Value": value} for name, value in outputs.items()},
    }
    # Through AWS_ENDPOINT_URL (set by LocalAws), boto3's default chain reaches moto as it would reach AWS.
    fast_stack.aws.client("cloudformation").create_stack(StackName="Batchline", TemplateBody=json.dumps(template))
    path = write(tmp_path / "deployed.jsonl", [chat("x")])

    region = fast_stack.aws.settings.region
    with monkeypatch.context() as env:  # the region as the AWS CLI and SDKs are given it: AWS_REGION alone
        env.delenv("AWS_DEFAULT_REGION", raising=False)
        env.setenv("AWS_REGION", region)
        found = CliRunner().invoke(app, ["status", "--stack", "Batchline"])
        env.setenv("AWS_REGION", "eu-west-3")  # wins over AWS_DEFAULT_REGION, as in the AWS CLI
        env.setenv("AWS_DEFAULT_REGION", region)
        elsewhere = CliRunner().invoke(app, ["status", "--stack", "Batchline"])
    assert found.exit_code == 0, found.output
    assert elsewhere.exit_code == 1 and "no stack named 'Batchline' in eu-west-3" in elsewhere.stderr

    job_id = CliRunner().invoke(app, ["submit", str(path), "--stack", "Batchline"]).stdout.strip()
    assert job_id == make_job_id("deployed.jsonl", sha256(path))
    watched = CliRunner().invoke(app, ["status", job_id, "--stack", "Batchline", "--watch", "--interval", "0.3"])

    assert watched.exit_code == 0, watched.output
    drawn = watched.stdout  # the bars as drawn once the job ended
    assert f"job {job_id}: succeeded" in drawn
    assert "1/1" in drawn and "1 shard: 1 collected" in drawn  # the batch route's bar, then the shard's
    assert "spent" in drawn and "no job budget" in drawn
