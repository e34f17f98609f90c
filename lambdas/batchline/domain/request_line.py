"""Reading and validating the lines of an OpenAI batch input file.

A bad line never sinks the job: it becomes an `InvalidLine` with its 1-based physical line
number, a stable code and a message that says what is wrong, and the valid lines go on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, final

import msgspec
import orjson

from batchline.catalog import ModelLimits
from batchline.domain.fast_lines import fast_parse
from batchline.domain.json_depth import MAX_JSON_DEPTH, may_nest_too_deep, nesting_depth
from batchline.domain.model_limits import ModelTable
from batchline.domain.parameters import OUTPUT_CAP_FIELDS, output_budget, parameter_problem, shown
from batchline.domain.pricing import PriceBook
from batchline.domain.tokens import TextCounter, TextCounters, prompt_parts

UTF8_BOM = b"\xef\xbb\xbf"

# Fields each endpoint needs besides `model`, so that a request OpenAI would reject per line is
# caught before it costs a batch slot.
REQUIRED_BODY_FIELDS = {
    "/v1/chat/completions": "messages",
    "/v1/embeddings": "input",
    "/v1/responses": "input",
    "/v1/completions": "prompt",
    "/v1/moderations": "input",
}

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
EMBEDDING_MAX_INPUTS = 2048
EMBEDDING_MAX_REQUEST_TOKENS = 300_000  # summed over a request's inputs, for every embedding model
NO_LIMIT = 1 << 62


@final
class ValidRequest(msgspec.Struct, gc=False):
    """A request that can be sent. A msgspec Struct rather than a dataclass: the planner makes
    millions of them, and a Struct is built in C and is never scanned by the garbage collector
    (it cannot be part of a cycle: it holds strings, numbers, a list of strings and a counter)."""

    line: int
    custom_id: str
    url: str
    model: str
    raw: bytes  # the line exactly as it will be sent, without BOM, CR or trailing white space
    max_output_tokens: int
    # Tokens known without encoding (message overheads, token-id inputs), and the texts whose
    # encoding the planner counts in bulk; `prompt_tokens` is their sum once counted.
    fixed_tokens: int
    texts: list[str]
    counter: TextCounter
    prompt_tokens: int = 0
    # What the provider lets the prompt be, checked once it is counted (`RequestValidator.after_count`):
    # all of it together, and each text alone when `item_limit` is set (embedding inputs, prompts).
    prompt_limit: int = NO_LIMIT
    item_limit: int = 0

    def count_prompt_tokens(self) -> int:
        """Count now (one request at a time); the planner counts whole blocks on threads instead."""
        self.prompt_tokens = self.fixed_tokens + self.counter.count_texts(self.texts)
        return self.prompt_tokens


@final
@dataclass(slots=True, frozen=True)
class InvalidLine:
    line: int
    custom_id: str | None
    code: str
    message: str


def iter_physical_lines(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """Yield (1-based physical line number, stripped line) for every non-blank line.

    Works on a stream of byte chunks of any size, so a file of any length is read in bounded
    memory. A UTF-8 BOM at the start, CRLF endings and trailing white space are tolerated.
    One generator does the splitting, numbering and stripping: this runs once per line of
    files of millions of lines, and each generator layer costs as much as the strip itself.
    """
    number = 0
    pending = b""
    first = True
    for chunk in chunks:
        pieces = (pending + chunk).split(b"\n")
        pending = pieces.pop()
        if first and pieces:
            pieces[0] = pieces[0].removeprefix(UTF8_BOM)
            first = False
        for piece in pieces:
            number += 1
            stripped = piece.rstrip()
            if stripped:
                yield number, stripped
    if first:
        pending = pending.removeprefix(UTF8_BOM)
    stripped = pending.rstrip()
    if stripped:
        yield number + 1, stripped


def token_limits(url: str, limits: ModelLimits | None, cap: int | None) -> tuple[int, int]:
    """(prompt_limit, item_limit) of a request: what its prompt may count once the output cap it sets
    is set aside from the model's context window. The legacy completions endpoint generates per
    prompt, so each prompt is held to the window; each embedding input is held to the model's."""
    window = limits.context_window if limits is not None else None
    if url == "/v1/embeddings":
        return EMBEDDING_MAX_REQUEST_TOKENS, window or 0
    if window is None or url == "/v1/moderations":
        return NO_LIMIT, 0
    if url == "/v1/completions":
        return NO_LIMIT, max(window - (16 if cap is None else cap), 0)
    return max(window - (cap or 0), 0), 0


