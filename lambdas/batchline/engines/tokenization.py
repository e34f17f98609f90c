"""The token-counting engine: exact counts with tiktoken, fast enough for millions of requests.

What of a request is counted is the domain's rule (`batchline.domain.tokens`: the per-message
overheads, `prompt_parts`); this module encodes the texts. Text is encoded with tiktoken's
``encode_ordinary`` so that user text that happens to spell a special token is counted as text,
as the API does, instead of raising. Encoding is the expensive part (about 20 us for a paragraph).
Two things make it cheap for millions of requests:

- Word caches. Under the o200k_base and cl100k_base split patterns, in a text where no white
  space is directly followed by a space, a piece never holds a space except as its first
  character, and whether a piece ends at a space never depends on what follows the space. Such a
  text, cut at its spaces into words, has exactly the tokens of its first word plus those of
  " " + each later word, each encoded on its own (`_words`). Words repeat (Zipf), so after a
  warm-up a paragraph is counted from two dicts; a word seen for the first time is encoded once,
  alone. Other texts (double spaces, a space after a newline), and other encodings, are encoded
  whole as before.
- Another core. Counting from the word caches is Python, so threads cannot run it beside the
  parser; `ParallelTokenCounter` runs it in a small helper process that mirrors the caches (it
  never loads an encoding: whatever it cannot answer comes back to be counted here, and the words
  learned doing so go with the next block). When the helper is behind, a block goes whole to
  tiktoken on a thread (tiktoken releases the GIL), or is counted from the caches on the caller.
"""

from __future__ import annotations

import marshal
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from itertools import islice
from typing import Any

import tiktoken

from batchline.domain.tokens import prompt_parts

# Roles, names and shared system prompts repeat across millions of requests; remembering the
# first few thousand distinct short strings saves most of their encoding.
_CACHE_ENTRIES = 8192
_CACHE_MAX_CHARS = 4096

# Distinct words remembered per encoding (first words and " word" forms apart): ~10 MB at most.
_WORD_ENTRIES = 1 << 16
_WORD_MAX_CHARS = 64

