"""Typed domain exceptions: callers branch on the class, never on message text."""


class BatchlineError(Exception):
    """Base of every error batchline raises on purpose."""


class NoValidRequestError(BatchlineError):
    """The input held no line that could be sent; the job ends failed and says why."""


class ProviderError(BatchlineError):
    """The provider refused or failed an operation on a file or a batch."""


class TransientProviderError(ProviderError):
    """A provider failure worth retrying (timeouts, 5xx, rate limits): Step Functions retries it."""


class ShardStateError(BatchlineError):
    """A shard record is not in the state the step expects (for example collected twice)."""


class InputNotFoundError(BatchlineError):
    """The object that should start the job is not in the input bucket (deleted, or a wrong key)."""


class BudgetRefusedError(BatchlineError):
    """A job's estimate does not fit in the room its budgets have left; nothing was sent."""
