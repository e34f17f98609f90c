"""Realistic, reproducible OpenAI batch requests for the demo, the tests and the benchmarks.

Every generator is seeded, so the same (n, seed) always gives the same lines, and streams: it
yields one line at a time and never holds n of them. A line is the request's JSON as UTF-8
``bytes`` without the trailing newline (what `write_jsonl` adds and what the planner's
`ValidRequest.raw` holds).

The feedback texts are assembled from sentence templates of four moods (praise, complaint,
neutral remark, mixed) over a shared vocabulary of products, places, times and people, so that
lengths (10 to 80 words) and token counts vary the way real customer feedback does.
"""

from __future__ import annotations

import random
from bisect import bisect
from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate
from pathlib import Path
from string import Formatter

import orjson

CHAT_MODEL = "gpt-4o-mini"
EMBEDDING_MODEL = "text-embedding-3-small"

CLASSIFY_SYSTEM_PROMPT = (
    "You label customer feedback for a retail support team. Reply with exactly one sentiment "
    "(positive, negative, neutral or mixed) and one topic (delivery, product_quality, billing, "
    "support, website, returns or other), as 'sentiment/topic', and nothing else."
)
SUMMARY_INSTRUCTIONS = (
    "Summarise this customer support conversation for the account manager in at most two "
    "sentences: what the customer wanted, what was done, and whether anything is still open."
)

_MIN_WORDS = 10
_MAX_WORDS = 80

# The vocabulary each {slot} of a template draws from.
_SLOTS: dict[str, tuple[str, ...]] = {
    "product": (
        "blender",
        "standing desk",
        "air fryer",
        "rain jacket",
        "pair of running shoes",
        "coffee grinder",
        "office chair",
        "phone case",
        "bluetooth speaker",
        "duvet cover",
        "cast iron pan",
        "kettle",
        "backpack",
        "desk lamp",
        "vacuum cleaner",
        "yoga mat",
        "set of kitchen knives",
        "winter coat",
        "electric toothbrush",
        "baby monitor",
        "gaming headset",
        "bookshelf",
        "water bottle",
        "mattress",
    ),
    "part": (
        "zip",
        "lid",
        "power cable",
        "handle",
        "strap",
        "battery",
        "charger",
        "seam",
        "switch",
        "screen",
        "instruction manual",
        "box",
        "remote",
        "filter",
    ),
    "staff": (
        "Sarah",
        "the agent",
        "Marco",
        "someone in the chat",
        "Priya",
        "the driver",
        "Tom",
        "the store manager",
    ),
    "channel": ("live chat", "the phone line", "email", "the app", "the contact form", "Twitter"),
    "when": (
        "yesterday",
        "last week",
        "on Monday",
        "two weeks ago",
        "this morning",
        "over the weekend",
        "in March",
    ),
    "delay": ("two days", "a week", "nine days", "almost three weeks", "48 hours", "a month"),
    "amount": ("$12.99", "$45", "$89.50", "$7.20", "$230", "£18", "€64"),
    "good": (
        "great",
        "excellent",
        "really solid",
        "better than expected",
        "fantastic",
        "well made",
        "lovely",
    ),
    "bad": ("flimsy", "disappointing", "cheaply made", "faulty", "useless", "not as described", "broken"),
    "site": (
        "the checkout page",
        "the app",
        "the order tracking page",
        "the website",
        "the size guide",
        "my account page",
    ),
    "order": tuple(str(number) for number in range(4_100_003, 4_999_999, 7919)),
}