def _fits_model(url: str, limits: ModelLimits, cap: int | None, dimensions: int | None) -> bool:
    """What the fast path leaves to the caller: the model serves the endpoint, takes the cap and the dimensions."""
    return (
        url in limits.endpoints
        and (cap is None or limits.max_output_tokens is None or cap <= limits.max_output_tokens)
        and (dimensions is None or dimensions <= limits.max_dimensions)
    )


class RequestValidator:
    """Turns one physical line into a ValidRequest or an InvalidLine, as strictly as the provider.

    Uniqueness of custom_id is checked by the caller's registry, since it spans the whole job, and
    so is the prompt's size against the model's context window (`after_count`), since the tokens
    are counted by the caller, in bulk.
    """

    def __init__(
        self,
        *,
        endpoints: Iterable[str],
        prices: PriceBook,
        models: ModelTable,
        assumed_output_tokens: int,
        max_line_bytes: int,
        token_counters: TextCounters,
    ) -> None:
        self._endpoints = frozenset(endpoints)
        self._prices = prices
        self._models = models
        self._assumed_output_tokens = assumed_output_tokens
        self._max_line_bytes = max_line_bytes
        self._token_counters = token_counters
        self._known: dict[str, tuple[TextCounter, ModelLimits | None]] = {}

    def validate(self, line: int, raw: bytes) -> ValidRequest | InvalidLine:
        if len(raw) > self._max_line_bytes:
            return InvalidLine(
                line,
                None,
                "line_too_large",
                f"line is {len(raw)} bytes; one request may be at most {self._max_line_bytes} bytes",
            )
        fast = fast_parse(raw, self._assumed_output_tokens)
        if fast is not None:
            custom_id, url, model, fixed, texts, budget, cap, dimensions = fast
            known = self._known.get(model) or self._model(model)
            if known is not None and url in self._endpoints:
                counter, limits = known
                if limits is None or _fits_model(url, limits, cap, dimensions):
                    prompt_limit, item_limit = token_limits(url, limits, cap)
                    return ValidRequest(
                        line, custom_id, url, model, raw, budget, fixed, texts, counter, 0, prompt_limit, item_limit
                    )
        return self._validate_general(line, raw)

    def _model(self, model: str) -> tuple[TextCounter, ModelLimits | None] | None:
        """The model's token counter and limits, remembered for priced models only (a finite set, whatever the file)."""
        price = self._prices.price_for(model)
        if price is None:
            return None
        known = self._known[model] = (self._token_counters(price.encoding), self._models.limits_for(model))
        return known

    def _validate_general(self, line: int, raw: bytes) -> ValidRequest | InvalidLine:
        """Any shape of line; the one place that decides error codes and messages."""
        if may_nest_too_deep(raw) and (depth := nesting_depth(raw)) > MAX_JSON_DEPTH:
            return InvalidLine(
                line,
                None,
                "invalid_json",
                f"line is nested {depth} levels deep; a request may nest at most {MAX_JSON_DEPTH} levels",
            )
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            try:
                raw.decode()
            except UnicodeDecodeError as bad:
                return InvalidLine(line, None, "invalid_encoding", f"line is not valid UTF-8 at byte {bad.start + 1}")
            return InvalidLine(line, None, "invalid_json", f"line is not valid JSON: {exc}")
        if type(record) is not dict:
            return InvalidLine(line, None, "not_an_object", f"line must be a JSON object, got {type(record).__name__}")
        custom_id = record.get("custom_id")
        if type(custom_id) is not str or not custom_id:
            code = "missing_custom_id" if custom_id is None else "invalid_custom_id"
            return InvalidLine(line, None, code, "field 'custom_id' must be a non-empty string")
        method = record.get("method")
        if method != "POST":
            return InvalidLine(line, custom_id, "invalid_method", f"field 'method' must be \"POST\", got {method!r}")
        url = record.get("url")
        if url not in self._endpoints:
            return InvalidLine(
                line,
                custom_id,
                "invalid_url",
                f"field 'url' must be one of {', '.join(sorted(self._endpoints))}, got {url!r}",
            )
        body = record.get("body")
        if type(body) is not dict:
            return InvalidLine(line, custom_id, "invalid_body", "field 'body' must be a JSON object")
        model = body.get("model")
        if type(model) is not str or not model:
            return InvalidLine(line, custom_id, "missing_model", "field 'body.model' must be a non-empty string")
        known = self._known.get(model) or self._model(model)
        if known is None:
            return InvalidLine(
                line,
                custom_id,
                "unknown_model",
                self._prices.unpriced_message(model),
            )
        counter, limits = known
        if limits is not None and url not in limits.endpoints:
            return InvalidLine(
                line,
                custom_id,
                "model_not_supported_for_endpoint",
                f"model {model!r} ({limits.kind.value} model) is not served on {url}; "
                f"its endpoints: {', '.join(sorted(limits.endpoints))}",
            )
        required = REQUIRED_BODY_FIELDS[url]
        if body.get(required) in (None, "", []):
            return InvalidLine(line, custom_id, "missing_field", f"field 'body.{required}' is required for {url}")
        problem = _input_problem(url, body, model, limits)
        if problem is not None:
            code, message = problem
            return InvalidLine(line, custom_id, code, message)
        problem = parameter_problem(
            url,
            body,
            model=model,
            output_cap=limits.max_output_tokens if limits is not None else None,
            dimensions=limits.max_dimensions if limits is not None else None,
        )
        if problem is not None:
            return InvalidLine(line, custom_id, "invalid_parameter", problem[1])
        cap = _output_cap(url, body)
        if url in ("/v1/embeddings", "/v1/moderations"):
            budget = 0
        elif url == "/v1/completions":
            prompt = body["prompt"]
            prompts = len(prompt) if type(prompt) is list and type(prompt[0]) is not int else 1
            budget = output_budget(cap, 16, body.get("n"), body.get("best_of"), prompts)
        else:
            budget = output_budget(cap, self._assumed_output_tokens, body.get("n"))
        fixed, texts = prompt_parts(url, body)
        prompt_limit, item_limit = token_limits(url, limits, cap)
        return ValidRequest(
            line=line,
            custom_id=custom_id,
            url=url,
            model=model,
            raw=raw,
            max_output_tokens=budget,
            fixed_tokens=fixed,
            texts=texts,
            counter=counter,
            prompt_limit=prompt_limit,
            item_limit=item_limit,
        )

    def after_count(self, request: ValidRequest) -> InvalidLine | None:
        """The refusal of a counted request whose prompt does not fit what the provider allows, if any.

        Only the rare request over a limit costs more than one comparison: each of its texts is
        then counted alone (from the counter's caches) to name the one too long.
        """
        tokens = request.prompt_tokens
        if tokens <= request.prompt_limit and (not request.item_limit or tokens <= request.item_limit):
            return None
        limits = self._models.limits_for(request.model)
        window = limits.context_window if limits is not None else None
        if tokens > request.prompt_limit:
            if request.url == "/v1/embeddings":
                reason = (
                    f"the inputs are {tokens:,} tokens in all; an embedding request may have at most "
                    f"{EMBEDDING_MAX_REQUEST_TOKENS:,}"
                )
            else:
                asked = window - request.prompt_limit if window is not None else 0
                output = f" and the {asked:,} output tokens it asks for" if asked else ""
                reason = f"the prompt's {tokens:,} tokens{output} exceed {request.model}'s context window of {window:,}"
            return InvalidLine(request.line, request.custom_id, "context_length_exceeded", reason)
        if window is None:  # no context window known: token_limits set no per-text limit either
            return None
        field = "input" if request.url == "/v1/embeddings" else "prompt"
        text = request.counter.text
        for index, item in enumerate(request.texts):
            count = text(item)
            if count > request.item_limit:
                where = f"body.{field}" if len(request.texts) == 1 else f"body.{field}[{index}]"
                if request.url == "/v1/embeddings":
                    reason = f"field '{where}' is {count:,} tokens; {request.model} embeds at most {window:,} per input"
                else:
                    reason = (
                        f"field '{where}' is {count:,} tokens and the output asked for "
                        f"{window - request.item_limit:,}: more than {request.model}'s context window of {window:,}"
                    )
                return InvalidLine(request.line, request.custom_id, "context_length_exceeded", reason)
        return None


