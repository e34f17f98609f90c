"""Crash injection for the local run: make the Nth invocation of one function fail, to test resumption.

A test arms a crash on a LocalAws (``aws.crashes.arm("check", at_call=1, when="after")``) and
the in-process Lambda invoke (moto_patches) asks the registry here around every handler call:

- ``before``: the handler never runs; nothing it would have done happens.
- ``after``: the handler runs to the end (its writes to S3, DynamoDB and OpenAI happen) and then
  its result is lost, as when a function dies or times out just before returning.

Either way the caller sees a Lambda *function* error (``x-amz-function-error: Unhandled``, errorType
``InjectedCrash``), never a Lambda service exception, so the state machine's own Retry and Catch
paths run. Functions are named by their topology name ("plan", "submit", "check", "finalize",
"enqueue", ...), and calls are counted per function from 1, from when the injector was
armed or last cleared; a call whose handler raises on its own still counts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar

Moment = Literal["before", "after"]
MOMENTS: tuple[Moment, ...] = ("before", "after")

T = TypeVar("T")


class InjectedCrash(Exception):
    """The error an armed crash raises; Lambda reports its class name as the errorType."""


@dataclass(frozen=True)
class Crash:
    """One armed crash: the ``at_call``-th invocation (from 1) of ``function`` fails ``when``."""

    function: str
    at_call: int
    when: Moment

    def describe(self) -> str:
        ran = "before its handler ran" if self.when == "before" else "after its handler ran, its result lost"
        return f"injected crash of {self.function} at call {self.at_call}, {ran}"


class CrashInjector:
    """The crashes armed for one set of functions, and how often each function has been called.

    Safe to use from the threads that moto's Step Functions and the SQS event source invoke from.
    """

    def __init__(self, functions: Iterable[str]) -> None:
        self.functions = frozenset(functions)
        self._lock = threading.Lock()
        self._armed: dict[tuple[str, int], Crash] = {}
        self._calls: dict[str, int] = {}
        self._fired: list[Crash] = []

    def arm(self, function: str, *, at_call: int = 1, when: Moment = "before") -> Crash:
        """Crash the ``at_call``-th call of ``function`` (counted from the last ``clear``), ``when``."""
        if function not in self.functions:
            raise ValueError(
                f"no function {function!r} to crash; the functions are {', '.join(sorted(self.functions))}"
            )
        if isinstance(at_call, bool) or not isinstance(at_call, int) or at_call < 1:
            raise ValueError(f"at_call counts calls from 1; got {at_call!r}")
        if when not in MOMENTS:
            raise ValueError(f"when must be one of {', '.join(MOMENTS)}; got {when!r}")
        crash = Crash(function, at_call, when)
        with self._lock:
            if (function, at_call) in self._armed:
                raise ValueError(f"call {at_call} of {function} already has a crash armed")
            self._armed[(function, at_call)] = crash
        return crash

    def clear(self) -> None:
        """Disarm every crash and start counting calls from zero again."""
        with self._lock:
            self._armed.clear()
            self._calls.clear()
            self._fired.clear()

    def calls(self, function: str) -> int:
        """How many times ``function`` has been invoked since the last ``clear``."""
        with self._lock:
            return self._calls.get(function, 0)

    @property
    def fired(self) -> list[Crash]:
        """The crashes that have gone off, in the order they did."""
        with self._lock:
            return list(self._fired)

    @property
    def pending(self) -> list[Crash]:
        """The crashes armed that have not gone off yet."""
        with self._lock:
            return [crash for crash in self._armed.values() if crash not in self._fired]

    def run(self, function: str, handler_call: Callable[[], T]) -> T:
        """Count one call of ``function`` and run ``handler_call``, crashing it if this call is armed."""
        with self._lock:
            self._calls[function] = number = self._calls.get(function, 0) + 1
            crash = self._armed.get((function, number))
        if crash is not None and crash.when == "before":
            self._fire(crash)
        result = handler_call()
        if crash is not None:
            self._fire(crash)
        return result

    def _fire(self, crash: Crash) -> None:
        with self._lock:
            self._fired.append(crash)
        raise InjectedCrash(crash.describe())


# The deployed function name (what moto's Invoke sees) -> the injector and the topology name.
_REGISTRY: dict[str, tuple[CrashInjector, str]] = {}
_REGISTRY_LOCK = threading.Lock()


def register(injector: CrashInjector, names: dict[str, str]) -> None:
    """Route invocations of the deployed functions in ``names`` ({function name: topology name}) to ``injector``."""
    with _REGISTRY_LOCK:
        for function_name, name in names.items():
            _REGISTRY[function_name] = (injector, name)


def unregister(injector: CrashInjector) -> None:
    """Stop routing invocations to ``injector`` (its LocalAws stopped)."""
    with _REGISTRY_LOCK:
        for function_name in [f for f, (owner, _) in _REGISTRY.items() if owner is injector]:
            del _REGISTRY[function_name]


def run_handler(function_name: str, handler_call: Callable[[], T]) -> T:
    """Run one invocation of the deployed function ``function_name``, through its injector if it has one."""
    with _REGISTRY_LOCK:
        routed = _REGISTRY.get(function_name)
    if routed is None:
        return handler_call()
    injector, name = routed
    return injector.run(name, handler_call)
