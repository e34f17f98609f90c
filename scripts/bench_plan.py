"""How fast the planner plans a large file, and in how much memory, against a naive baseline.

Generates N chat requests once, then measures each contender in a fresh subprocess so that its
peak RSS is its own:

- baseline: read every line into a list, ``json.loads`` each, one tiktoken ``encode`` per
  message, group the parsed requests into lists in memory;
- batchline at N/4, N/2 and N: the real planning work minus S3, streaming the file from disk in
  1 MiB chunks through ``iter_physical_lines`` into ``Planner``, writing shard files, manifests
  and invalid lines to a temporary directory. Three sizes show whether memory grows with the file.
  The planner's token counter may start a helper process; its peak memory (the kernel's
  high-water mark, read before it exits) is reported beside the planner's and counted in the
  total that the memory target and the growth line use.
- table csv / table parquet: the same N requests, as a table (columns id, review, product) in a
  CSV and a parquet file, planned through ``batchline.datasets.table_lines`` (stream the rows,
  render ``{{ review }}`` under the same system prompt and options, id from ``id``) into the same
  planner. The lines it renders are byte for byte the JSONL's, so the rates compare the table
  path with the JSONL path on the same requests, in the same run.

Peak RSS is measured twice for every contender: by the child itself (getrusage, VmHWM) and by
``/usr/bin/time -v`` around it, where that exists.

Seconds cover the work only: interpreter start, imports and loading the tiktoken encoding are
left out of every contender alike. It reports; it is not a test, so it exits 0 whether or not the
target is met. Needs TIKTOKEN_CACHE_DIR pointing at the installed encodings (see
scripts/install_encodings.py).

Usage: python scripts/bench_plan.py [--requests N] [--seed S] [--no-table]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict
from functools import partial
from itertools import islice
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import tiktoken
from batchline.composition import planner_for
from batchline.datasets.errors import RowError
from batchline.datasets.rendering import table_lines
from batchline.datasets.spec import TableSpec
from batchline.domain.planning import encode_manifest_entry
from batchline.domain.request_line import InvalidLine, ValidRequest, iter_physical_lines
from batchline.engines.tokenization import ParallelTokenCounter, token_counter
from batchline.settings import load_settings
from rich.console import Console
from rich.table import Table

from batchline_local.samples import CHAT_MODEL, CLASSIFY_SYSTEM_PROMPT, chat_requests

CHUNK_BYTES = 1 << 20
WRITE_BUFFER_BYTES = 1 << 20
TARGET_REQUESTS_PER_SECOND = 50_000
TARGET_PEAK_RSS_MB = 256
TARGET_TABLE_SHARE = 0.9  # of the JSONL path's rate, on the same requests
TARGET_TABLE_PEAK_RSS_MB = 512
TABLE_WRITE_ROWS = 50_000
# The table the JSONL's requests come from: rendering {{ review }} under these options gives its lines.
TABLE_SPEC = TableSpec(
    model=CHAT_MODEL,
    system=CLASSIFY_SYSTEM_PROMPT,
    prompt="{{ review }}",
    id_column="id",
    max_tokens=8,
    temperature=0,
)
_PRODUCTS = (
    "blender", "standing desk", "air fryer", "rain jacket", "running shoes", "coffee grinder", "office chair",
    "phone case", "bluetooth speaker", "duvet cover", "cast iron pan", "kettle", "backpack", "desk lamp",
)  # fmt: skip
TIME_V = Path("/usr/bin/time")
CHAT_ENCODING = "o200k_base"  # gpt-4o-mini's, the model chat_requests uses


# ---------------------------------------------------------------- measured in a subprocess


def _helper_peak_mb() -> float:
    """Peak RSS (VmHWM) of this process's children: the token counter's helper, if it started one.

    Not getrusage(RUSAGE_CHILDREN): a child's ru_maxrss also counts the parent's pages it was
    forked with before exec, which it never uses.
    """
    peak = 0.0
    for children in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak += int(line.split()[1]) / 1024
            except OSError:
                pass  # already gone
    return peak


def _peak_memory_mb() -> dict[str, float]:
    """Peak RSS two ways: getrusage (KiB on Linux) and the kernel's high-water mark VmHWM."""
    peak = {"ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    peak["vmhwm_mb"] = float("nan")
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    peak["vmhwm_mb"] = int(line.split()[1]) / 1024
    except OSError:
        pass  # not Linux: getrusage alone
    return peak


class _FileShard:
    """One shard as the production writer lays it out: the request lines, and a manifest beside them.

    Buffered by the MiB, as the S3 writer gathers a multipart part in memory before sending it.
    """

    def __init__(self, directory: Path, shard_id: str) -> None:
        self._lines = open(directory / f"shard-{shard_id}.jsonl", "wb", buffering=WRITE_BUFFER_BYTES)
        self._manifest = open(directory / f"manifest-{shard_id}.tsv", "wb", buffering=WRITE_BUFFER_BYTES)

    def write(self, request: ValidRequest) -> None:
        self._lines.write(request.raw + b"\n")
        self._manifest.write(encode_manifest_entry(request.line, request.custom_id))

    def close(self) -> None:
        self._lines.close()
        self._manifest.close()


class _DirectoryOutputs:
    """PlanOutputs on local disk: what the S3 adapter does, minus the network."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._invalid = open(directory / "invalid.jsonl", "wb")  # closed by close()

    def open_shard(self, shard_id: str, url: str, model: str) -> _FileShard:
        return _FileShard(self._directory, shard_id)

    def invalid_line(self, error: InvalidLine) -> None:
        self._invalid.write(json.dumps(asdict(error)).encode() + b"\n")

    def close(self) -> None:
        self._invalid.close()


def _measure_planner(path: Path, limit: int, out_dir: Path) -> dict:
    settings = load_settings()
    token_counter(CHAT_ENCODING)  # load the encoding before the clock starts, as the baseline does
    counter = ParallelTokenCounter(os.cpu_count() or 2)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = _DirectoryOutputs(out_dir)
    planner = planner_for(settings, outputs=outputs, token_counter=counter)
    start = time.perf_counter()
    with open(path, "rb") as file:
        lines = islice(iter_physical_lines(iter(partial(file.read, CHUNK_BYTES), b"")), limit)
        summary = planner.run(lines)
    outputs.close()
    seconds = time.perf_counter() - start
    helper_mb = _helper_peak_mb()
    counter.close()
    return {
        "requests": summary.input_lines,
        "seconds": seconds,
        "valid": summary.valid,
        "invalid": summary.invalid,
        "shards": len(summary.shards),
        "prompt_tokens": summary.prompt_tokens,
        "helper_mb": helper_mb,
        **_peak_memory_mb(),
    }


def _measure_table(path: Path, limit: int, out_dir: Path) -> dict:
    settings = load_settings()
    token_counter(CHAT_ENCODING)
    counter = ParallelTokenCounter(os.cpu_count() or 2)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = _DirectoryOutputs(out_dir)
    planner = planner_for(settings, outputs=outputs, token_counter=counter)
    row_errors = 0

    def lines():
        nonlocal row_errors
        for row, line in islice(table_lines(path, TABLE_SPEC), limit):
            if type(line) is RowError:
                row_errors += 1
            else:
                yield row, line

    start = time.perf_counter()
    summary = planner.run(lines())
    outputs.close()
    seconds = time.perf_counter() - start
    helper_mb = _helper_peak_mb()
    counter.close()
    return {
        "requests": summary.input_lines + row_errors,
        "seconds": seconds,
        "valid": summary.valid,
        "invalid": summary.invalid + row_errors,
        "shards": len(summary.shards),
        "prompt_tokens": summary.prompt_tokens,
        "helper_mb": helper_mb,
        **_peak_memory_mb(),
    }


def _measure_baseline(path: Path, limit: int, max_requests: int) -> dict:
    encoding = tiktoken.get_encoding(CHAT_ENCODING)
    encoding.encode("warm up")
    start = time.perf_counter()
    with open(path, "rb") as file:
        lines = file.readlines()[:limit]
    groups: dict[tuple[str, str], list[tuple[dict, int]]] = defaultdict(list)
    prompt_tokens = 0
    for raw in lines:
        record = json.loads(raw)
        body = record["body"]
        tokens = 3  # OpenAI's rule: 3 per message and 3 for the reply, but contents only, no roles
        for message in body["messages"]:
            tokens += 3 + len(encoding.encode(message["content"]))
        prompt_tokens += tokens
        groups[(record["url"], body["model"])].append((record, tokens))
    shards = [
        group[first : first + max_requests] for group in groups.values() for first in range(0, len(group), max_requests)
    ]
    seconds = time.perf_counter() - start
    return {
        "requests": len(lines),
        "seconds": seconds,
        "valid": sum(len(shard) for shard in shards),
        "invalid": 0,
        "shards": len(shards),
        "prompt_tokens": prompt_tokens,
        **_peak_memory_mb(),
    }


def _worker(args: argparse.Namespace) -> None:
    path, out_dir = Path(args.input), Path(args.out)
    if args.worker == "planner":
        result = _measure_planner(path, args.limit, out_dir)
    elif args.worker == "table":
        result = _measure_table(path, args.limit, out_dir)
    else:
        result = _measure_baseline(path, args.limit, load_settings().shard_max_requests)
    print(json.dumps(result))


# ---------------------------------------------------------------- the orchestrating process


def _run_worker(kind: str, path: Path, limit: int, out_dir: Path) -> dict:
    timed = TIME_V.exists()
    command = [
        *((str(TIME_V), "-v") if timed else ()),
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--input",
        str(path),
        "--limit",
        str(limit),
        "--out",
        str(out_dir),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"the {kind} run on {limit:,} requests failed (exit {done.returncode})")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["time_v_mb"] = _time_v_peak_mb(done.stderr) if timed else float("nan")
    return result


def _time_v_peak_mb(report: str) -> float:
    for line in report.splitlines():
        if "Maximum resident set size (kbytes)" in line:
            return int(line.rsplit(":", 1)[1]) / 1024
    return float("nan")


def _generate(path: Path, requests: int, seed: int, table: bool) -> float:
    """The JSONL of requests and, with `table`, the table they come from (beside it, as .csv and .parquet).

    One pass: each request's user message is its row's review, its custom_id the row's id; the product
    column (drawn from its own seed, so the requests stay those of chat_requests) rides along unused.
    """
    start = time.perf_counter()
    products = random.Random(seed + 1)
    schema = pa.schema([("id", pa.string()), ("review", pa.string()), ("product", pa.string())])
    csv_writer = pa_csv.CSVWriter(path.with_suffix(".csv"), schema) if table else None
    parquet_writer = pq.ParquetWriter(path.with_suffix(".parquet"), schema) if table else None
    columns: dict[str, list[str]] = {"id": [], "review": [], "product": []}

    def flush() -> None:
        if csv_writer is not None and parquet_writer is not None and columns["id"]:
            batch = pa.record_batch([pa.array(columns[name], pa.string()) for name in schema.names], schema=schema)
            csv_writer.write_batch(batch)
            parquet_writer.write_batch(batch)
        for values in columns.values():
            values.clear()

    with open(path, "wb", buffering=WRITE_BUFFER_BYTES) as jsonl:
        for line in chat_requests(requests, seed):
            jsonl.write(line + b"\n")
            if table:
                record = orjson.loads(line)
                columns["id"].append(record["custom_id"])
                columns["review"].append(record["body"]["messages"][-1]["content"])
                columns["product"].append(_PRODUCTS[int(products.random() * len(_PRODUCTS))])
                if len(columns["id"]) == TABLE_WRITE_ROWS:
                    flush()
    flush()
    if csv_writer is not None and parquet_writer is not None:
        csv_writer.close()
        parquet_writer.close()
    return time.perf_counter() - start


def _total_mb(result: dict) -> float:
    """The peak of everything the contender ran: its own process and the token helper, if any."""
    return result["ru_maxrss_mb"] + result.get("helper_mb", 0.0)


def _report(rows: list[tuple[str, dict]]) -> None:
    table = Table(title="Planning throughput and peak memory")
    table.add_column("run")
    for column in (
        "requests", "seconds", "requests/s", "peak RSS MB", "VmHWM MB", "helper MB", "total MB", "time -v MB",
    ):  # fmt: skip
        table.add_column(column, justify="right")
    for name, result in rows:
        table.add_row(
            name,
            f"{result['requests']:,}",
            f"{result['seconds']:.1f}",
            f"{result['requests'] / result['seconds']:,.0f}",
            f"{result['ru_maxrss_mb']:.0f}",
            f"{result['vmhwm_mb']:.0f}",
            f"{result.get('helper_mb', 0.0):.0f}",
            f"{_total_mb(result):.0f}",
            f"{result.get('time_v_mb', float('nan')):.0f}",
        )
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000, help="requests in the full-size file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated requests")
    parser.add_argument("--no-table", action="store_true", help="leave out the table rows (CSV and parquet input)")
    parser.add_argument("--worker", choices=("planner", "baseline", "table"), help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    if args.requests < 4:
        parser.error("--requests must be at least 4")

    total = args.requests
    with tempfile.TemporaryDirectory(prefix="batchline-bench-") as tmp:
        tmp_dir = Path(tmp)
        path = tmp_dir / "requests.jsonl"
        table = not args.no_table
        seconds = _generate(path, total, args.seed, table)
        sizes = ", ".join(
            f"{p.suffix[1:]} {p.stat().st_size / 2**20:,.0f} MB"
            for p in (path, path.with_suffix(".csv"), path.with_suffix(".parquet"))
            if p.exists()
        )
        print(f"generated {total:,} chat requests ({sizes}) in {seconds:.1f} s", flush=True)

        rows = [("baseline", _run_worker("baseline", path, total, tmp_dir / "unused"))]
        for size in (total // 4, total // 2, total):
            out_dir = tmp_dir / f"plan-{size}"
            rows.append(("batchline", _run_worker("planner", path, size, out_dir)))
            shutil.rmtree(out_dir)  # the shards are as large as the input: free the disk before the next run
        tables = []
        if table:
            for suffix in (".csv", ".parquet"):
                out_dir = tmp_dir / f"table-{suffix[1:]}"
                tables.append((f"table {suffix[1:]}", _run_worker("table", path.with_suffix(suffix), total, out_dir)))
                shutil.rmtree(out_dir)

    _report(rows + tables)
    baseline, full = rows[0][1], rows[-1][1]
    print(
        f"prompt tokens: batchline {full['prompt_tokens']:,} in {full['shards']} shard(s), baseline "
        f"{baseline['prompt_tokens']:,} (it encodes message contents only; the planner also counts roles)"
    )
    quarter = rows[1][1]
    growth = _total_mb(full) - _total_mb(quarter)
    print(
        f"peak RSS (planner + helper) from {quarter['requests']:,} to {full['requests']:,} requests: {growth:+.0f} MB"
    )
    print(f"target: >= {TARGET_REQUESTS_PER_SECOND:,} requests/s and peak RSS < {TARGET_PEAK_RSS_MB} MB")
    throughput = full["requests"] / full["seconds"]
    print(
        f"plan_throughput={throughput:.0f} req/s peak_rss={_total_mb(full):.0f} MB (helper {full['helper_mb']:.0f} MB)"
    )
    if tables:
        _report_tables(full, tables)


def _report_tables(jsonl: dict, tables: list[tuple[str, dict]]) -> None:
    rate = jsonl["requests"] / jsonl["seconds"]
    print(
        f"table target: >= {TARGET_TABLE_SHARE:.0%} of the JSONL rate ({rate:,.0f} req/s) on the same requests, "
        f"peak RSS < {TARGET_TABLE_PEAK_RSS_MB} MB"
    )
    for name, result in tables:
        table_rate = result["requests"] / result["seconds"]
        same = "same" if result["prompt_tokens"] == jsonl["prompt_tokens"] else "DIFFERENT"
        print(
            f"{name.replace(' ', '_')}_throughput={table_rate:.0f} req/s ({table_rate / rate:.0%} of JSONL) "
            f"peak_rss={_total_mb(result):.0f} MB (time -v {result.get('time_v_mb', float('nan')):.0f} MB), "
            f"invalid {result['invalid']:,}, prompt tokens {same} as the JSONL's"
        )


if __name__ == "__main__":
    main()
