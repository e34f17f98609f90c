"""Finalize: merge every shard's outcomes into the job's three outputs, in input order.

Runs after success and after failure alike (the state machine's Catch leads here), so a job
always ends with a summary and every input line accounted for: requests of shards that never
finished become errors that say why. Beside the summary it writes report.html, the page a person
opens to see how the job went. The same merge, on a job still running, gives a local run that
stops watching (Ctrl-C) its outputs so far (`Finalization.interim`).

Everything outside is a port (workflow/ports.py) handed to `Finalization`; handlers/finalize.py
builds them and calls it.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchline.domain.accounting import JobAccount, merge_by_line
from batchline.domain.answer_cache import (
    ROUTE_CACHE,
    AnswerStore,
    copy_outcome,
    decode_duplicate,
    decode_sent_key,
    pack_answer,
)
from batchline.domain.budget import STAGE_BUDGET, month_of, to_usd
from batchline.domain.layout import JobLayout
from batchline.domain.outcomes import STAGE_PROVIDER, error_record, usage_tokens
from batchline.domain.planning import decode_manifest_entry
from batchline.domain.pricing import PriceBook
from batchline.domain.records import JobRecord, ShardRecord, plain
from batchline.domain.run_cost import AwsUsage, aws_cost
from batchline.domain.statuses import ShardStatus
from batchline.presentation.figures import ROUTE_REALTIME, SLOWEST_LIMIT, Progress, SlowRequest
from batchline.presentation.report import render_report, report_key
from batchline.topology import state_transitions
from batchline.workflow.planning_job import InputSource, job_id_of
from batchline.workflow.ports import (
    BudgetAccounts,
    JobRecords,
    LineSource,
    ObjectStore,
    OutcomeOrdering,
    OutcomeRecords,
    TableOutputs,
)

logger = logging.getLogger("batchline.finalize")


def _numbered(storage: LineSource, key: str) -> Iterator[tuple[int, bytes]]:
    for raw in storage.lines(key):
        if raw:
            yield orjson.loads(raw)["line"], raw + b"\n"


def _unfinished_entries(storage: LineSource, layout: JobLayout, shard: ShardRecord) -> Iterator[tuple[int, str]]:
    """(line, custom_id) of every request of a shard's pending round (never collected) and of the
    halves of refused rounds it held back (see domain/recovery), in line order."""
    manifests = [layout.round_manifest(shard.shard_id, shard.round)]
    manifests += [layout.round_held(shard.shard_id, int(held)) for held in shard.held_rounds or ()]
    return merge_by_line(
        (decode_manifest_entry(entry) for entry in storage.lines(manifest) if entry) for manifest in manifests
    )


def _unfinished(
    storage: LineSource, layout: JobLayout, shard: ShardRecord, *, stage: str, code: str, reason: str
) -> Iterator[tuple[int, bytes]]:
    """Every request of a shard's that was never answered, as an error saying why, in line order."""
    for line, custom_id in _unfinished_entries(storage, layout, shard):
        record = error_record(custom_id=custom_id, line=line, stage=stage, code=code, message=reason)
        yield line, orjson.dumps(record) + b"\n"


@dataclass(frozen=True)
class _Targets:
    """Where one account of the job is written: the final outputs, or a running job's outputs so far."""

    results: str
    errors: str
    summary: str
    realtime_results: str
    realtime_errors: str

    @classmethod
    def final(cls, layout: JobLayout) -> _Targets:
        return cls(layout.results, layout.errors, layout.summary, layout.realtime_results, layout.realtime_errors)

    @classmethod
    def interim(cls, layout: JobLayout) -> _Targets:
        names = ("results.jsonl", "errors.jsonl", "summary.json", "realtime-results.jsonl", "realtime-errors.jsonl")
        return cls(*(layout.interim(name) for name in names))


