"""How close the hot path runs to a provider's token limit, and how often it hears 429, against per-worker buckets.

Everything runs in this process: the OpenAI emulator on a localhost port, enforcing a tokens-per-window
limit per model with fixed windows aligned to the epoch (a request costs its prompt tokens plus its
output cap, 429 with retry-after when it does not fit), and DynamoDB as moto, its conditional writes
made atomic across threads by ``batchline_local.moto_patches``. Each configuration gets a fresh
emulator (fresh windows and statistics) and a fresh table, and N worker threads pulling the same
chat requests from a shared queue:

- batchline: each worker is what a separate Lambda invocation would hold, its own OpenAIRealtime
  client, DynamoRateLimiter and DynamoCircuitBreaker over the shared table, and runs the real
  ``execute`` with each request's exact token cost (prompt tokens + max output tokens); a request
  handed back (RetryLater) goes back on the queue, as SQS would redeliver it;
- baseline, the pattern most tutorials teach: each worker holds its own in-memory token bucket of the
  full limit, refilled continuously at limit / window per second and starting full, charges a fixed
  guess of 100 tokens per request, calls through the same OpenAIRealtime client and, on 429, sleeps
  what retry-after-ms / retry-after says and tries again.

Windows are a few seconds long, in the emulator and in batchline's limiter alike, so that a run sees
many of them in a short time; the limit is set below what one worker can send in a window (the
capacity line printed first shows it), so the limit, not the workers, decides the pace.

Figures, per configuration: utilization, the mean over the complete windows of the steady state
(the first and last, partial, windows left out) of the tokens the emulator charged in a window
divided by the tokens a window allows; the share of calls answered 429; the wall time. It reports;
it is not a test, so it exits 0 whether or not the targets are met. Needs TIKTOKEN_CACHE_DIR
pointing at the installed encodings (see scripts/install_encodings.py).

Usage: python scripts/bench_realtime.py [--requests N] [--window S] [--tokens-per-window T] [--latency S]
"""

from __future__ import annotations

import argparse
import math
import os
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import orjson
from batchline.adapters.dynamo_limits import DynamoCircuitBreaker, DynamoRateLimiter
from batchline.adapters.openai_realtime import OpenAIRealtime
from batchline.domain.realtime import CallPolicy, RealtimeRequest, RetryLater, execute, retry_after_seconds
from batchline.domain.tokens import max_output_tokens, token_counter
from batchline.settings import Settings, load_settings
from batchline.topology import TABLE_PARTITION_KEY, TABLE_SORT_KEY
from moto import mock_aws
from rich.console import Console
from rich.table import Table

from batchline_local import moto_patches
from batchline_local.emulator import EmulatorServer
from batchline_local.samples import CHAT_MODEL, chat_requests

CHAT_ENCODING = "o200k_base"  # gpt-4o-mini's, the model chat_requests uses
WORKER_COUNTS = (1, 4, 16)
BASELINE_GUESS_TOKENS = 100  # the fixed cost per request the tutorials charge
# The emulator's request budget per window: far above what the token budget lets through, so TPM binds.
REQUESTS_PER_WINDOW = 100_000
CAPACITY_PROBE_REQUESTS = 150
TARGET_UTILIZATION = 0.95
TARGET_RATE_LIMITED = 0.01
API_KEY = "sk-bench"
QUEUE_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Config:
    window_seconds: float
    tokens_per_window: int
    latency_seconds: float

    def settings(self, tokens_per_window: int | None = None) -> Settings:
        """The same window and limit for the emulator (the provider) and batchline's limiter (its view of it)."""
        tokens = tokens_per_window or self.tokens_per_window
        return load_settings(
            {
                "emulator": {
                    "realtime_latency_seconds": self.latency_seconds,
                    "rate_window_seconds": self.window_seconds,
                    "requests_per_minute": REQUESTS_PER_WINDOW,
                    "tokens_per_minute": tokens,
                },
                "realtime": {
                    "rate_window_seconds": self.window_seconds,
                    "default_limit": {"requests_per_minute": REQUESTS_PER_WINDOW, "tokens_per_minute": tokens},
                },
            }
        )