_PRAISE = (
    "The {product} arrived {when} and it is {good}.",
    "Honestly the {product} is {good}, I use it every day.",
    "{staff} was super helpful and sorted everything out over {channel}.",
    "Delivery was faster than promised and the packaging was neat.",
    "Really happy with the {product}, the quality is {good} for the price.",
    "Ordering through {site} was quick and painless.",
    "I've already recommended you to two friends.",
    "Thanks to {staff} for the quick refund of {amount}, much appreciated!",
    "Five stars, would buy from you again without a second thought.",
    "The {part} feels sturdy and the whole thing looks {good}.",
)
_COMPLAINT = (
    "My {product} arrived {delay} late and nobody told me why.",
    "The {part} on the {product} broke after {delay} of normal use.",
    "I was charged {amount} twice and still haven't had the money back.",
    "I contacted you via {channel} {when} and nobody has replied yet.",
    "Honestly the {product} feels {bad} and I expected more.",
    "{site} kept crashing when I tried to pay, so I had to order three times.",
    "The box was crushed and the {part} was missing.",
    "I asked for a return {when} and the label never came through.",
    "Very frustrating experience, I won't be ordering again.",
    "{staff} was rude and hung up on me before I could explain.",
    "The {product} is {bad}, not worth {amount} at all.",
)
_NEUTRAL = (
    "I ordered a {product} {when}.",
    "It took {delay} to arrive, which is roughly what the site said.",
    "Can you tell me whether the {product} comes with a spare {part}?",
    "I paid {amount} including shipping.",
    "I'm writing about order {order} placed through {site}.",
    "Not sure yet how I feel about the {product}, I've only used it a couple of times.",
    "I'd like to change the delivery address on my order if that's still possible.",
    "Is there a way to get an invoice with my company name on it?",
    "The colour is a bit different from the photos but that's fine.",
)
_MIXED = (
    "The {product} itself is {good} but the {part} feels {bad}.",
    "Delivery took {delay}, although {staff} kept me updated the whole time.",
    "Good price, but {site} made it really hard to apply the discount code.",
    "The refund of {amount} came through eventually, it just took far too long.",
    "Love the {product}, hate that the {part} is sold separately.",
)
# Most feedback leans one way: one mood per text, with the odd aside from another.
_MOOD_WEIGHTS = (0.35, 0.35, 0.2, 0.1)
_ON_MOOD = 0.8
_MAX_DRAWS = 30
_OPENERS = ("", "", "", "Hi,\n", "Hello! ", "Hi team. ", "Just a quick note: ", "To whom it may concern: ")
_CLOSERS = ("", "", "", " Thanks.", " Thank you!", " Please get back to me.", " Regards, J.", " Cheers")
_AGENTS = ("Sarah", "Marco", "Priya", "Tom", "Aisha", "Ben")
_AGENT_REPLIES = (
    "Sorry to hear that. I've raised a replacement {product} and it should ship within {delay}.",
    "Thanks for getting in touch. I've refunded {amount} to your original payment method.",
    "I've checked the order and the courier reports it was delivered {when}. Could a neighbour have it?",
    "I've passed this to our quality team and added a note to your account.",
    "Could you send a photo of the {part} so I can process the claim?",
    "I've sent a prepaid return label to your email address.",
)

# Products worth embedding, each with the materials it is plausibly made of.
_CATALOGUE = (
    ("standing desk", ("oak", "bamboo", "powder-coated steel")),
    ("rain jacket", ("recycled nylon", "waxed cotton")),
    ("coffee grinder", ("stainless steel", "ceramic and beech")),
    ("office chair", ("mesh and aluminium", "recycled plastic")),
    ("duvet cover", ("organic cotton", "linen", "bamboo lyocell")),
    ("cast iron pan", ("pre-seasoned cast iron", "enamelled cast iron")),
    ("backpack", ("recycled polyester", "waxed canvas", "leather")),
    ("desk lamp", ("aluminium", "brass", "walnut")),
    ("yoga mat", ("natural rubber", "cork", "TPE foam")),
    ("winter coat", ("merino wool", "recycled down")),
    ("water bottle", ("stainless steel", "borosilicate glass")),
    ("bookshelf", ("oak", "pine", "birch plywood")),
)
_ADJECTIVES = ("Lightweight", "Compact", "Heavy-duty", "Handmade", "Water-resistant", "Ergonomic", "Premium")
_FEATURES = (
    "a two-year warranty",
    "a lifetime guarantee",
    "free repairs for three years",
    "a carry bag",
    "adjustable fittings",
    "a non-slip base",
    "replaceable parts",
    "plastic-free packaging",
)
_USES = (
    "Ideal for small homes and busy mornings.",
    "Designed for daily commuting and weekend trips.",
    "Built to last through years of everyday use.",
    "Perfect as a gift for new homeowners.",
    "Suitable for beginners and professionals alike.",
    "Easy to clean and simple to store.",
)
_COLOURS = ("black", "sand", "forest green", "navy", "white", "terracotta", "slate grey")

_Template = tuple[tuple[str, tuple[str, ...] | None], ...]  # (literal, vocabulary of the slot after it)


def _compile(template: str) -> _Template:
    return tuple((literal, _SLOTS[slot] if slot else None) for literal, slot, _, _ in Formatter().parse(template))


_MOODS = tuple(tuple(_compile(t) for t in mood) for mood in (_PRAISE, _COMPLAINT, _NEUTRAL, _MIXED))
# Weighed as Random.choices does, without its per-call overhead.
_MOOD_CUMULATIVE = tuple(accumulate(_MOOD_WEIGHTS))
_WORDS = {text: len(text.split()) for text in (*_OPENERS, *_CLOSERS)}
_REPLIES = tuple(_compile(t) for t in _AGENT_REPLIES)


def _pick(seq, rand: Callable[[], float]):
    # Cheaper than Random.choice, and as reproducible: rand() is the same for the same seed.
    return seq[int(rand() * len(seq))]


def _fill(template: _Template, rand: Callable[[], float]) -> str:
    return "".join(
        [
            literal + vocabulary[int(rand() * len(vocabulary))] if vocabulary else literal
            for literal, vocabulary in template
        ]
    )


