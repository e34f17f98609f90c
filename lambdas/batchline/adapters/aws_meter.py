"""Counts the AWS requests a function invocation makes, for the run's AWS cost.

A botocore hook on the default session sees every request of every client made from it; it
counts only on a thread where an invocation is being metered (the local run serves several
invocations at once on different threads, and its own polling must not count).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3

from batchline.domain.run_cost import AwsUsage

_metered = threading.local()
_installed: list[Any] = []


def _count(model: Any, params: Any, **_: Any) -> None:
    usage: AwsUsage | None = getattr(_metered, "usage", None)
    if usage is not None:
        usage.count_call(model.service_model.service_name, model.name, params if isinstance(params, dict) else {})


def default_session() -> Any:
    """The session every client of the functions comes from, with the counting hook on it."""
    session = boto3._get_default_session()  # noqa: SLF001 (boto3 keeps it there; clients use it too)
    if session not in _installed:
        session.events.register("before-call", _count)
        _installed.append(session)
    return session


@contextmanager
def metering() -> Iterator[AwsUsage]:
    """Count this thread's AWS requests into a fresh AwsUsage until the block ends."""
    default_session()
    usage = _metered.usage = AwsUsage()
    _metered.waited = 0.0
    try:
        yield usage
    finally:
        _metered.usage = None


def current_usage() -> AwsUsage | None:
    """What the invocation running on this thread has used so far (None when not metered)."""
    return getattr(_metered, "usage", None)


def waited_seconds(seconds: float) -> None:
    """Count time this invocation spent waiting on something outside AWS (the provider's answers).

    A local run meters an invocation by its CPU time: without this, the wait for answers, which a
    deployed function is billed for, would be left out.
    """
    if getattr(_metered, "usage", None) is not None:
        _metered.waited = getattr(_metered, "waited", 0.0) + seconds


def waited_so_far() -> float:
    """The seconds `waited_seconds` counted in the invocation metered on this thread."""
    return getattr(_metered, "waited", 0.0)