def _output_cap(url: str, body: dict[str, Any]) -> int | None:
    for name in OUTPUT_CAP_FIELDS.get(url, ()):
        value: int | None = body.get(name)  # parameter_problem has held it to an integer
        if value is not None:
            return value
    return None


def _input_problem(url: str, body: dict[str, Any], model: str, limits: ModelLimits | None) -> tuple[str, str] | None:
    """(code, message) when the body's messages or inputs are not of a shape the endpoint takes."""
    if url == "/v1/chat/completions":
        messages = body["messages"]
        if type(messages) is not list:
            return "invalid_field", "field 'body.messages' must be a list"
        for index, message in enumerate(messages):
            if type(message) is not dict:
                return "invalid_field", f"field 'body.messages[{index}]' must be an object"
            if message.get("role") not in ROLES or type(message.get("role")) is not str:
                return "invalid_field", (
                    f"field 'body.messages[{index}].role' must be one of {', '.join(ROLES)}, "
                    f"got {shown(message.get('role'))}"
                )
        return None
    if url == "/v1/responses":
        if type(body["input"]) not in (str, list):
            return "invalid_field", "field 'body.input' must be a string or a list of input items"
        instructions = body.get("instructions")
        if instructions is not None and type(instructions) is not str:
            return "invalid_field", "field 'body.instructions' must be a string"
        return None
    if url == "/v1/moderations":
        value = body["input"]
        if type(value) is str or (type(value) is list and all(type(item) in (str, dict) for item in value)):
            return None
        return "invalid_field", "field 'body.input' must be a string, a list of strings or a list of input objects"
    field = "input" if url == "/v1/embeddings" else "prompt"
    value = body[field]
    if type(value) is str:
        return None
    kinds = {type(item) for item in value} if type(value) is list else set()
    token_arrays = kinds == {list} and all(item and all(type(t) is int for t in item) for item in value)
    if kinds not in ({str}, {int}) and not token_arrays:
        return "invalid_field", (
            f"field 'body.{field}' must be a string, a list of strings, a list of token ids or a list of lists of them"
        )
    if url == "/v1/completions":
        return None
    if len(value) > EMBEDDING_MAX_INPUTS:
        return "invalid_field", f"field 'body.input' has {len(value)} inputs; at most {EMBEDDING_MAX_INPUTS} are taken"
    if kinds == {str} and "" in value:
        return "invalid_field", f"field 'body.input[{value.index('')}]' is empty; an input cannot be an empty string"
    window = limits.context_window if limits is not None else None
    arrays = [value] if kinds == {int} else value if token_arrays else []
    for index, tokens in enumerate(arrays):
        if window is not None and len(tokens) > window:
            where = "body.input" if kinds == {int} else f"body.input[{index}]"
            return "context_length_exceeded", (
                f"field '{where}' is {len(tokens):,} tokens; {model} embeds at most {window:,} per input"
            )
    return None