@dataclass
class _RealtimeTiming:
    """When the realtime outcomes came (per second) and the slowest calls: what the report draws."""

    per_second: Counter[str] = field(default_factory=Counter)
    slowest: list[tuple[float, int, SlowRequest]] = field(default_factory=list)  # a heap, the fastest on top

    def add(self, record: dict[str, Any]) -> None:
        at = record.get("answered_at")
        if at:
            self.per_second[at[:19]] += 1  # ISO 8601 up to the second
        seconds = record.get("latency_seconds")
        if seconds is None:
            return
        request = SlowRequest(
            line=int(record["line"]),
            custom_id=str(record.get("custom_id") or ""),
            model=record.get("model"),
            seconds=float(seconds),
            answered_at=at,
            outcome="succeeded" if "response" in record else str(record.get("code") or "failed"),
        )
        entry = (request.seconds, -request.line, request)
        if len(self.slowest) < SLOWEST_LIMIT:
            heapq.heappush(self.slowest, entry)
        elif entry[:2] > self.slowest[0][:2]:
            heapq.heapreplace(self.slowest, entry)

    def slow_requests(self) -> list[SlowRequest]:
        return [request for _, _, request in self.slowest]


def _stage_realtime_outcomes(
    storage: ObjectStore,
    index: OutcomeOrdering,
    outcomes: Iterable[bytes],
    layout: JobLayout,
    targets: _Targets,
    parts: list[tuple[ShardRecord, int]],
    reason: str | None,
) -> tuple[_RealtimeTiming, int]:
    """Realtime outcomes, joined to every request sent that way, into a results and an errors file.

    `parts` are (shard, round) whose requests went to the realtime queue. The workers' records are
    first put in line order (`index`, on disk); with the manifests, also in line order, one
    pass finds each request's outcome, or reports it as never answered (with `reason`; None counts
    it as pending instead, for a job still running). Returns how many outcomes were recorded in
    each second (for the report), counted on the way, and how many requests are pending.
    """
    manifests = merge_by_line(
        (
            decode_manifest_entry(entry)
            for entry in storage.lines(layout.round_manifest(shard.shard_id, round_number))
            if entry
        )
        for shard, round_number in parts
    )
    timing = _RealtimeTiming()
    pending_requests = 0
    with index:
        index.add_all(outcomes)
        in_order = index.in_line_order()
        pending = next(in_order, None)
        with storage.writer(targets.realtime_results) as results, storage.writer(targets.realtime_errors) as errors:
            for line, custom_id in manifests:
                while pending is not None and pending[0] < line:  # not one of these parts' lines
                    pending = next(in_order, None)
                if pending is not None and pending[0] == line:
                    _, succeeded, _, raw = pending
                    record = orjson.loads(raw)
                    timing.add(record)
                    (results if succeeded else errors).write(_public(record) + b"\n")
                    pending = next(in_order, None)
                elif reason is None:
                    pending_requests += 1
                else:
                    record = error_record(
                        custom_id=custom_id, line=line, stage=STAGE_PROVIDER, code="not_completed", message=reason
                    )
                    errors.write(orjson.dumps(record) + b"\n")
    return timing, pending_requests


_INTERNAL_FIELDS = ("unsent", "answered_at", "latency_seconds")  # for the join and the report only


def _public(record: dict[str, Any]) -> bytes:
    """A worker's record as the user reads it: without the fields only the join and the report need."""
    return orjson.dumps({name: value for name, value in record.items() if name not in _INTERNAL_FIELDS})


# What a merged line is: a result, an error, a repeat whose first line has no outcome yet, an answer
# from the cache, a repeat's copy of its first line's result, or of its error.
_RESULT, _ERROR, _PENDING, _CACHED, _COPY, _COPY_ERROR = range(6)
_RESULTS = (_RESULT, _CACHED, _COPY)


def _tagged(stream: Iterable[tuple[int, bytes]], kind: int) -> Iterator[tuple[int, tuple[int, bytes]]]:
    for line, raw in stream:
        yield line, (kind, raw)