@dataclass
class RunResult:
    path: str
    workers: int
    requests: int
    wall_seconds: float
    stats: dict[str, Any]
    succeeded: int = 0
    failed: int = 0
    handed_back: int = 0  # batchline: RetryLater, put back on the queue
    failures: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- the load


def load_requests(n: int, seed: int, assumed_output_tokens: int) -> list[RealtimeRequest]:
    """n chat requests with the token cost the enqueue step gives them: prompt tokens + output cap."""
    counter = token_counter(CHAT_ENCODING)
    requests = []
    for index, raw in enumerate(chat_requests(n, seed), start=1):
        line = orjson.loads(raw)
        url, body = line["url"], line["body"]
        cost = counter.prompt_tokens(url, body) + max_output_tokens(url, body, assumed_output_tokens)
        requests.append(RealtimeRequest("bench", index, line["custom_id"], url, body["model"], body, cost))
    return requests


# ---------------------------------------------------------------- the world each configuration runs in


def _create_table(name: str) -> None:
    boto3.client("dynamodb").create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": TABLE_PARTITION_KEY, "KeyType": "HASH"},
            {"AttributeName": TABLE_SORT_KEY, "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": TABLE_PARTITION_KEY, "AttributeType": "S"},
            {"AttributeName": TABLE_SORT_KEY, "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )


@contextmanager
def fresh_world(settings: Settings) -> Iterator[tuple[EmulatorServer, str]]:
    """A new emulator (new windows, new statistics) and a new table."""
    table_name = f"bench-{uuid.uuid4().hex[:8]}"
    with mock_aws(), EmulatorServer(settings=settings) as server:
        _create_table(table_name)
        yield server, table_name


class WorkQueue:
    """The shared queue: requests go out, some come back (RetryLater), until every one is done."""

    def __init__(self, requests: list[RealtimeRequest]) -> None:
        self._queue: queue.Queue[RealtimeRequest] = queue.Queue()
        for request in requests:
            self._queue.put(request)
        self._left = len(requests)
        self._lock = threading.Lock()
        self.all_done = threading.Event()
        if not requests:
            self.all_done.set()

    def take(self) -> RealtimeRequest | None:
        """The next request, or None once every request is done."""
        while not self.all_done.is_set():
            try:
                return self._queue.get(timeout=QUEUE_POLL_SECONDS)
            except queue.Empty:
                continue
        return None

    def give_back(self, request: RealtimeRequest) -> None:
        self._queue.put(request)

    def done(self) -> None:
        with self._lock:
            self._left -= 1
            if self._left == 0:
                self.all_done.set()


def run_workers(workers: int, setup: Callable[[int], Callable[[], None]], stop: threading.Event) -> float:
    """Build every worker first (clients, sessions), then start them together; return the wall seconds."""
    loops = [setup(index) for index in range(workers)]
    start_line = threading.Barrier(workers + 1)
    errors: list[BaseException] = []

    def run(loop: Callable[[], None]) -> None:
        start_line.wait()
        try:
            loop()
        except BaseException as exc:  # reported below: a crashed worker must not pass for a slow one
            errors.append(exc)
            stop.set()  # its request would never be done: stop the others rather than wait forever

    threads = [threading.Thread(target=run, args=(loop,), name=f"worker-{i}") for i, loop in enumerate(loops)]
    for thread in threads:
        thread.start()
    start_line.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} worker(s) crashed; the first: {errors[0]!r}") from errors[0]
    return wall


# ---------------------------------------------------------------- the two contenders


