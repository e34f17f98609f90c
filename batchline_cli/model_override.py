"""`batchline submit --model M`: a copy of the input whose every request asks for model M.

Every physical line keeps its place (blank lines included), so the line numbers in the job's
results and errors are those of the user's own file. A line that is not a request object is
copied as it is, and the pipeline reports it as invalid as it would have. A file that mixes
endpoints is refused: one model cannot serve both chat and embeddings requests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from batchline.domain.request_line import UTF8_BOM
from batchline.engines.streams import split_lines

CHUNK_BYTES = 1 << 20


class MixedEndpointsError(ValueError):
    """The file's requests go to more than one endpoint; the message names them."""


@dataclass(frozen=True)
class Rewritten:
    path: Path
    requests: int  # lines whose body.model was set
    copied: int  # non-blank lines copied unchanged (not a request object)
    models_before: dict[str, int]


def _chunks(path: Path, on_bytes: Callable[[int], None]) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            on_bytes(len(chunk))
            yield chunk


def rewrite_model(
    source: Path, target: Path, model: str, *, on_bytes: Callable[[int], None] = lambda n: None
) -> Rewritten:
    """Write `source` to `target` with body.model = `model` in every request; refuse mixed endpoints."""
    endpoints: Counter[str] = Counter()
    before: Counter[str] = Counter()
    requests = copied = 0
    with target.open("wb") as out:
        for number, raw in enumerate(split_lines(_chunks(source, on_bytes)), 1):
            text = raw.removeprefix(UTF8_BOM) if number == 1 else raw
            try:
                request = orjson.loads(text) if text.strip() else None
            except orjson.JSONDecodeError:
                request = None
            body = request.get("body") if isinstance(request, dict) else None
            if not isinstance(body, dict):
                copied += bool(text.strip())
                out.write(raw + b"\n")
                continue
            endpoints[str(request.get("url"))] += 1
            before[str(body.get("model"))] += 1
            body["model"] = model
            out.write(orjson.dumps(request) + b"\n")
            requests += 1
    if len(endpoints) > 1:
        target.unlink()
        found = ", ".join(f"{url} ({count:,})" for url, count in endpoints.most_common())
        raise MixedEndpointsError(
            f"--model {model} would send every request to one model, but the file's requests go to {found}: "
            "split the file by endpoint, or submit it without --model"
        )
    return Rewritten(path=target, requests=requests, copied=copied, models_before=dict(before.most_common()))