def _with_copies(
    merged: Iterator[tuple[int, tuple[int, bytes]]], storage: LineSource, key: str, *, interim: bool
) -> Iterator[tuple[int, tuple[int, bytes]]]:
    """The merged outcomes with a copy of its first line's outcome for each repeated request, in line order.

    A repeat's first line comes before it, so its outcome has passed by the time the repeat is due:
    the outcomes of the first lines that are repeated are held until their last repeat, which is
    all this keeps in memory (the distinct requests a file repeats, not the file). A first line with
    no outcome leaves its repeats pending (a job still running) or in errors, saying so.
    """
    wanted = Counter(first for _, first, _ in _duplicates(storage, key))
    held: dict[int, tuple[int, bytes]] = {}
    copies = _duplicates(storage, key)
    due = next(copies, None)

    def copy(line: int, first: int, custom_id: str) -> tuple[int, tuple[int, bytes]]:
        outcome = held.get(first)
        wanted[first] -= 1
        if not wanted[first]:
            held.pop(first, None)
            del wanted[first]
        if outcome is None:
            if interim:
                return line, (_PENDING, b"")
            record = error_record(
                custom_id=custom_id,
                line=line,
                stage=STAGE_PROVIDER,
                code="not_completed",
                message=f"repeats the request of line {first}, which has no outcome",
            )
            return line, (_COPY_ERROR, orjson.dumps({**record, "duplicate_of": first}) + b"\n")
        kind, raw = outcome
        record = copy_outcome(orjson.loads(raw), custom_id=custom_id, line=line, first_line=first)
        if kind in _RESULTS:
            record["route"] = ROUTE_CACHE  # answered once, for its first line: this copy costs nothing
            return line, (_COPY, orjson.dumps(record) + b"\n")
        return line, (_COPY_ERROR, orjson.dumps(record) + b"\n")

    for line, outcome in merged:
        while due is not None and due[0] < line:
            yield copy(*due)
            due = next(copies, None)
        if line in wanted:
            held[line] = outcome
        yield line, outcome
    while due is not None:
        yield copy(*due)
        due = next(copies, None)


def _duplicates(storage: LineSource, key: str) -> Iterator[tuple[int, int, str]]:
    for raw in storage.lines(key):
        if raw:
            yield decode_duplicate(raw)


class _Keeper:
    """Keeps each new successful answer in the cache under its request's key, a few hundred at a time.

    The keys come from Plan (layout.request_keys, in line order, as the results): an answer from
    another model than the request asked for (a budget fallback) is not kept, nor one too big.
    """

    _BATCH = 500

    def __init__(self, answers: AnswerStore, keys: Iterator[tuple[int, str, str]]) -> None:
        self._answers = answers
        self._keys = keys
        self._next = next(keys, None)
        self._batch: list[tuple[str, bytes]] = []
        self.kept = 0

    def add(self, line: int, raw: bytes) -> None:
        while self._next is not None and self._next[0] < line:
            self._next = next(self._keys, None)
        if self._next is None or self._next[0] != line:
            return
        _, key, model = self._next
        record = orjson.loads(raw)
        if record.get("model") != model:
            return
        packed = pack_answer(record)
        if packed is None:
            return
        self._batch.append((key, packed))
        if len(self._batch) >= self._BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._batch:
            self.kept += self._answers.keep(self._batch)
            self._batch = []

    def close(self) -> int:
        self._flush()
        return self.kept


@dataclass(frozen=True)
class _Reuse:
    """The answer cache as Finalize uses it: where new answers are kept, and the prices of what it saved."""

    answers: AnswerStore | None
    prices: PriceBook

    def keeper(self, storage: LineSource, layout: JobLayout) -> _Keeper | None:
        if self.answers is None or not storage.exists(layout.request_keys):
            return None
        keys = (decode_sent_key(raw) for raw in storage.lines(layout.request_keys) if raw)
        return _Keeper(self.answers, keys)

    def saved(self, record: dict[str, Any], route: str | None) -> float:
        """What a line answered without a request saved: its answer's usage at the job's route's price."""
        model = record.get("model")
        if not isinstance(model, str):
            return 0.0
        input_tokens, output_tokens = usage_tokens(record.get("usage"))
        price = self.prices.realtime_cost if route == "realtime" else self.prices.batch_cost
        return price(model, input_tokens, output_tokens)