def run_batchline(workers: int, requests: list[RealtimeRequest], settings: Settings, seed: int) -> RunResult:
    realtime = settings.realtime
    with fresh_world(settings) as (server, table_name):
        work = WorkQueue(requests)
        result = RunResult("batchline", workers, len(requests), 0.0, {})
        tally = threading.Lock()

        def setup(index: int) -> Callable[[], None]:
            # What one Lambda invocation holds: its own session, clients, limiter and circuit.
            table = boto3.session.Session().resource("dynamodb").Table(table_name)
            provider = OpenAIRealtime(api_key=API_KEY, base_url=server.base_url)
            limiter = DynamoRateLimiter(table, realtime)
            circuit = DynamoCircuitBreaker(table, realtime)
            policy = CallPolicy(
                max_attempts=realtime.max_attempts,
                backoff_base_seconds=realtime.backoff_base_seconds,
                backoff_max_seconds=realtime.backoff_max_seconds,
                sleep=time.sleep,
                rng=random.Random(seed * 1000 + index),
            )

            def loop() -> None:
                while (request := work.take()) is not None:
                    try:
                        outcome = execute(request, provider=provider, limiter=limiter, circuit=circuit, policy=policy)
                    except RetryLater:
                        with tally:
                            result.handed_back += 1
                        work.give_back(request)
                        continue
                    with tally:
                        if outcome.succeeded:
                            result.succeeded += 1
                        else:
                            result.failed += 1
                            result.failures.append(f"{outcome.status_code} {outcome.code}: {outcome.message}")
                    work.done()

            return loop

        result.wall_seconds = run_workers(workers, setup, work.all_done)
        result.stats = server.emulator.stats()
    return result


class TokenBucket:
    """The tutorial's limiter: a private bucket of the full limit, starting full, refilled continuously."""

    def __init__(self, capacity: float, refill_per_second: float) -> None:
        self._capacity = capacity
        self._rate = refill_per_second
        self._tokens = capacity
        self._last = time.monotonic()

    def take(self, tokens: float) -> None:
        while True:
            now = time.monotonic()
            self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
            self._last = now
            if self._tokens >= tokens:
                self._tokens -= tokens
                return
            time.sleep((tokens - self._tokens) / self._rate)


def run_baseline(workers: int, requests: list[RealtimeRequest], settings: Settings) -> RunResult:
    limit = settings.realtime.default_limit.tokens_per_minute  # per window, as the provider's
    window = settings.realtime.rate_window_seconds
    with fresh_world(settings) as (server, _):
        work = WorkQueue(requests)
        result = RunResult("baseline", workers, len(requests), 0.0, {})
        tally = threading.Lock()

        def setup(index: int) -> Callable[[], None]:
            provider = OpenAIRealtime(api_key=API_KEY, base_url=server.base_url)
            bucket = TokenBucket(capacity=limit, refill_per_second=limit / window)

            def loop() -> None:
                while (request := work.take()) is not None:
                    while True:
                        bucket.take(BASELINE_GUESS_TOKENS)
                        response = provider.call(request.url, request.body, client_request_id=request.custom_id)
                        if response.status != 429:
                            break
                        time.sleep(retry_after_seconds(response.headers) or 1.0)
                    with tally:
                        if response.status == 200:
                            result.succeeded += 1
                        else:
                            result.failed += 1
                            result.failures.append(f"{response.status}: {str(response.body)[:200]}")
                    work.done()

            return loop

        result.wall_seconds = run_workers(workers, setup, work.all_done)
        result.stats = server.emulator.stats()
    return result


# ---------------------------------------------------------------- figures


@dataclass(frozen=True)
class Figures:
    calls: int
    rate_limited: float
    utilization: float
    worst_window: float
    mean_window_tokens: float
    windows: int


def figures(stats: dict[str, Any], model: str) -> Figures:
    usage = stats["models"].get(model) or {"requests_ok": 0, "requests_429": 0, "windows": []}
    window_seconds, limit = stats["window_seconds"], stats["tokens_per_window"]
    calls = usage["requests_ok"] + usage["requests_429"]
    tokens_by_window = {round(w["window_start"] / window_seconds): w["tokens"] for w in usage["windows"]}
    if len(tokens_by_window) < 3:
        steady: list[int] = []
    else:
        first, last = min(tokens_by_window), max(tokens_by_window)
        # A window nobody was granted anything in counts as an empty one, not as a missing one.
        steady = [tokens_by_window.get(index, 0) for index in range(first + 1, last)]
    mean = sum(steady) / len(steady) if steady else math.nan
    return Figures(
        calls=calls,
        rate_limited=usage["requests_429"] / calls if calls else math.nan,
        utilization=mean / limit,
        worst_window=min(steady) / limit if steady else math.nan,
        mean_window_tokens=mean,
        windows=len(steady),
    )


