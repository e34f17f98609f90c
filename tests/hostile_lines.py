"""A file mixing plain lines with every line a lenient parser accepts and the provider does not.

Each entry is (line, expected): `"answered"` for a line the provider takes (however odd its bytes),
or the error code batchline must report for it on either route. Used by the end-to-end tests and
by anyone trying a route by hand (`python tests/hostile_lines.py FILE` writes it).
"""

from __future__ import annotations

import json
import sys

ANSWERED = "answered"


def _envelope(custom_id: str, url: str, body: dict) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def _chat_body(text: str = "Classify: the parcel came late.", model: str = "gpt-4o-mini", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 12, **extra}


def _chat(custom_id: str, **body) -> str:
    return json.dumps(_envelope(custom_id, "/v1/chat/completions", _chat_body(**body)))


def _raw(custom_id_json: str, body: dict, *, separator: str = " ") -> str:
    """A line whose custom_id is given as JSON text (raw characters allowed) and whose members are
    joined by `separator` (raw CR is JSON white space)."""
    members = [f'"custom_id":{separator}{custom_id_json}', '"method": "POST"', '"url": "/v1/chat/completions"']
    return "{" + ("," + separator).join([*members, '"body": ' + json.dumps(body)]) + "}"


def _nested(depth: int) -> dict:
    value: object = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value  # type: ignore[return-value]


def hostile_lines(plain: int = 20) -> list[tuple[str, str]]:
    """The plain lines first, then one of each hostile case (line numbers follow list order)."""
    lines = [(_chat(f"plain-{index}", text=f"Classify review {index}: fine."), ANSWERED) for index in range(plain)]
    deep = _envelope("too-deep", "/v1/chat/completions", _chat_body(metadata=None))
    deep["body"].pop("metadata")
    deep_text = json.dumps(deep)[:-2] + ', "metadata": ' + '{"k": ' * 1000 + '"x"' + "}" * 1000 + "}}"
    lines += [
        # 1. nesting far deeper than any parser on the way allows
        (deep_text, "invalid_json"),
        ('{"custom_id": "deep-list", "x": ' + "[" * 5000 + "]" * 5000 + "}", "invalid_json"),
        # 2. raw line separators and CR that validation accepts but a provider splits lines on
        (_raw('"sep\u2028id"', _chat_body()), ANSWERED),
        (_raw('"cr-whitespace"', _chat_body(), separator="\r"), ANSWERED),
        (_raw('"nel-in-text"', _chat_body(text="first\u0085second\u2029third")), ANSWERED),
        # 3. ids the realtime route must carry as they are
        (_chat("   "), ANSWERED),
        (_chat("café-ü-日本-🙂"), ANSWERED),
        (_chat("line\nbreak"), ANSWERED),
        (_chat("tab\tand\u2028sep"), ANSWERED),
        # 4. what the API itself refuses
        (_chat("max-tokens-negative", max_tokens=-5), "invalid_parameter"),
        (_chat("max-tokens-zero", max_tokens=0), "invalid_parameter"),
        (_chat("max-tokens-string", max_tokens="20"), "invalid_parameter"),
        (_chat("max-tokens-bool", max_tokens=True), "invalid_parameter"),
        (_chat("max-tokens-fraction", max_tokens=20.5), "invalid_parameter"),
        (_chat("max-tokens-huge", max_tokens=1e308), "invalid_parameter"),
        (_chat("max-tokens-trillion", max_tokens=10**12), "invalid_parameter"),
        (_chat("temperature-seven", temperature=7), "invalid_parameter"),
        (_chat("prompt-too-long", text="word " * 1_300_000), "context_length_exceeded"),
        (
            json.dumps(_envelope("chat-model-embedding", "/v1/embeddings", {"model": "gpt-4o-mini", "input": "x"})),
            "model_not_supported_for_endpoint",
        ),
        (_chat("embedding-model-chat", model="text-embedding-3-small"), "model_not_supported_for_endpoint"),
    ]
    return lines


def write_hostile_file(path, plain: int = 20) -> list[tuple[int, str]]:
    """Write the file; (line number, expected) for each line."""
    lines = hostile_lines(plain)
    with open(path, "w", encoding="utf-8", newline="") as file:
        for line, _ in lines:
            file.write(line + "\n")
    return [(number, expected) for number, (_, expected) in enumerate(lines, start=1)]


if __name__ == "__main__":
    for number, expected in write_hostile_file(sys.argv[1]):
        print(number, expected)