def _merge(
    storage: ObjectStore,
    index: OutcomeOrdering,
    outcomes: Callable[[], Iterable[bytes]],
    layout: JobLayout,
    targets: _Targets,
    job: JobRecord,
    shards: list[ShardRecord],
    account: JobAccount,
    *,
    interim: bool,
    reuse: _Reuse | None = None,
) -> _RealtimeTiming:
    """Write every outcome so far into the targets' results and errors, in input order, counting them
    on the account. A finished job's requests without an outcome become errors that say why; an
    interim account (the job still runs) counts them as pending. Returns the realtime outcomes per
    second, for the report.

    With the answer cache (`reuse`), the lines Plan answered from it join the results, each repeat
    of an earlier line gets a copy of that line's outcome, and (finalizing, not interim) every new
    successful answer is kept in the cache.
    """
    refused = job.refused
    result_streams, error_streams = [], []
    if job.input_lines is not None and storage.exists(layout.invalid_lines):
        error_streams.append(_numbered(storage, layout.invalid_lines))
    # Requests sent on the realtime path: the whole job on the realtime route, or the few left of
    # a batch round when settings sent them that way (shards in status "realtime").
    realtime_parts = [
        (shard, shard.round)
        for shard in shards
        if not refused
        and (job.route == "realtime" or shard.status in (ShardStatus.REALTIME, ShardStatus.REALTIME_REQUEUE))
    ]
    timing = _RealtimeTiming()
    if realtime_parts:
        reason = (
            None
            if interim
            else account.failure
            or job.halted
            or "no outcome before the job stopped waiting (see the dead-letter queue)"
        )
        staged = _stage_realtime_outcomes(storage, index, outcomes(), layout, targets, realtime_parts, reason)
        timing, account.pending = staged
        result_streams.append(_numbered(storage, targets.realtime_results))
        error_streams.append(_numbered(storage, targets.realtime_errors))
        account.input_tokens += job.realtime_input_tokens
        account.output_tokens += job.realtime_output_tokens
        account.cost_usd += to_usd(job.realtime_cost_nano_usd)
        account.cost_usd_if_realtime += to_usd(job.realtime_cost_nano_usd)
    on_realtime = {id(shard) for shard, _ in realtime_parts}
    for shard in shards:
        shard_id = shard.shard_id
        for round_number in range(shard.rounds_collected):
            result_streams.append(_numbered(storage, layout.round_results(shard_id, round_number)))
            error_streams.append(_numbered(storage, layout.round_errors(shard_id, round_number)))
        account.input_tokens += shard.input_tokens
        account.output_tokens += shard.output_tokens
        account.cost_usd += to_usd(shard.cost_nano_usd)
        account.cost_usd_if_realtime += to_usd(shard.cost_if_realtime_nano_usd)
        if shard.status == ShardStatus.COLLECTED or id(shard) in on_realtime:
            continue
        if interim:  # still to be answered: the job goes on with it
            account.pending += sum(1 for _ in _unfinished_entries(storage, layout, shard))
            continue
        if refused:
            pending = _unfinished(storage, layout, shard, stage=STAGE_BUDGET, code="budget_refused", reason=refused)
        elif shard.status == ShardStatus.BUDGET_STOPPED:
            reason = shard.stop_reason or "not sent: the budget ran out"
            pending = _unfinished(storage, layout, shard, stage=STAGE_BUDGET, code="budget_exhausted", reason=reason)
        elif shard.status == ShardStatus.CANCELLED:
            pending = _unfinished(
                storage,
                layout,
                shard,
                stage=STAGE_PROVIDER,
                code="cancelled",
                reason="cancelled by the user before it ran: the same file uploaded again sends it",
            )
        else:
            reason = shard.failure or account.failure or f"the shard stopped in status {shard.status.value!r}"
            pending = _unfinished(
                storage, layout, shard, stage=STAGE_PROVIDER, code="shard_not_completed", reason=reason
            )
        error_streams.append(pending)

    tagged = [_tagged(stream, _RESULT) for stream in result_streams]
    tagged += [_tagged(stream, _ERROR) for stream in error_streams]
    if job.cached and not job.no_cache and storage.exists(layout.cached_results):
        tagged.append(_tagged(_numbered(storage, layout.cached_results), _CACHED))
    merged = merge_by_line(tagged)
    if job.duplicates and not job.no_cache:
        merged = _with_copies(merged, storage, layout.duplicates, interim=interim)
    keeper = reuse.keeper(storage, layout) if reuse is not None and not interim and not job.no_cache else None
    with storage.writer(targets.results) as results, storage.writer(targets.errors) as errors:
        for line, (kind, raw) in merged:
            if kind == _PENDING:
                account.pending += 1
                continue
            if kind in _RESULTS:
                results.write(raw)
                account.succeeded += 1
                if kind == _RESULT:
                    if keeper is not None:
                        keeper.add(line, raw)
                    continue
                if kind == _CACHED:
                    account.cached += 1
                else:
                    account.duplicates += 1
                if reuse is not None:
                    account.cache_saved_usd += reuse.saved(orjson.loads(raw), job.route)
                continue
            errors.write(raw)
            record = orjson.loads(raw)
            if kind == _COPY_ERROR:
                account.duplicates += 1
            if record["stage"] == "validation":
                account.invalid += 1
            else:
                account.failed += 1
                if record["stage"] == STAGE_BUDGET and not refused:
                    account.stopped_by_budget += 1
            account.error_codes[record["code"]] = account.error_codes.get(record["code"], 0) + 1
    if keeper is not None:
        account.cache_kept = keeper.close()

    return timing