def feedback_text(rnd: random.Random) -> str:
    """One piece of customer feedback of 10 to 80 words, greeting and sign-off included."""
    rand = rnd.random
    mood = _MOODS[bisect(_MOOD_CUMULATIVE, rand() * _MOOD_CUMULATIVE[-1], 0, len(_MOODS) - 1)]
    opener, closer = _pick(_OPENERS, rand), _pick(_CLOSERS, rand)
    words = _WORDS[opener] + _WORDS[closer]
    target = int(rnd.triangular(_MIN_WORDS, _MAX_WORDS, 22))
    sentences: list[str] = []
    used: set[int] = set()  # ids: hashing a nested tuple on every draw would cost more than the rest
    draws = 0
    while words < target:
        draws += 1
        template = _pick(mood if rand() < _ON_MOOD else _pick(_MOODS, rand), rand)
        if id(template) in used and draws < _MAX_DRAWS:
            continue  # people rarely say the same thing twice
        sentence = _fill(template, rand)
        size = sentence.count(" ") + 1
        if words >= _MIN_WORDS and words + size > _MAX_WORDS:
            break
        used.add(id(template))
        sentences.append(sentence[0].upper() + sentence[1:])
        words += size
    text = opener + " ".join(sentences) + closer
    if rand() < 0.08:
        text = text.lower()  # some people never press shift
    return text


def product_description(rnd: random.Random) -> str:
    rand = rnd.random
    product, materials = _pick(_CATALOGUE, rand)
    adjective, material = _pick(_ADJECTIVES, rand), _pick(materials, rand)
    return (
        f"{adjective} {product} in {material}, with {_pick(_FEATURES, rand)}. "
        f"{_pick(_USES, rand)} Available in {_pick(_COLOURS, rand)}."
    )


def _support_thread(rnd: random.Random) -> str:
    rand = rnd.random
    turns = [f"Customer: {feedback_text(rnd)}"]
    for _ in range(rnd.randint(1, 3)):
        turns.append(f"Agent ({_pick(_AGENTS, rand)}): {_fill(_pick(_REPLIES, rand), rand)}")
        turns.append(f"Customer: {feedback_text(rnd)}")
    return "\n".join(turns)


def _line(custom_id: str, url: str, body: dict) -> bytes:
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def _classification(index: int, rnd: random.Random) -> bytes:
    return _line(
        f"feedback-{index:07d}",
        "/v1/chat/completions",
        {
            "model": CHAT_MODEL,
            "messages": [
                {"role": "system", "content": CLASSIFY_SYSTEM_PROMPT},
                {"role": "user", "content": feedback_text(rnd)},
            ],
            "max_tokens": 8,
            "temperature": 0,
        },
    )


def _embedding(index: int, rnd: random.Random) -> bytes:
    return _line(
        f"product-{index:07d}",
        "/v1/embeddings",
        {
            "model": EMBEDDING_MODEL,
            "input": product_description(rnd),
        },
    )


def _summary(index: int, rnd: random.Random) -> bytes:
    return _line(
        f"thread-{index:07d}",
        "/v1/responses",
        {
            "model": CHAT_MODEL,
            "instructions": SUMMARY_INSTRUCTIONS,
            "input": _support_thread(rnd),
            "max_output_tokens": 80,
        },
    )


_Builder = Callable[[int, random.Random], bytes]


def _generate(builder: _Builder, n: int, seed: int) -> Iterator[bytes]:
    rnd = random.Random(seed)
    for index in range(1, n + 1):
        yield builder(index, rnd)


def chat_requests(n: int, seed: int = 0) -> Iterator[bytes]:
    """n feedback-classification requests on /v1/chat/completions (gpt-4o-mini): the benchmark load."""
    return _generate(_classification, n, seed)


def embedding_requests(n: int, seed: int = 0) -> Iterator[bytes]:
    """n product-description embeddings on /v1/embeddings (text-embedding-3-small)."""
    return _generate(_embedding, n, seed)


def summary_requests(n: int, seed: int = 0) -> Iterator[bytes]:
    """n support-thread summaries on /v1/responses (gpt-4o-mini)."""
    return _generate(_summary, n, seed)


# Share of each kind in the mixed example: mostly classification, a good part embeddings, a few summaries.
_MIX: tuple[tuple[_Builder, float], ...] = ((_classification, 0.6), (_embedding, 0.3), (_summary, 0.1))


def mixed_example(n: int, seed: int = 0) -> Iterator[bytes]:
    """n requests across two models and three endpoints, interleaved as a real job would be.

    custom_ids carry a prefix per kind and a number counted across the whole file, so they are unique.
    """
    rnd = random.Random(seed)
    builders = [builder for builder, _ in _MIX]
    weights = [weight for _, weight in _MIX]
    for index in range(1, n + 1):
        yield rnd.choices(builders, weights)[0](index, rnd)


def write_jsonl(path: str | Path, lines: Iterable[bytes]) -> int:
    """Write each line followed by a newline; return how many were written. Streams in bounded memory."""
    count = 0
    batch: list[bytes] = []
    with open(path, "wb") as file:
        for line in lines:
            batch.append(line)
            if len(batch) == 4096:
                file.write(b"\n".join(batch) + b"\n")
                count += len(batch)
                batch.clear()
        if batch:
            file.write(b"\n".join(batch) + b"\n")
            count += len(batch)
    return count