# The split patterns for which the word rule above was checked (o200k_base and cl100k_base of
# tiktoken 0.14, the encodings the price table uses). Another pattern keeps whole-text counting.
_WORD_ADDITIVE_PATTERNS = frozenset(
    (
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"""
        r"""|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"""
        r"""|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]"""
        r"""|\s+(?!\S)|\s""",
    )
)

# Unicode White_Space beyond ASCII, which the split patterns' \s also means. A space right after
# any white space (a space included) is the one thing that breaks the word rule.
_NON_ASCII_WHITESPACE = tuple(
    (character, character + " ")
    for character in "\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


def _words(text: str) -> list[str] | None:
    """The text cut at its spaces, when the word rule holds for it; else None.

    One-character searches run at memory speed while two-character ones do not, so each pair is
    only looked for when its white space character is there at all.
    """
    if (
        "  " in text
        or ("\n" in text and "\n " in text)
        or ("\t" in text and "\t " in text)
        or ("\r" in text and "\r " in text)
        or ("\x0b" in text and "\x0b " in text)
        or ("\x0c" in text and "\x0c " in text)
    ):
        return None
    if not text.isascii():
        for character, followed in _NON_ASCII_WHITESPACE:
            if character in text and followed in text:
                return None
    return text.split(" ")


# Blocks smaller than this are never sent to the helper process, so small files never start it.
_HELPER_MIN_JOBS = 1024

# A text or word still to encode: (owner index, text, where to remember its count: None for the
# whole-text cache, else (word table, word)).
_Pending = tuple[int, str, "tuple[dict[str, int], str] | None"]


# tiktoken encodes the text on each side of an allowed special token on its own, so joining many
# texts with it and encoding once gives each text's exact count, in one call into Rust.
SEPARATOR = "<|endoftext|>"


class TokenCounter:
    """Counts tokens for one tiktoken encoding, exactly; caches whole short texts and words."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._tiktoken = tiktoken.get_encoding(encoding)
        self._encode = self._tiktoken.encode_ordinary
        self._separator_id = self._tiktoken.encode_single_token(SEPARATOR)
        self._cache: dict[str, int] = {}
        self.by_words = self._tiktoken._pat_str in _WORD_ADDITIVE_PATTERNS
        self._heads: dict[str, int] = {"": 0}  # a text's first word -> its tokens
        self._tails: dict[str, int] = {}  # any later word -> the tokens of " " + word
        self._learned: list[tuple[bool, str, int]] = []  # (head?, word, count) not yet sent to the helper

    def text(self, text: str) -> int:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        if self.by_words:
            words = _words(text)
            if words is not None:
                pending: list[_Pending] = []
                total = self.known_words(words, 0, pending)
                if pending:
                    total += sum(self.count_pending(pending))
                self._remember(text, total)
                return total
        count = len(self._encode(text))
        self._remember(text, count)
        return count

    def known_words(self, words: list[str], owner: int, pending: list[_Pending]) -> int:
        """Tokens of the text cut into `words` by `_words`, from the word caches; the words not
        cached yet are appended to `pending` (with `owner`) to be encoded on their own."""
        heads, tails = self._heads, self._tails
        try:
            return heads[words[0]] + sum(map(tails.__getitem__, islice(words, 1, None)))
        except KeyError:
            pass
        total = 0
        first = words[0]
        count = heads.get(first)
        if count is None:
            pending.append((owner, first, (heads, first)))
        else:
            total += count
        for word in islice(words, 1, None):
            count = tails.get(word)
            if count is None:
                pending.append((owner, " " + word, (tails, word)))
            else:
                total += count
        return total

    def count_pending(self, pending: Sequence[_Pending]) -> list[int]:
        """Encode the pending texts and words in one call, remember their counts, return them."""
        counts = self._encode_counts([text for _, text, _ in pending])
        for (_, text, memo), count in zip(pending, counts, strict=True):
            if memo is None:
                self._remember(text, count)
            else:
                table, word = memo
                if len(table) < _WORD_ENTRIES and len(word) <= _WORD_MAX_CHARS and word not in table:
                    table[word] = count
                    self._learned.append((table is self._heads, word, count))
        return counts

    def take_learned(self) -> list[tuple[bool, str, int]]:
        """The words learned since the last call (safe while other threads keep learning)."""
        learned = self._learned
        taken = learned[: len(learned)]
        del learned[: len(taken)]
        return taken

    def _remember(self, text: str, count: int) -> None:
        if len(self._cache) < _CACHE_ENTRIES and len(text) <= _CACHE_MAX_CHARS:
            self._cache[text] = count

    def cached(self, text: str) -> int | None:
        return self._cache.get(text)

    def count_texts(self, texts: Sequence[str]) -> int:
        text = self.text
        return sum(text(t) for t in texts)

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """Each text's count, from a single encode call (the GIL is taken once, not once per text)."""
        counts = self._encode_counts(texts)
        for text, count in zip(texts, counts, strict=True):
            self._remember(text, count)
        return counts

    def _encode_counts(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        joined = SEPARATOR.join(texts)
        if joined.count(SEPARATOR) != len(texts) - 1:
            # Some text itself spells the separator: count them one by one, as plain text.
            return [len(self._encode(t)) for t in texts]
        tokens = self._tiktoken.encode(joined, allowed_special={SEPARATOR}, disallowed_special=())
        counts: list[int] = []
        find = tokens.index
        start = 0
        separator = self._separator_id
        for _ in range(len(texts) - 1):
            end = find(separator, start)
            counts.append(end - start)
            start = end + 1
        counts.append(len(tokens) - start)
        return counts

    def prompt_tokens(self, url: str, body: dict[str, Any]) -> int:
        fixed, texts = prompt_parts(url, body)
        return fixed + self.count_texts(texts)


@cache
def token_counter(encoding: str) -> TokenCounter:
    return TokenCounter(encoding)


def serve_word_counts() -> None:
    """The helper process: counts texts from word caches mirrored from its parent, until stdin closes.

    Each request is marshal((encoding, learned words, texts)) after its 4-byte length; the reply
    is marshal([tokens, or None when a word is unknown or the text breaks the word rule]).
    """
    read, write = sys.stdin.buffer.read, sys.stdout.buffer.write
    tables: dict[str, tuple[dict[str, int], dict[str, int]]] = {}
    while len(header := read(4)) == 4:
        encoding, learned, texts = marshal.loads(read(int.from_bytes(header, "little")))
        heads, tails = tables.setdefault(encoding, ({"": 0}, {}))
        for is_head, word, count in learned:
            (heads if is_head else tails)[word] = count
        counts: list[int | None] = []
        for text in texts:
            words = _words(text)
            if words is None:
                counts.append(None)
                continue
            try:
                counts.append(heads[words[0]] + sum(map(tails.__getitem__, islice(words, 1, None))))
            except KeyError:
                counts.append(None)
        reply = marshal.dumps(counts)
        write(len(reply).to_bytes(4, "little") + reply)
        sys.stdout.buffer.flush()


class _Helper:
    """The parent's end of the helper process; talked to from one thread at a time."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
        self._process = subprocess.Popen(
            [sys.executable, "-c", "from batchline.engines.tokenization import serve_word_counts; serve_word_counts()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )

    def count(self, counter: TokenCounter, texts: list[str]) -> list[int | None]:
        payload = marshal.dumps((counter.encoding, counter.take_learned(), texts))
        process = self._process
        process.stdin.write(len(payload).to_bytes(4, "little") + payload)
        process.stdin.flush()
        header = process.stdout.read(4)
        if len(header) != 4:
            raise EOFError("the word-count helper stopped")
        return marshal.loads(process.stdout.read(int.from_bytes(header, "little")))

    def close(self) -> None:
        process = self._process
        try:
            process.stdin.close()
            process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
        process.stdout.close()


class BlockCounts:
    """The counts of one submitted block: call it for them (it waits for the threads if need be)."""

    __slots__ = ("_totals", "_tasks")

    def __init__(self, totals: list[int], tasks: list[tuple[list[int], Future]]) -> None:
        self._totals = totals
        self._tasks = tasks

    def ready(self) -> bool:
        """True when calling would not wait."""
        return all(future.done() for _, future in self._tasks)

    def __call__(self) -> list[int]:
        totals = self._totals
        for owners, future in self._tasks:
            for owner, count in zip(owners, future.result(), strict=True):
                totals[owner] += count
        self._tasks = []
        return totals


class ParallelTokenCounter:
    """Counts the texts of many prompts, sharing the work between the caller, a helper process and
    background threads.

    A large block's texts go to the helper process while it has fewer than `helper_blocks_ahead`
    earlier blocks; else to the threads, whole, in one encode call per thread, while fewer than
    `blocks_ahead` earlier blocks are still being encoded there; else the caller counts them from
    the word caches and hands the threads only the words and texts never seen before. Whatever
    the route, the counts are the same: every text the helper cannot answer is counted here. If
    the helper cannot be started or stops, the other two routes carry on alone.
    """

    def __init__(
        self, threads: int, *, blocks_ahead: int = 1, helper_process: bool = True, helper_blocks_ahead: int = 3
    ) -> None:
        self._threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tokens")
        self._blocks_ahead = blocks_ahead
        self._handed_over: list[BlockCounts] = []
        self._helper_wanted = helper_process
        self._helper_blocks_ahead = helper_blocks_ahead
        self._helper: _Helper | None = None
        self._helper_io: ThreadPoolExecutor | None = None  # one thread: requests and replies in order
        self._helper_blocks: list[BlockCounts] = []

    def counter_for(self, encoding: str) -> TokenCounter:
        """The counter of `encoding` whose texts this pool takes (the process's one per encoding)."""
        return token_counter(encoding)

    def submit(self, jobs: Sequence[tuple[TokenCounter, list[str]]]) -> BlockCounts:
        """Start counting each (counter, texts) job; call the result for the counts, in job order."""
        self._helper_blocks = [block for block in self._helper_blocks if not block.ready()]
        to_helper = len(self._helper_blocks) < self._helper_blocks_ahead and self._helper_started(len(jobs))
        self._handed_over = [block for block in self._handed_over if not block.ready()]
        hand_over = not to_helper and len(self._handed_over) < self._blocks_ahead
        totals = [0] * len(jobs)
        pending: dict[TokenCounter, list[_Pending]] = {}
        helped: dict[TokenCounter, tuple[list[int], list[str]]] = {}
        counter = None
        for index, (job_counter, texts) in enumerate(jobs):
            if job_counter is not counter:
                counter = job_counter
                cache, heads, tails = counter._cache, counter._heads, counter._tails
                by_words = counter.by_words and not hand_over
                queue = pending.setdefault(counter, [])
                owners, for_helper = helped.setdefault(counter, ([], []))
                helper_route = to_helper and counter.by_words
            total = 0
            for text in texts:
                count = cache.get(text)
                if count is None:
                    if helper_route:
                        owners.append(index)
                        for_helper.append(text)
                        continue
                    words = _words(text) if by_words else None
                    if words is None:
                        queue.append((index, text, None))
                        continue
                    try:  # the common case, inline: every word known
                        count = heads[words[0]] + sum(map(tails.__getitem__, islice(words, 1, None)))
                    except KeyError:
                        total += counter.known_words(words, index, queue)
                        continue
                    if len(cache) < _CACHE_ENTRIES and len(text) <= _CACHE_MAX_CHARS:
                        cache[text] = count  # roles and shared prompts are counted once
                total += count
            totals[index] = total
        tasks: list[tuple[list[int], Future]] = []
        for counter, (owners, for_helper) in helped.items():
            if for_helper:
                tasks.append((owners, self._helper_io.submit(self._count_on_helper, counter, for_helper)))
        helper_tasks = len(tasks)
        for counter, queue in pending.items():
            if not queue:
                continue
            step = max(256, -(-len(queue) // self._threads))
            for start in range(0, len(queue), step):
                part = queue[start : start + step]
                future = self._pool.submit(counter.count_pending, part)
                tasks.append(([owner for owner, _, _ in part], future))
        counts = BlockCounts(totals, tasks)
        if helper_tasks:
            self._helper_blocks.append(counts)
        elif hand_over and tasks:
            self._handed_over.append(counts)
        return counts

    def _helper_started(self, jobs: int) -> bool:
        """Whether the helper takes blocks; started at the first large block (small files never need it)."""
        if self._helper is None and self._helper_wanted and jobs >= _HELPER_MIN_JOBS:
            self._helper_wanted = False  # one attempt
            try:
                self._helper = _Helper()
            except OSError:
                return False
            self._helper_io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="token-helper")
        return self._helper is not None

    def _count_on_helper(self, counter: TokenCounter, texts: list[str]) -> list[int]:
        """On the helper's I/O thread: its counts, and here the texts it could not answer."""
        helper = self._helper
        counts: list[int | None] = [None] * len(texts)
        if helper is not None:
            try:
                counts = helper.count(counter, texts)
            except (OSError, EOFError, ValueError):
                self._helper = None  # stopped: later blocks take the other routes
                helper.close()
        text = counter.text
        return [text(texts[index]) if count is None else count for index, count in enumerate(counts)]

    def close(self) -> None:
        if self._helper_io is not None:
            self._helper_io.shutdown(wait=True)
        if self._helper is not None:
            self._helper.close()
            self._helper = None
        self._pool.shutdown(wait=True)