@dataclass
class Finalization:
    """The Finalize use case, with its ports.

    `usage_so_far` is what this invocation has used in AWS so far (None outside a metered one);
    `now` gives the ISO 8601 time; `output_bucket` names the bucket in the summary's s3:// URLs.
    """

    jobs: JobRecords
    storage: ObjectStore
    outcomes: OutcomeRecords
    outcome_index: Callable[[], OutcomeOrdering]
    budgets: BudgetAccounts
    output_prefix: str
    output_bucket: str
    now: Callable[[], str]
    source: Callable[[str], InputSource]  # an input bucket, where Plan found the file
    tables: TableOutputs  # a table job's results table
    usage_so_far: Callable[[], AwsUsage | None] = lambda: None
    # The answer cache: `prices` price what it saved; `answers` keeps the new answers (None: the
    # `cache` setting is off). Without prices, Finalize leaves the cache's files alone.
    prices: PriceBook | None = None
    answers: AnswerStore | None = None

    def finalize_run(self, event: dict[str, Any], *, failure: str | None) -> dict[str, Any]:
        """Finalize the run the state machine's event describes; the summary. The event holds Plan's
        answer (`plan`), or only the upload (`bucket`, `key`) when Plan never finished: the job's id is
        then derived as Plan derives it, or marks the input as missing."""
        job_id = (event.get("plan") or {}).get("job_id") or job_id_of(self.source(event["bucket"]), event["key"])
        return self.finalize(str(job_id), failure=failure)

    def finalize(self, job_id: str, *, failure: str | None = None) -> dict[str, Any]:
        """Write the job's outputs and summary; the summary, as written. `failure`: why the run failed."""
        layout = JobLayout(job_id, self.output_prefix)
        job = self.jobs.get_job(job_id) or JobRecord(job_id=job_id)
        shards = sorted(self.jobs.list_shards(job_id), key=lambda shard: shard.shard_id)
        account = self._account(job_id, job, shards)
        account.failure = failure
        account.cancelled = job.halted if job.cancel_requested else None
        if job.input_lines is None:
            account.failure = failure or "the input could not be planned"

        refused = job.refused
        timing = self._merge(layout, _Targets.final(layout), job, shards, account, interim=False)

        if refused and not account.failure:
            account.failure = f"refused by the budget: {refused}"
        month = job.budget_month or month_of()
        self.budgets.release_hold(job_id, month)  # give back what the job held for work it will not do
        refreshed = self.jobs.get_job(job_id) or job  # the budget, recovery and AWS counters as they end
        account.details = {
            **self._budget_details(refreshed, month, shards),
            "aws": self._aws_cost(refreshed, account.cost_usd),
        }
        report = report_key(layout)
        summary = account.summary(
            outputs={
                name: f"s3://{self.output_bucket}/{key}"
                for name, key in (
                    ("results", layout.results),
                    ("errors", layout.errors),
                    ("summary", layout.summary),
                    ("report", report),
                )
            },
            started_at=job.started_at,
            finished_at=self.now(),
        )
        if account.unaccounted():
            # Never expected; said loudly so that a lost request cannot pass unnoticed.
            summary["unaccounted_lines"] = account.unaccounted()
            logger.error("lines unaccounted for", extra={"unaccounted": account.unaccounted()})
        if job.spec_digest:
            self._write_table(job, layout, summary)
        if not self._write_report(report, summary, shards, timing):
            del summary["outputs"]["report"]
        self.storage.put(layout.summary, _json(summary), "application/json")
        self.jobs.update_job(job_id, **{name: value for name, value in summary.items() if name != "job_id"})
        return summary

    def interim(self, job_id: str, reason: str) -> dict[str, Any]:
        """The outputs so far of a job that is still running, for a local run that stops watching it.

        Results and errors already known are merged in input order as `finalize` merges them, and
        each request with no outcome yet is counted as pending; the summary says ``interrupted``
        and why. They are written beside the job's working files (``JobLayout.interim``), never
        over its final outputs, and nothing of the job changes: not its status, its budget hold or
        its counters, so the same file run again resumes it as if the run had never stopped.
        Returns the summary, with the keys written under ``outputs``.
        """
        layout = JobLayout(job_id, self.output_prefix)
        targets = _Targets.interim(layout)
        job = self.jobs.get_job(job_id) or JobRecord(job_id=job_id)
        shards = sorted(self.jobs.list_shards(job_id), key=lambda shard: shard.shard_id)
        account = self._account(job_id, job, shards)
        account.interrupted = reason
        if job.input_lines is None:  # still planning: every line is pending, and how many is not known yet
            account.interrupted = f"{reason} while the input was being planned"
        self._merge(layout, targets, job, shards, account, interim=True)
        account.details = self._budget_details(job, job.budget_month or month_of(), shards)
        summary = account.summary(
            outputs={"results": targets.results, "errors": targets.errors, "summary": targets.summary},
            started_at=job.started_at,
            finished_at=self.now(),
        )
        if account.unaccounted():
            summary["unaccounted_lines"] = account.unaccounted()
        self.storage.put(targets.summary, _json(summary), "application/json")
        return summary

    # -- the parts ------------------------------------------------------------------------------
    @staticmethod
    def _account(job_id: str, job: JobRecord, shards: list[ShardRecord]) -> JobAccount:
        return JobAccount(
            job_id=job_id,
            input_lines=job.input_lines or 0,
            shards=len(shards),
            estimated_cost_usd=job.estimated_cost_usd,
            estimated_cost_usd_if_realtime=job.estimated_cost_usd_if_realtime,
            route=job.route,
        )

    def _merge(
        self,
        layout: JobLayout,
        targets: _Targets,
        job: JobRecord,
        shards: list[ShardRecord],
        account: JobAccount,
        *,
        interim: bool,
    ) -> _RealtimeTiming:
        return _merge(
            self.storage,
            self.outcome_index(),
            lambda: self.outcomes.records(layout.job_id),
            layout,
            targets,
            job,
            shards,
            account,
            interim=interim,
            reuse=_Reuse(self.answers, self.prices) if self.prices is not None else None,
        )

    def _progress(self, job_id: str, realtime_per_second: Counter[str]) -> list[Progress]:
        """Every moment requests got their outcome: the collected batch rounds, the realtime seconds."""
        points = [Progress.from_item(item) for item in self.jobs.progress(job_id)]
        points += [
            Progress(at=f"{second}+00:00", route=ROUTE_REALTIME, done=count)
            for second, count in sorted(realtime_per_second.items())
        ]
        return points

    def _write_table(self, job: JobRecord, layout: JobLayout, summary: dict[str, Any]) -> None:
        """A table job's results as a table, joined to its input rows; said in the summary when it fails
        (the JSONL outputs, written already, hold every outcome)."""
        try:
            key = self.tables.write(job, layout)
        except Exception as exc:  # noqa: BLE001 (the job's account is written whatever happens here)
            logger.exception("the results table could not be written")
            summary["table_error"] = f"{type(exc).__name__}: {exc}"[:2000]
            return
        summary["outputs"]["table"] = f"s3://{self.output_bucket}/{key}"

    def _write_report(
        self, key: str, summary: dict[str, Any], shards: list[ShardRecord], timing: _RealtimeTiming
    ) -> bool:
        """Write report.html; False when it could not be drawn.

        The page is for reading, the three outputs are the job's account: a report that fails to
        draw is logged and left out, and never stops the job's outputs from being written.
        """
        try:
            progress = self._progress(summary["job_id"], timing.per_second)
            page = render_report(summary, [plain(shard) for shard in shards], progress, timing.slow_requests())
        except Exception:
            logger.exception("report.html could not be drawn; the job's outputs are written without it")
            return False
        self.storage.put(key, page.encode(), "text/html; charset=utf-8")
        return True

    def _aws_cost(self, job: JobRecord, llm_cost_usd: float) -> dict[str, Any]:
        """What the run cost in AWS: every earlier invocation's counts (on the job), and this one's so far."""
        usage = AwsUsage.from_counters(plain(job))
        own = self.usage_so_far()
        if own is not None:
            usage.add(own)
            usage.lambda_requests += 1
            usage.state_transitions += state_transitions("finalize", None)
        cost = aws_cost(usage)
        cost["share_of_llm_cost"] = round(cost["cost_usd"] / llm_cost_usd, 6) if llm_cost_usd else None
        return cost

    def _budget_details(self, refreshed: JobRecord, month: str, shards: list[ShardRecord]) -> dict[str, Any]:
        """What the job spent against its budgets, read after its unused hold was given back."""
        job_cap, month_cap = refreshed.budget_cap_nano, self.budgets.month_cap_nano
        return {
            "budget": {
                "job_cap_usd": None if job_cap is None else to_usd(job_cap),
                "job_spent_usd": to_usd(refreshed.spent_nano),
                "month": month,
                "monthly_cap_usd": None if month_cap is None else to_usd(month_cap),
                "monthly_spent_usd": to_usd(self.budgets.month_spent_nano(month)),
                "fallback_model_used": refreshed.fallback_model_used,
                "paused": refreshed.budget_paused,
            },
            "recovery": {
                "resumes": refreshed.resumes,
                "handovers": refreshed.handovers,
                "batches_resubmitted": refreshed.batches_resubmitted,
                "stuck_batches": refreshed.stuck_batches,
                # answers that failed their JSON Schema and were asked again: realtime (the job), batch (its shards)
                "schema_retries": refreshed.schema_retries + sum(shard.schema_retries for shard in shards),
            },
        }


def _json(summary: dict[str, Any]) -> bytes:
    return orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n"
