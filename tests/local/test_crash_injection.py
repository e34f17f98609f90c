"""Crash injection: the Nth call of a function crashes before or after its handler, as a Lambda function error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from batchline.settings import load_settings
from batchline.topology import FUNCTIONS

from batchline_local import crashes
from batchline_local.crashes import Crash, CrashInjector, InjectedCrash
from batchline_local.local_stack import LocalAws, function_name

# ----- the injector on its own ------------------------------------------------------------------


class Handler:
    """Stands in for a handler: counts its runs, which are its side effects."""

    def __init__(self) -> None:
        self.runs = 0

    def __call__(self) -> dict[str, int]:
        self.runs += 1
        return {"run": self.runs}


def _call(injector: CrashInjector, function: str, handler: Handler) -> Any:
    try:
        return injector.run(function, handler)
    except InjectedCrash as crash:
        return crash


def test_only_the_nth_call_of_the_armed_function_crashes() -> None:
    injector = CrashInjector(["submit", "check"])
    injector.arm("submit", at_call=3)
    submit, check = Handler(), Handler()

    outcomes = [_call(injector, "submit", submit) for _ in range(5)]
    checks = [_call(injector, "check", check) for _ in range(5)]

    assert [isinstance(outcome, InjectedCrash) for outcome in outcomes] == [False, False, True, False, False]
    assert all(not isinstance(outcome, InjectedCrash) for outcome in checks)
    assert (injector.calls("submit"), injector.calls("check")) == (5, 5)
    assert injector.fired == [Crash("submit", 3, "before")]
    assert injector.pending == []


def test_before_means_the_handler_never_ran() -> None:
    injector = CrashInjector(["collect"])
    injector.arm("collect", at_call=1, when="before")
    handler = Handler()

    with pytest.raises(InjectedCrash, match="collect at call 1, before its handler ran"):
        injector.run("collect", handler)

    assert handler.runs == 0
    assert injector.run("collect", handler) == {"run": 1}, "the next call runs normally"


def test_after_means_the_handler_ran_but_its_result_is_lost() -> None:
    injector = CrashInjector(["collect"])
    injector.arm("collect", at_call=1, when="after")
    handler = Handler()

    with pytest.raises(InjectedCrash, match="after its handler ran, its result lost"):
        injector.run("collect", handler)

    assert handler.runs == 1, "its side effects happened"
    assert injector.run("collect", handler) == {"run": 2}


def test_a_handler_that_fails_on_its_own_keeps_its_error_and_still_counts() -> None:
    injector = CrashInjector(["plan"])
    injector.arm("plan", at_call=1, when="after")

    def broken() -> None:
        raise KeyError("bucket")

    with pytest.raises(KeyError):
        injector.run("plan", broken)

    assert injector.calls("plan") == 1
    assert injector.fired == [] and injector.pending == [Crash("plan", 1, "after")]


def test_several_crashes_of_one_function_and_clear_starts_over() -> None:
    injector = CrashInjector(["check"])
    injector.arm("check", at_call=1)
    injector.arm("check", at_call=2, when="after")
    handler = Handler()

    first, second, third = (_call(injector, "check", handler) for _ in range(3))

    assert isinstance(first, InjectedCrash) and isinstance(second, InjectedCrash)
    assert third == {"run": 2}
    injector.clear()
    assert (injector.calls("check"), injector.fired, injector.pending) == (0, [], [])
    assert _call(injector, "check", handler) == {"run": 3}, "cleared: nothing is armed any more"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"function": "sumbit"}, "no function 'sumbit' to crash; the functions are check, submit"),
        ({"function": "submit", "at_call": 0}, "at_call counts calls from 1; got 0"),
        ({"function": "submit", "when": "during"}, "when must be one of before, after; got 'during'"),
    ],
)
def test_a_wrong_crash_is_refused_when_armed(arguments: dict[str, Any], message: str) -> None:
    injector = CrashInjector(["submit", "check"])

    with pytest.raises(ValueError, match=message):
        injector.arm(**arguments)


def test_arming_the_same_call_twice_is_refused() -> None:
    injector = CrashInjector(["submit"])
    injector.arm("submit", at_call=2)

    with pytest.raises(ValueError, match="call 2 of submit already has a crash armed"):
        injector.arm("submit", at_call=2, when="after")


def test_the_registry_routes_deployed_function_names_to_their_injector() -> None:
    injector = CrashInjector(["submit"])
    injector.arm("submit")
    crashes.register(injector, {"batchline-submit": "submit"})
    try:
        with pytest.raises(InjectedCrash):
            crashes.run_handler("batchline-submit", Handler())
        assert crashes.run_handler("batchline-check", Handler()) == {"run": 1}, "not registered: runs plainly"
    finally:
        crashes.unregister(injector)
    injector.arm("submit", at_call=2)
    assert crashes.run_handler("batchline-submit", Handler()) == {"run": 1}, "unregistered: never crashes"


# ----- through moto's Lambda Invoke on a local stack -----------------------------------------------

PROBE_CALLS: list[dict[str, Any]] = []


def probe_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A trivial handler put behind batchline-submit, so the test needs no bucket, table or OpenAI."""
    PROBE_CALLS.append(event)
    return {"echo": event}


@pytest.fixture(scope="module")
def local_aws() -> Iterator[LocalAws]:
    with LocalAws(
        load_settings({}), openai_base_url="http://127.0.0.1:9/v1", openai_api_key="unused", poll_seconds=1
    ) as aws:
        aws.client("lambda").update_function_configuration(
            FunctionName=function_name("submit"), Handler=f"{__name__}.probe_handler"
        )
        yield aws


@pytest.fixture
def aws(local_aws: LocalAws) -> Iterator[LocalAws]:
    PROBE_CALLS.clear()
    local_aws.crashes.clear()
    yield local_aws
    local_aws.crashes.clear()


def _invoke(aws: LocalAws, payload: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    answer = aws.client("lambda").invoke(FunctionName=function_name("submit"), Payload=json.dumps(payload).encode())
    assert answer["StatusCode"] == 200, "a crash is the function's error, not a Lambda service error"
    return answer.get("FunctionError"), json.loads(answer["Payload"].read())


def test_a_local_stack_can_crash_any_function_by_its_topology_name(aws: LocalAws) -> None:
    assert aws.crashes.functions >= {spec.name for spec in FUNCTIONS}
    assert {"plan", "submit", "check", "finalize", "enqueue"} <= aws.crashes.functions


@pytest.mark.parametrize(("when", "ran"), [("before", [{"n": 1}, {"n": 3}]), ("after", [{"n": 1}, {"n": 2}, {"n": 3}])])
def test_an_armed_crash_reaches_the_caller_as_an_unhandled_function_error(
    aws: LocalAws, when: str, ran: list[dict[str, int]]
) -> None:
    aws.crashes.arm("submit", at_call=2, when=when)  # type: ignore[arg-type]

    first, second, third = (_invoke(aws, {"n": n}) for n in (1, 2, 3))

    assert first == (None, {"echo": {"n": 1}})
    error, payload = second
    assert error == "Unhandled"
    assert payload["errorType"] == "InjectedCrash"
    assert payload["errorMessage"].startswith("injected crash of submit at call 2, ")
    assert third == (None, {"echo": {"n": 3}})
    assert PROBE_CALLS == ran
    assert aws.crashes.fired == [Crash("submit", 2, when)]  # type: ignore[arg-type]
    assert aws.crashes.calls("submit") == 3
