"""The local stack's wiring behaves like the deployed one where moto on its own would not."""

from __future__ import annotations

import time

from batchline.settings import load_settings

from batchline_local.emulator import EmulatorServer
from batchline_local.local_run import quiet_service_logs
from batchline_local.local_stack import LocalAws


def test_a_file_uploaded_in_parts_starts_one_execution_not_two(tmp_path):
    # boto3 uploads files over 8 MB in parts; S3 then sends one Object Created event, moto two.
    path = tmp_path / "blank.jsonl"
    path.write_bytes(b"\n" * (9 * 1024 * 1024))  # no request: the job ends at once
    settings = load_settings({"local_poll_seconds": 1})
    quiet_service_logs()
    with (
        EmulatorServer(settings=settings) as server,
        LocalAws(settings, openai_base_url=server.base_url, openai_api_key="k", poll_seconds=1) as aws,
    ):
        aws.upload_input(str(path), path.name)
        deadline = time.monotonic() + 60
        while any(e["status"] == "RUNNING" for e in aws.executions()) or not aws.executions():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.5)  # a second event, if any, would have started its execution by now
        executions = aws.executions()
    assert len(executions) == 1
