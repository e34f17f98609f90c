"""Reading and validating the lines of an OpenAI batch input file.

A bad line never sinks the job: it becomes an `InvalidLine` with its 1-based physical line
number, a stable code and a message that says what is wrong, and the valid lines go on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import msgspec
import orjson

from batchline.domain.fast_lines import fast_parse
from batchline.domain.pricing import PriceBook
from batchline.domain.tokens import TokenCounter, max_output_tokens, prompt_parts, token_counter

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
    counter: TokenCounter
    prompt_tokens: int = 0

    def count_prompt_tokens(self) -> int:
        """Count now (one request at a time); the planner counts whole blocks on threads instead."""
        self.prompt_tokens = self.fixed_tokens + self.counter.count_texts(self.texts)
        return self.prompt_tokens


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


class RequestValidator:
    """Turns one physical line into a ValidRequest or an InvalidLine.

    Uniqueness of custom_id is checked by the caller's registry, since it spans the whole job.
    """

    def __init__(
        self,
        *,
        endpoints: Iterable[str],
        prices: PriceBook,
        assumed_output_tokens: int,
        max_line_bytes: int,
    ) -> None:
        self._endpoints = frozenset(endpoints)
        self._prices = prices
        self._assumed_output_tokens = assumed_output_tokens
        self._max_line_bytes = max_line_bytes
        self._counters: dict[str, TokenCounter] = {}

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
            custom_id, url, model, fixed, texts, cap = fast
            counter = self._counters.get(model) or self._counter_for(model)
            if counter is not None and url in self._endpoints:
                return ValidRequest(line, custom_id, url, model, raw, cap, fixed, texts, counter)
        return self._validate_general(line, raw)

    def _counter_for(self, model: str) -> TokenCounter | None:
        """The model's token counter, remembered for priced models only (a finite set, whatever the file)."""
        price = self._prices.price_for(model)
        if price is None:
            return None
        counter = self._counters[model] = token_counter(price.encoding)
        return counter

    def _validate_general(self, line: int, raw: bytes) -> ValidRequest | InvalidLine:
        """Any shape of line; the one place that decides error codes and messages."""
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
        price = self._prices.price_for(model)
        if price is None:
            return InvalidLine(
                line,
                custom_id,
                "unknown_model",
                f"model {model!r} has no entry in the pricing table; add it to the 'pricing' setting",
            )
        required = REQUIRED_BODY_FIELDS[url]
        if body.get(required) in (None, "", []):
            return InvalidLine(line, custom_id, "missing_field", f"field 'body.{required}' is required for {url}")
        if url == "/v1/chat/completions" and type(body["messages"]) is not list:
            return InvalidLine(line, custom_id, "invalid_field", "field 'body.messages' must be a list")
        fixed, texts = prompt_parts(url, body)
        return ValidRequest(
            line=line,
            custom_id=custom_id,
            url=url,
            model=model,
            raw=raw,
            max_output_tokens=max_output_tokens(url, body, self._assumed_output_tokens),
            fixed_tokens=fixed,
            texts=texts,
            counter=token_counter(price.encoding),
        )