def capacity_probe(config: Config, requests: list[RealtimeRequest], seed: int) -> float:
    """Requests per second one batchline worker sends when no limit holds it back."""
    unlimited = config.settings(tokens_per_window=10**9)
    result = run_batchline(1, requests, unlimited, seed)
    return len(requests) / result.wall_seconds


def report(config: Config, rows: list[tuple[RunResult, Figures]]) -> None:
    table = Table(
        title=(
            f"Realtime calls at a limit of {config.tokens_per_window:,} tokens per {config.window_seconds:g} s window "
            f"({config.tokens_per_window * 60 / config.window_seconds:,.0f} TPM)"
        )
    )
    table.add_column("path")
    for column in (
        "workers",
        "requests",
        "calls",
        "429 share",
        "utilization",
        "worst window",
        "tokens/window",
        "windows",
        "wall s",
        "handed back",
        "failed",
    ):
        table.add_column(column, justify="right")
    for result, fig in rows:
        table.add_row(
            result.path,
            str(result.workers),
            f"{result.requests:,}",
            f"{fig.calls:,}",
            f"{fig.rate_limited:.3f}",
            f"{fig.utilization:.3f}",
            f"{fig.worst_window:.3f}",
            f"{fig.mean_window_tokens:,.0f}",
            str(fig.windows),
            f"{result.wall_seconds:.1f}",
            str(result.handed_back) if result.path == "batchline" else "-",
            str(result.failed),
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=150)  # piped or logged: the whole table rather than truncated columns
    console.print(table)
    for result, _ in rows:
        if result.failures:
            print(f"{result.path} x{result.workers}: {result.failed} failed, e.g. {result.failures[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=600, help="chat requests per configuration")
    parser.add_argument("--window", type=float, default=2.0, help="rate window in seconds, emulator and limiter")
    parser.add_argument("--tokens-per-window", type=int, default=5_000, help="the token limit of one window")
    parser.add_argument("--latency", type=float, default=0.01, help="the emulator's answer latency in seconds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated requests")
    args = parser.parse_args()
    config = Config(args.window, args.tokens_per_window, args.latency)

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # moto's tables live in a region
    moto_patches.install()
    assumed = load_settings().assumed_output_tokens
    requests = load_requests(args.requests, args.seed, assumed)
    costs = [r.token_cost for r in requests]
    print(
        f"{len(requests):,} chat requests ({CHAT_MODEL}) per configuration, token cost min {min(costs)} / "
        f"mean {sum(costs) / len(costs):.0f} / max {max(costs)} (the baseline charges {BASELINE_GUESS_TOKENS})",
        flush=True,
    )
    probe = requests[:CAPACITY_PROBE_REQUESTS]
    per_second = capacity_probe(config, probe, args.seed)
    mean_cost = sum(r.token_cost for r in probe) / len(probe)
    print(
        f"capacity: one batchline worker, no limit, sends {per_second:.0f} requests/s, "
        f"{per_second * mean_cost * config.window_seconds:,.0f} tokens per window; "
        f"the limit is {config.tokens_per_window:,}",
        flush=True,
    )

    rows: list[tuple[RunResult, Figures]] = []
    for workers in WORKER_COUNTS:
        for path in ("batchline", "baseline"):
            if path == "batchline":
                result = run_batchline(workers, requests, config.settings(), args.seed)
            else:
                result = run_baseline(workers, requests, config.settings())
            fig = figures(result.stats, CHAT_MODEL)
            rows.append((result, fig))
            print(
                f"  {result.path} x{workers}: utilization {fig.utilization:.3f}, 429 share {fig.rate_limited:.3f}, "
                f"{result.wall_seconds:.1f} s",
                flush=True,
            )

    report(config, rows)
    print(
        f"target: utilization >= {TARGET_UTILIZATION} and rate_limited <= {TARGET_RATE_LIMITED} "
        f"for batchline at {', '.join(map(str, WORKER_COUNTS))} workers"
    )
    _, last = next((r, f) for r, f in reversed(rows) if r.path == "batchline" and r.workers == WORKER_COUNTS[-1])
    print(f"utilization={last.utilization:.3f} rate_limited={last.rate_limited:.3f}")


if __name__ == "__main__":
    main()
