"""The whole realtime hot path against a provider's token bucket, beside the OpenAI cookbook's parallel processor.

For each size (3,000 and 20,000 requests by default) and each system, a fresh ``batchline emulator``
subprocess on a free localhost port plays the provider: a token bucket per model of 480,000 TPM and
30,000 RPM holding one second of refill (``--burst-seconds 1``: 8,000 tokens, refilled at 8,000 a
second), each answer taking 0.3 s; a request costs its prompt tokens plus its ``max_tokens`` and is
answered 429 when the bucket cannot hold it. Its statistics (``GET /_emulator/stats``) are read after
the run, so no run's figures mix with another's.

- batchline: ``batchline local run FILE --mode realtime --out DIR`` as a subprocess under
  ``/usr/bin/time -v``, with OPENAI_BASE_URL pointing at the emulator: moto, the real state machine,
  SQS, the Lambda handlers and the DynamoDB limiter, all in that one process (and its token-count
  helper). Outcomes come from DIR/results.jsonl and DIR/errors.jsonl, the AWS cost from
  DIR/summary.json (what the job would have cost on AWS, and its share of the LLM cost).
- cookbook: this script's own re-implementation, from its description, of the pattern of the OpenAI
  cookbook's ``api_request_parallel_processor.py``, run as ``bench_realtime.py --baseline FILE`` in a
  subprocess under ``/usr/bin/time -v``: one process, asyncio and AsyncOpenAI (max_retries=0); a
  local bucket of requests and one of tokens at 75% of the limits (its advised setting), each
  holding a minute's worth, starting full and refilling continuously; a request's cost estimated as
  its prompt tokens (tiktoken over the messages) plus ``max_tokens``; after a rate-limit error no
  request is sent until 15 s after the last one; up to 5 attempts a request, after which it is lost.
  It runs on one machine: no AWS cost.

The input is generated once per size, seeded: chat-completions requests for gpt-4o-mini with unique
custom_ids, a system prompt from a handful of everyday tasks and a user message of 20 to 400 words
(log-normal lengths, median 90) whose words are drawn Zipf-wise from an English vocabulary of about
2,000 words ordered by how common they are, in sentences and paragraphs; ``max_tokens`` 16 to 64.

Figures per (system, size): the share of the token limit used while sending, tokens_charged /
(tokens_per_minute / 60 x (last_admitted_at - first_admitted_at)); the share of calls answered 429;
the requests lost (batchline: input lines with no result, whether they ended in errors.jsonl or in
neither file; cookbook: requests that failed all their attempts); the wall time of the subprocess
(interpreter start and, for batchline, the local AWS stack included) and the sending span (first to
last admitted request; the limit share counts the bucket's starting burst, 8,000 tokens, so a run of
a few seconds can show more than 100%); peak RSS as /usr/bin/time -v reports it (the largest single
process) and the peak of the sum over the process tree, sampled every 0.25 s; the AWS cost. The
table is printed and the same figures are written to out/bench-realtime.json. A run that fails is
marked failed, its stderr tail printed. It reports; it is not a test, so it exits 0 whatever the
figures. Needs TIKTOKEN_CACHE_DIR pointing at the installed encodings (see
scripts/install_encodings.py).

Usage: python scripts/bench_realtime.py [--sizes 3000,20000] [--systems batchline,cookbook] [--seed S]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import itertools
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "out"
RESULT_JSON = OUT_DIR / "bench-realtime.json"
RUNS_DIR = OUT_DIR / "bench-realtime"
TIME_BIN = "/usr/bin/time"

MODEL = "gpt-4o-mini"
ENCODING = "o200k_base"  # gpt-4o-mini's
DEFAULT_SIZES = (3_000, 20_000)
SYSTEMS = ("batchline", "cookbook")
LIMIT_TPM = 480_000
LIMIT_RPM = 30_000
BURST_SECONDS = 1.0
LATENCY_SECONDS = 0.3
API_KEY = "bench"

# The cookbook's advised settings.
COOKBOOK_LIMIT_FRACTION = 0.75
COOKBOOK_MAX_ATTEMPTS = 5
COOKBOOK_PAUSE_SECONDS = 15.0
COOKBOOK_LOOP_SLEEP_SECONDS = 0.001

EMULATOR_START_SECONDS = 60.0
RSS_SAMPLE_SECONDS = 0.25
PROGRESS_SECONDS = 60.0
STDERR_TAIL_LINES = 30


# ---------------------------------------------------------------- the load

# Roughly in order of how common the words are in everyday English, the most common first: the rank
# the Zipf draw uses. Everyday words, then the words of customer messages, work and shopping.
_VOCABULARY_TEXT = """
the of and to a in is it you that he was for on are with as I his they be at one have this from or
had by not word but what some we can out other were all there when up use your how said an each she
which do their time if will way about many then them write would like so these her long make thing
see him two has look more day could go come did number sound no most people my over know water than
call first who may down side been now find any new work part take get place made live where after
back little only round man year came show every good me give our under name very through just form
sentence great think say help low line differ turn cause much mean before move right boy old too
same tell does set three want air well also play small end put home read hand port large spell add
even land here must big high such follow act why ask men change went light kind off need house
picture try us again animal point mother world near build self earth father head stand own page
should country found answer school grow study still learn plant cover food sun four between state
keep eye never last let thought city tree cross farm hard start might story saw far sea draw left
late run don't while press close night real life few north open seem together next white children
begin got walk example ease paper group always music those both mark often letter until mile river
car feet care second book carry took science eat room friend began idea fish mountain stop once
base hear horse cut sure watch color face wood main enough plain girl usual young ready above ever
red list though feel talk bird soon body dog family direct pose leave song measure door product
black short numeral class wind question happen complete ship area half rock order fire south
problem piece told knew pass since top whole king space heard best hour better true during hundred
five remember step early hold west ground interest reach fast verb sing listen six table travel less
morning ten simple several vowel toward war lay against pattern slow center love person money serve
appear road map rain rule govern pull cold notice voice unit power town fine certain fly fall lead
cry dark machine note wait plan figure star box noun field rest correct able pound done beauty drive
stood contain front teach week final gave green oh quick develop ocean warm free minute strong
special mind behind clear tail produce fact street inch multiply nothing course stay wheel full
force blue object decide surface deep moon island foot system busy test record boat common gold
possible plane dry wonder laugh thousand ago ran check game shape hot miss brought heat snow tire
bring yes distant fill east paint language among grand ball yet wave drop heart am present heavy
dance engine position arm wide sail material size vary settle speak weight general ice matter circle
pair include divide felt perhaps pick sudden count square reason length represent art subject
region energy hunt probable bed brother egg ride cell believe fraction forest sit race window store
summer train sleep prove lone leg exercise wall catch mount wish sky board joy winter sat written
wild instrument kept glass grass cow job edge sign visit past soft fun bright gas weather month
million bear finish happy hope flower clothe strange gone jump baby eight village meet root buy
raise solve metal whether push seven paragraph third shall held hair describe cook floor either
result burn hill safe cat century consider type law bit coast copy phrase silent tall sand soil roll
temperature finger industry value fight lie beat excite natural view sense ear else quite broke case
middle kill son lake moment scale loud spring observe child straight nation dictionary milk speed
method organ pay age section dress cloud surprise quiet stone tiny climb cool design poor lot
experiment bottom key iron single stick flat twenty skin smile hole trade melody trip office receive
row mouth exact symbol die least trouble shout except wrote seed tone join suggest clean break lady
yard rise bad blow oil blood touch grew cent mix team wire cost lost brown wear garden equal sent
choose fell fit flow fair bank collect save control decimal gentle woman captain practice separate
difficult doctor please protect noon whose locate ring character insect caught period indicate radio
spoke atom human history effect electric expect crop modern element hit student corner party supply
bone rail imagine provide agree thus capital won't chair danger fruit rich thick soldier process
operate guess necessary sharp wing create neighbor wash bat rather crowd corn compare poem string
bell depend meat rub tube famous dollar stream fear sight thin triangle planet hurry chief colony
clock mine tie enter major fresh search send yellow gun allow print dead spot desert suit current
lift rose continue block chart hat sell success company subtract event particular deal swim term
opposite wife shoe shoulder spread arrange camp invent cotton born determine quart nine truck noise
level chance gather shop stretch throw shine property column molecule select wrong gray repeat
require broad prepare salt nose plural anger claim continent oxygen sugar death pretty skill women
season solution magnet silver thank branch match suffix especially fig afraid huge sister steel
discuss forward similar guide experience score apple bought led pitch coat mass card band rope slip
win dream evening condition feed tool total basic smell valley nor double seat arrive master track
parent shore division sheet substance favor connect post spend chord fat glad original share station
dad bread charge proper bar offer segment duck instant market degree populate chick dear enemy reply
drink occur support speech nature range steam motion path liquid log meant quotient teeth shell neck
i'm it's can't didn't doesn't isn't wasn't haven't i've i'd you're we're they're that's there's
thanks hello hi okay ok maybe actually really probably already anyway however although because
unless instead otherwise therefore meanwhile basically honestly definitely certainly exactly simply
recently finally currently usually quickly easily nearly almost quite rather fairly pretty extremely
account address advice agent airport alarm album alert amount analysis app application appointment
approval april argument article assistant attachment attempt audio august author available average
award balance bathroom battery benefit bill birthday blog bonus booking bottle brand breakfast
browser budget bug building business button cable calendar camera campaign cancel candidate
capacity career cart cash category chat checkout client coffee colleague comment community
complaint computer concern conference confirm connection contact content contract conversation
coupon credit customer dashboard data database date deadline delay delivery department deposit
description desk detail device dinner discount document download driver email employee engineer
error estimate feature feedback fee file finance flight folder format forum function hotel image
invoice issue item kitchen laptop link login manager meeting member menu message mobile model
network notification online option package password payment phone photo platform policy price
printer priority profile project purchase quality quote receipt refund register release report
request reservation response restaurant review salary schedule screen server service session
setting shipping signature software status subscription supplier survey tablet task tax teacher
technology ticket tracking traffic transaction update upgrade user vendor version video website
weekend workflow warranty replacement return exchange courier parcel label tracking warehouse stock
inventory shipment carrier postcode region branch outlet counter cashier queue manual instructions
charger adapter cover case strap lid handle zip seam filter switch remote speaker headphones blender
kettle toaster heater fan fridge freezer oven microwave dishwasher washer dryer vacuum mattress pillow
blanket sheet towel curtain lamp bulb shelf cabinet drawer sofa couch carpet rug mirror frame jacket
coat sweater shirt trousers jeans dress skirt sock boot sandal sneaker trainer belt wallet purse bag
backpack suitcase umbrella watch bracelet necklace ring earring glasses lens contact bottle cup mug
plate bowl spoon fork knife pan pot tray jar box packet bag wrapper sticker voucher gift card token
code pin passcode username email inbox spam folder draft thread reply forward attachment signature
london paris berlin madrid rome dublin amsterdam lisbon vienna prague warsaw boston chicago seattle
toronto sydney melbourne monday tuesday wednesday thursday friday saturday sunday january february
march june july september october november december morning afternoon evening tonight tomorrow
yesterday today week weekend month year hour minute second moment while later soon early late
accept access achieve acquire adapt adjust admit adopt advise afford aim announce apologize apply
appreciate approach approve argue assess assign assist assume attach attend avoid bake behave belong
blame bother breathe browse calculate celebrate charge chase cheat chew clarify combine comfort
commit communicate complain compose concentrate conclude confuse consult consume convert convince
cooperate cope correspond crash criticize cycle damage debate deliver deny depart deserve destroy
detect differ disagree disappear disappoint discover dislike display dispute distribute disturb
download earn educate eliminate emphasize employ enable encourage enjoy ensure entertain escape
establish evaluate examine exceed exist expand explain explore export express extend fail fix focus
forbid forgive freeze gain greet handle hate hesitate hire host identify ignore implement import
improve increase influence inform inspect install intend interrupt introduce investigate invite
involve judge justify launch link manage mention modify monitor negotiate obtain offend organize
overcome owe pack participate perform persuade plug postpone predict prefer prevent proceed promise
promote propose publish qualify recommend recover reduce refer reflect refuse regret reject relax
release rely remind remove rent repair replace report request rescue reserve resolve respond restore
retire reveal review reward satisfy scan schedule scratch seek shake shift sign sink skip solve sort
specify steal stir struggle submit succeed suffer suppose survive suspect swallow switch tackle taste
tend thank threaten tolerate transfer translate treat trust type unlock upload urge vote waste wonder
worry wrap yell absolute abstract academic acceptable accurate active actual additional adequate
advanced affordable aggressive alive alternative amazing ancient angry annual anxious apparent
appropriate approximate automatic average aware awful awkward basic beautiful brief brilliant broken
calm capable careful casual cheap chemical civil classic clever comfortable commercial competitive
complex confident confused conscious consistent constant convenient crazy creative critical crucial
curious current damaged decent delicate delighted dependent desperate digital direct dirty
disappointed efficient elderly electronic emotional empty enormous entire essential excellent
excited exciting expensive experienced expert extra fabulous faithful familiar fancy fantastic
faulty final financial flexible foreign formal former fortunate frequent friendly frustrated
frustrating funny generous genuine global grateful guilty handy harmful healthy helpful helpless
honest horrible hungry ideal illegal immediate important impossible impressive incorrect independent
individual initial innocent intelligent intense internal international invalid jealous junior
legal liquid local logical lonely loose lovely loyal lucky mad magic massive mental minor missing
mobile moderate multiple narrow nasty national native negative nervous neutral normal obvious odd
official online ordinary organic outstanding overall painful perfect permanent personal physical
pleasant polite popular positive potential powerful practical precious precise pregnant premium
previous primary private professional proud public pure rapid rare raw reasonable recent regular
relevant reliable reluctant remarkable remote responsible rough rude sad satisfied scared secure
senior sensible sensitive serious severe shiny sick significant silly sincere slight smart smooth
sorry spare specific stable standard sticky strict stupid sufficient suitable super superb
suspicious sweet technical temporary terrible thorough tight tired typical ugly unable unexpected
unfair unfortunate unhappy unique unknown unlikely unusual upset urgent useful useless valid various
vast virtual visible vital weird welcome wet wise wonderful worried worse worst worth wrong
ability absence accident achievement activity addition administration advantage adventure
advertisement agency agreement ambition anniversary announcement anxiety apartment appearance
appetite arrangement arrival aspect assessment assignment assumption atmosphere attention attitude
audience authority awareness background bargain basis behavior belief bicycle border boss boundary
brain bridge budget cabin candle capture carbon celebration ceremony chain challenge champion
channel chapter chemistry childhood choice cinema circumstance citizen climate coach code collection
combination comfort commission commitment committee communication comparison competition complaint
component concept conclusion confidence conflict confusion consequence construction consumer context
contribution convenience corporation council courage creature crime crisis criticism culture
currency curve custom cycle damage debt decade decision definition delight demand democracy
departure deposit depression depth desire destination destruction development difference difficulty
dimension direction director disaster discipline discovery discussion disease disk display
distance distribution district diversity economy edition editor education efficiency effort
election emergency emotion emphasis empire employment encounter engagement enthusiasm entrance
entry environment episode equipment essay estate evidence evolution examination excitement
exhibition existence expansion expectation expense experiment explanation expression extension
extent facility factor failure faith fashion fault favour fiction finding flavour flight frequency
friendship frustration fuel fund funeral furniture future gallery gap gender generation gesture
goal government grade grocery growth guarantee guest guidance habit headline health height heritage
hobby holiday honour horror household housing identity illness impact implication importance
impression improvement incident income independence indication infrastructure ingredient initiative
injury inquiry insight inspection inspiration installation instance institution instruction
insurance intention interaction internet interview introduction investigation investment involvement
journey judgment justice knowledge laboratory landscape lawyer layer leadership league lecture
legislation leisure lesson liberty library licence limit literature loan location logic luxury
maintenance management manufacturer marketing marriage meal measurement mechanism medicine memory
mention minority mission mistake mixture mode monitor mood motivation movement murder museum
mystery negotiation neighbourhood nerve news novel nutrition objective obligation observation
occasion operation opinion opponent opportunity organisation outcome output owner ownership
painting parking participant partnership passage passenger passion patience patient pension
percentage perception performance permission personality perspective phase phenomenon philosophy
photograph physics pilot pleasure pocket poetry portion possession possibility poverty prayer
preference preparation presence presentation president pressure prevention principle privacy
procedure production profession professor profit progress proof proportion proposal prospect
protection protest psychology publication punishment purpose quantity quarter reaction reality
recipe recognition recommendation recovery reduction reference reflection reform regulation
relation relationship relief religion reputation requirement research resident resistance resource
respect responsibility restriction revenue revolution risk rival routine safety sample satisfaction
scheme scholarship scope screen secretary security selection sensation sequence session settlement
shortage signal silence situation sketch slice society solution source speaker specialist
specification spirit sponsor stability statement statistics strategy strength structure struggle
studio style substance suggestion summary supermarket surgery surprise survival suspicion symptom
sympathy talent target technique temperature tendency tension territory theme theory therapy
threat tip title tone topic tourism tournament tradition transition translation transport treatment
trend trial tribe triumph tuition uncertainty understanding union unity universe university
usage vacation variation variety vehicle venue victim victory viewer violence vision visitor volume
volunteer wealth wedding welfare width willingness wisdom witness worker workshop youth zone
"""
VOCABULARY: tuple[str, ...] = tuple(dict.fromkeys(_VOCABULARY_TEXT.split()))  # first mention keeps the rank
ZIPF_EXPONENT = 1.0
MIN_WORDS, MAX_WORDS, MEDIAN_WORDS, WORDS_SIGMA = 20, 400, 90, 0.7
MIN_MAX_TOKENS, MAX_MAX_TOKENS = 16, 64
SYSTEM_PROMPTS = (
    "You are a support assistant for an online shop. Classify the customer's message as one of: "
    "delivery, billing, product, account, other. Reply with the label only.",
    "Summarise the following message in one short sentence for the support team.",
    "Extract the main complaint or request from the text below and state it plainly.",
    "Reply to the customer politely and briefly, and say what happens next.",
    "Rate the sentiment of this text from 1 (very negative) to 5 (very positive) and give a reason.",
    "List the product names, order numbers and dates mentioned in the text, one per line.",
    "You are a helpful assistant.",
)


def _zipf_cumulative(size: int, exponent: float) -> list[float]:
    return list(itertools.accumulate(1.0 / rank**exponent for rank in range(1, size + 1)))


def _text(rnd: random.Random, cumulative: list[float]) -> str:
    """A user message of MIN_WORDS..MAX_WORDS words, log-normal lengths, in sentences and paragraphs."""
    total = cumulative[-1]
    target = min(MAX_WORDS, max(MIN_WORDS, round(rnd.lognormvariate(math.log(MEDIAN_WORDS), WORDS_SIGMA))))
    paragraphs: list[str] = []
    sentences: list[str] = []
    words = 0
    while words < target:
        size = min(target - words, max(3, round(rnd.triangular(4, 24, 11))))
        picked = [VOCABULARY[bisect.bisect(cumulative, rnd.random() * total)] for _ in range(size)]
        picked = [w + "," if rnd.random() < 0.07 and i < size - 1 else w for i, w in enumerate(picked)]
        sentence = " ".join(picked)
        sentence = sentence[0].upper() + sentence[1:] + rnd.choices((".", "?", "!"), (0.85, 0.1, 0.05))[0]
        sentences.append(sentence)
        words += size
        if len(sentences) >= rnd.randint(3, 7):
            paragraphs.append(" ".join(sentences))
            sentences = []
    if sentences:
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)


def generate(path: Path, n: int, seed: int) -> None:
    """n chat-completions requests for MODEL in the Batch API's JSONL format, the same for the same (n, seed)."""
    rnd = random.Random(seed)
    cumulative = _zipf_cumulative(len(VOCABULARY), ZIPF_EXPONENT)
    with open(path, "w", encoding="utf-8") as file:
        for index in range(1, n + 1):
            body = {
                "model": MODEL,
                "messages": [
                    {"role": "system", "content": rnd.choice(SYSTEM_PROMPTS)},
                    {"role": "user", "content": _text(rnd, cumulative)},
                ],
                "max_tokens": rnd.randint(MIN_MAX_TOKENS, MAX_MAX_TOKENS),
                "temperature": rnd.choice((0, 0.2, 0.7, 1)),
            }
            line = {
                "custom_id": f"req-{seed}-{index:06d}-{rnd.getrandbits(32):08x}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": body,
            }
            file.write(json.dumps(line, ensure_ascii=False) + "\n")


def describe_input(path: Path) -> dict[str, float]:
    """Word and token counts of the generated file, as the cookbook's estimate sees them."""
    import tiktoken

    encoding = tiktoken.get_encoding(ENCODING)
    words, costs = [], []
    with open(path, encoding="utf-8") as file:
        for raw in file:
            body = json.loads(raw)["body"]
            words.append(len(body["messages"][-1]["content"].split()))
            costs.append(cookbook_token_cost(body, encoding))
    return {
        "requests": len(costs),
        "words_min": min(words),
        "words_mean": sum(words) / len(words),
        "words_max": max(words),
        "cost_mean": sum(costs) / len(costs),
        "cost_total": sum(costs),
    }


# ---------------------------------------------------------------- the provider


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def batchline_bin() -> str:
    beside = Path(sys.executable).with_name("batchline")
    found = str(beside) if beside.exists() else shutil.which("batchline")
    if not found:
        raise SystemExit("no batchline executable beside this Python or on PATH: run `make install`")
    return found


class Emulator:
    """A fresh ``batchline emulator`` subprocess on a free port: fresh buckets and fresh statistics."""

    def __init__(self, log_path: Path, *, tpm: int, rpm: int, burst_seconds: float, latency: float) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._command = [
            batchline_bin(),
            "emulator",
            "--port",
            str(self.port),
            "--tpm",
            str(tpm),
            "--rpm",
            str(rpm),
            "--burst-seconds",
            str(burst_seconds),
            "--latency",
            str(latency),
            "--rate-limit-algorithm",
            "token_bucket",
            "--faults",
            "",
        ]
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Emulator:
        log = open(self.log_path, "wb")  # the child holds its own copy for its whole life
        try:
            self._process = subprocess.Popen(
                self._command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - no other thread runs yet
            )
        finally:
            log.close()
        deadline = time.monotonic() + EMULATOR_START_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the emulator exited ({self._process.returncode}):\n{tail(self.log_path)}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/_emulator/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError(f"the emulator did not answer within {EMULATOR_START_SECONDS:.0f} s:\n{tail(self.log_path)}")

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.base_url}/_emulator/stats", timeout=30) as answer:
            return json.loads(answer.read())

    def __exit__(self, *_: object) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---------------------------------------------------------------- a measured subprocess


def tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:
            pass  # gone meanwhile
    return found


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeSampler(threading.Thread):
    """The peak of the summed RSS of a process's descendants (not the process itself: /usr/bin/time)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self._pid = pid
        self._stop_event = threading.Event()
        self.peak_kib = 0

    def run(self) -> None:
        while not self._stop_event.is_set():
            total, stack = 0, _children(self._pid)
            while stack:
                pid = stack.pop()
                total += _rss_kib(pid)
                stack += _children(pid)
            self.peak_kib = max(self.peak_kib, total)
            self._stop_event.wait(RSS_SAMPLE_SECONDS)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


@dataclass
class Measured:
    returncode: int | None  # None: killed at the timeout
    wall_seconds: float
    peak_rss_mb: float | None  # /usr/bin/time -v: "Maximum resident set size", the largest single process
    tree_peak_mb: float  # sampled: the whole process tree at once
    stdout: Path
    stderr: Path


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the bench dies, even by SIGKILL (Linux's PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _end_group(process: subprocess.Popen[bytes]) -> None:
    """End the process group this script started for ``process`` (its own session), and only that group."""
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break  # the whole group is gone
        try:
            process.wait(timeout=grace)
            if sig == signal.SIGTERM:
                time.sleep(1)  # /usr/bin/time may go before its child: one more round for the rest of the group
        except subprocess.TimeoutExpired:
            continue
    process.poll()


def run_measured(
    command: list[str],
    *,
    env: dict[str, str],
    run_dir: Path,
    timeout: float,
    progress: Callable[[float], None] | None = None,
) -> Measured:
    stdout, stderr, time_file = run_dir / "stdout.log", run_dir / "stderr.log", run_dir / "time.txt"
    timed = os.path.exists(TIME_BIN)
    full = [TIME_BIN, "-v", "-o", str(time_file), *command] if timed else command
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            full,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # a group of its own, which a timeout or an interruption ends whole
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no other thread runs yet
        )
        sampler = TreeSampler(process.pid)
        sampler.start()
        deadline, next_note = started + timeout, started + PROGRESS_SECONDS
        returncode: int | None = None
        try:
            while True:
                try:
                    returncode = process.wait(timeout=max(0.1, min(deadline, next_note) - time.perf_counter()))
                    break
                except subprocess.TimeoutExpired:
                    now = time.perf_counter()
                    if now >= deadline:
                        _end_group(process)
                        returncode = None
                        break
                    if progress and now >= next_note:
                        progress(now - started)
                        next_note = now + PROGRESS_SECONDS
        except BaseException:  # interrupted (Ctrl-C, SIGTERM, an error): leave nothing running behind
            _end_group(process)
            raise
        finally:
            sampler.stop()
        wall = time.perf_counter() - started
    peak = None
    if timed:
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", tail(time_file, 100))
        peak = int(match.group(1)) / 1024 if match else None
    tree_mb = max(sampler.peak_kib / 1024, peak or 0.0)  # a process shorter than one sample still counts
    return Measured(returncode, wall, peak, tree_mb, stdout, stderr)


# ---------------------------------------------------------------- one (system, size) run


@dataclass
class Row:
    system: str
    size: int
    status: str = "ok"  # or "failed"
    reason: str = ""
    wall_seconds: float | None = None
    peak_rss_mb: float | None = None
    tree_peak_mb: float | None = None
    answered: int | None = None
    lost: int | None = None
    lost_detail: dict[str, int] = field(default_factory=dict)
    tokens_charged: int | None = None
    requests_ok: int | None = None
    requests_429: int | None = None
    sending_seconds: float | None = None
    limit_share: float | None = None
    rate_limited_share: float | None = None
    aws_cost_usd: float | None = None
    llm_cost_usd: float | None = None
    aws_share_of_llm: float | None = None
    system_report: dict[str, Any] = field(default_factory=dict)


def apply_stats(row: Row, stats: dict[str, Any]) -> None:
    usage = stats.get("models", {}).get(MODEL) or {}
    row.tokens_charged = usage.get("tokens_charged", 0)
    row.requests_ok = usage.get("requests_ok", 0)
    row.requests_429 = usage.get("requests_429", 0)
    calls = row.requests_ok + row.requests_429
    row.rate_limited_share = row.requests_429 / calls if calls else None
    first, last = usage.get("first_admitted_at"), usage.get("last_admitted_at")
    if first is not None and last is not None:
        row.sending_seconds = last - first
        allowed = stats["tokens_per_minute"] / 60 * (last - first)
        row.limit_share = row.tokens_charged / allowed if allowed > 0 else None


def _lines_in(path: Path) -> set[int]:
    lines: set[int] = set()
    if path.exists():
        with open(path, "rb") as file:
            for raw in file:
                if raw.strip():
                    lines.add(int(json.loads(raw)["line"]))
    return lines


def batchline_outcome(row: Row, out_dir: Path) -> None:
    answered = _lines_in(out_dir / "results.jsonl")
    errored = _lines_in(out_dir / "errors.jsonl") - answered
    missing = set(range(1, row.size + 1)) - answered - errored
    row.answered = len(answered)
    row.lost = len(errored) + len(missing)
    row.lost_detail = {"errors": len(errored), "in_neither_file": len(missing)}
    summary = json.loads((out_dir / "summary.json").read_text())
    aws = summary.get("aws") or summary.get("aws_cost") or {}
    row.aws_cost_usd = aws.get("cost_usd")
    row.llm_cost_usd = summary.get("cost_usd")
    if row.aws_cost_usd is not None and row.llm_cost_usd:
        row.aws_share_of_llm = row.aws_cost_usd / row.llm_cost_usd
    row.system_report = {
        key: summary.get(key)
        for key in (
            "status",
            "message",
            "succeeded",
            "failed",
            "invalid",
            "error_codes",
            "input_tokens",
            "output_tokens",
        )
    }
    row.system_report["aws_by_service_usd"] = aws.get("by_service_usd")


def cookbook_outcome(row: Row, stdout: Path) -> None:
    report = json.loads(stdout.read_text().strip().splitlines()[-1])
    row.answered = report["answered"]
    row.lost = report["lost"]
    row.lost_detail = {"failed_all_attempts": report["lost"]}
    row.system_report = report


def default_timeout(size: int) -> float:
    # The cookbook pattern, pausing 15 s after every 429, answered ~3 requests a second here at 3,000.
    return 900 + 0.5 * size


def note_progress(emulator: Emulator, size: int, seconds: float) -> None:
    try:
        usage = emulator.stats().get("models", {}).get(MODEL) or {}
    except (OSError, ValueError):
        return
    print(
        f"    {seconds:,.0f} s: {usage.get('requests_ok', 0):,} of {size:,} admitted, "
        f"{usage.get('requests_429', 0):,} answered 429",
        flush=True,
    )


def run_one(system: str, size: int, input_path: Path, args: argparse.Namespace) -> Row:
    row = Row(system, size)
    run_dir = RUNS_DIR / f"{system}-{size}"
    shutil.rmtree(run_dir, ignore_errors=True)  # this script's own output from an earlier run
    run_dir.mkdir(parents=True)
    out_dir = run_dir / "out"
    timeout = args.timeout or default_timeout(size)
    env = dict(os.environ)
    env.setdefault("TIKTOKEN_CACHE_DIR", str(ROOT / ".cache" / "tiktoken"))
    try:
        with Emulator(
            run_dir / "emulator.log", tpm=args.tpm, rpm=args.rpm, burst_seconds=args.burst_seconds, latency=args.latency
        ) as emulator:
            if system == "batchline":
                env.update(OPENAI_BASE_URL=f"{emulator.base_url}/v1", OPENAI_API_KEY=API_KEY)
                command = [batchline_bin(), "local", "run", str(input_path), "--mode", "realtime", "--ephemeral"]
                command += ["--out", str(out_dir)]
            else:
                command = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--baseline",
                    str(input_path),
                    "--base-url",
                    f"{emulator.base_url}/v1",
                    "--tpm",
                    str(args.tpm),
                    "--rpm",
                    str(args.rpm),
                    "--save",
                    str(run_dir / "cookbook-results.jsonl"),
                ]
            measured = run_measured(
                command, env=env, run_dir=run_dir, timeout=timeout, progress=partial(note_progress, emulator, size)
            )
            apply_stats(row, emulator.stats())
    except (OSError, RuntimeError) as exc:
        row.status, row.reason = "failed", f"could not run: {exc}"
        return row
    row.wall_seconds = measured.wall_seconds
    row.peak_rss_mb, row.tree_peak_mb = measured.peak_rss_mb, measured.tree_peak_mb
    if measured.returncode != 0:
        row.status = "failed"
        timed_out = measured.returncode is None
        row.reason = f"timed out after {timeout:.0f} s" if timed_out else f"exit {measured.returncode}"
        print(f"{system} x{size} failed ({row.reason}); stderr tail:\n{tail(measured.stderr)}", file=sys.stderr)
        return row
    try:
        if system == "batchline":
            batchline_outcome(row, out_dir)
        else:
            cookbook_outcome(row, measured.stdout)
    except (OSError, ValueError, KeyError, IndexError) as exc:
        row.status, row.reason = "failed", f"unreadable outcome: {exc!r}"
        print(f"{system} x{size}: {row.reason}; stderr tail:\n{tail(measured.stderr)}", file=sys.stderr)
    return row


# ---------------------------------------------------------------- the cookbook baseline (its own subprocess)


def cookbook_token_cost(body: dict[str, Any], encoding: Any) -> int:
    """The cookbook's estimate: per message 4 tokens plus its fields' tokens, 2 to prime the reply, plus max_tokens."""
    prompt = 2
    for message in body["messages"]:
        prompt += 4
        for key, value in message.items():
            if isinstance(value, str):
                prompt += len(encoding.encode(value))
            if key == "name":
                prompt -= 1
    return prompt + body.get("max_tokens", 15) * body.get("n", 1)


class _PerMinuteBucket:
    """A minute's allowance at COOKBOOK_LIMIT_FRACTION of the limit, starting full, refilled continuously."""

    def __init__(self, per_minute: float) -> None:
        self.capacity = per_minute
        self.level = per_minute
        self._rate = per_minute / 60
        self._at = time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self._at) * self._rate)
        self._at = now


@dataclass
class _Job:
    line: int
    body: dict[str, Any]
    cost: int
    attempts_left: int
    errors: list[str] = field(default_factory=list)


@dataclass
class _Tally:
    in_flight: int = 0
    peak_in_flight: int = 0
    answered: int = 0
    lost: int = 0
    rate_limit_errors: int = 0
    other_errors: int = 0
    pauses: int = 0
    paused_seconds: float = 0.0
    last_rate_limit_at: float = -math.inf


async def _cookbook(path: Path, base_url: str, rpm: int, tpm: int, save: Path) -> dict[str, Any]:
    import openai
    import tiktoken

    encoding = tiktoken.get_encoding(ENCODING)
    client = openai.AsyncOpenAI(api_key=os.environ.get("OPENAI_API_KEY", API_KEY), base_url=base_url, max_retries=0)
    requests = _PerMinuteBucket(rpm * COOKBOOK_LIMIT_FRACTION)
    tokens = _PerMinuteBucket(tpm * COOKBOOK_LIMIT_FRACTION)
    tally = _Tally()
    retries: collections.deque[_Job] = collections.deque()
    tasks: set[asyncio.Task[None]] = set()

    async def call(job: _Job, out: Any) -> None:
        try:
            response = await client.chat.completions.create(**job.body)
        except openai.APIError as exc:
            if "rate limit" in str(exc).lower():  # as the cookbook tells them: by the message
                tally.rate_limit_errors += 1
                tally.last_rate_limit_at = time.monotonic()
            else:
                tally.other_errors += 1
            job.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            if job.attempts_left > 0:
                retries.append(job)
            else:
                tally.lost += 1
                out.write(json.dumps([job.body, job.errors]) + "\n")
        else:
            tally.answered += 1
            out.write(json.dumps([job.body, response.model_dump(mode="json")]) + "\n")
        finally:
            tally.in_flight -= 1

    started = time.perf_counter()
    with open(path, encoding="utf-8") as source, open(save, "w", encoding="utf-8") as out:
        lines = enumerate(source, start=1)
        exhausted = False
        waiting: _Job | None = None
        while True:
            if waiting is None:
                if retries:
                    waiting = retries.popleft()
                elif not exhausted:
                    try:
                        number, raw = next(lines)
                        body = json.loads(raw)["body"]
                        waiting = _Job(number, body, cookbook_token_cost(body, encoding), COOKBOOK_MAX_ATTEMPTS)
                    except StopIteration:
                        exhausted = True
            now = time.monotonic()
            requests.refill(now)
            tokens.refill(now)
            if waiting is not None and requests.level >= 1 and tokens.level >= waiting.cost:
                requests.level -= 1
                tokens.level -= waiting.cost
                waiting.attempts_left -= 1
                tally.in_flight += 1
                tally.peak_in_flight = max(tally.peak_in_flight, tally.in_flight)
                task = asyncio.create_task(call(waiting, out))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                waiting = None
            if exhausted and waiting is None and not retries and tally.in_flight == 0:
                break
            await asyncio.sleep(COOKBOOK_LOOP_SLEEP_SECONDS)
            since = time.monotonic() - tally.last_rate_limit_at
            if since < COOKBOOK_PAUSE_SECONDS:
                tally.pauses += 1
                tally.paused_seconds += COOKBOOK_PAUSE_SECONDS - since
                await asyncio.sleep(COOKBOOK_PAUSE_SECONDS - since)
    seconds = time.perf_counter() - started
    await client.close()
    return {
        "requests": tally.answered + tally.lost,
        "answered": tally.answered,
        "lost": tally.lost,
        "rate_limit_errors": tally.rate_limit_errors,
        "other_errors": tally.other_errors,
        "pauses": tally.pauses,
        "paused_seconds": round(tally.paused_seconds, 3),
        "peak_in_flight": tally.peak_in_flight,
        "work_seconds": round(seconds, 3),
    }


def baseline_main(args: argparse.Namespace) -> None:
    _die_with_parent()  # /usr/bin/time, which ends with the bench: no baseline left running on its own
    report = asyncio.run(_cookbook(Path(args.baseline), args.base_url, args.rpm, args.tpm, Path(args.save)))
    print(json.dumps(report))


# ---------------------------------------------------------------- the report


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _aws(row: Row) -> str:
    if row.system == "cookbook":
        return "n/a"
    if row.aws_cost_usd is None:
        return "-"
    share = f" ({row.aws_share_of_llm:.1%} of LLM ${row.llm_cost_usd:.4f})" if row.aws_share_of_llm is not None else ""
    return f"${row.aws_cost_usd:.4f}{share}"


def report(rows: list[Row], header: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=header)
    table.add_column("system")
    for column in (
        "requests",
        "status",
        "token limit used",
        "429 share",
        "calls",
        "lost",
        "wall s",
        "sending s",
        "peak RSS MB",
        "tree RSS MB",
        "AWS cost",
    ):
        table.add_column(column, justify="right")
    for row in rows:
        calls = None if row.requests_ok is None else row.requests_ok + (row.requests_429 or 0)
        table.add_row(
            row.system,
            f"{row.size:,}",
            row.status if row.status == "ok" else f"FAILED: {row.reason}",
            _num(row.limit_share, ".1%"),
            _num(row.rate_limited_share, ".1%"),
            _num(calls, ","),
            _num(row.lost, ","),
            _num(row.wall_seconds, ".1f"),
            _num(row.sending_seconds, ".1f"),
            _num(row.peak_rss_mb, ".0f"),
            _num(row.tree_peak_mb, ".0f"),
            _aws(row),
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=170)  # piped or logged: the whole table rather than truncated columns
    console.print(table)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="requests per run, comma-separated")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="batchline, cookbook or both, comma-separated")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated requests")
    parser.add_argument("--tpm", type=int, default=LIMIT_TPM, help="the emulator's tokens per minute per model")
    parser.add_argument("--rpm", type=int, default=LIMIT_RPM, help="the emulator's requests per minute per model")
    parser.add_argument("--burst-seconds", type=float, default=BURST_SECONDS, help="seconds of refill a bucket holds")
    parser.add_argument("--latency", type=float, default=LATENCY_SECONDS, help="seconds each emulator answer takes")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run [default: 900 + 0.5 per request]")
    parser.add_argument("--baseline", metavar="FILE", help="run the cookbook baseline on FILE (what the bench spawns)")
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        if not args.base_url or not args.save:
            parser.error("--baseline needs --base-url and --save")
        baseline_main(args)
        return

    try:
        sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    except ValueError:
        parser.error("--sizes takes whole numbers, e.g. 3000,20000")
    systems = [system.strip() for system in args.systems.split(",") if system.strip()]
    if not sizes or min(sizes) < 1:
        parser.error("--sizes needs at least one size of 1 or more")
    if not systems or set(systems) - set(SYSTEMS):
        parser.error(f"--systems takes {', '.join(SYSTEMS)}")
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(ROOT / ".cache" / "tiktoken"))
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)  # so that the emulator and the run under way are ended too
    if not os.path.exists(TIME_BIN):
        print(f"{TIME_BIN} is missing: peak RSS comes from sampling /proc only", file=sys.stderr)

    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    header = (
        f"Realtime against a token bucket of {args.tpm:,} TPM and {args.rpm:,} RPM per model "
        f"({args.burst_seconds:g} s burst, {args.latency:g} s latency), {MODEL}; {cores} cores"
        + (f" ({usable} usable)" if usable != cores else "")
    )
    print(header, flush=True)
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    inputs: dict[int, dict[str, float]] = {}
    for size in sizes:
        input_path = RUNS_DIR / f"input-{size}.jsonl"
        generate(input_path, size, args.seed)
        inputs[size] = describe_input(input_path)
        d = inputs[size]
        print(
            f"{size:,} requests: user message {d['words_min']}-{d['words_max']} words (mean {d['words_mean']:.0f}), "
            f"estimated cost {d['cost_mean']:.0f} tokens a request, {d['cost_total']:,} in all: "
            f"{d['cost_total'] / (args.tpm / 60):.0f} s at the limit",
            flush=True,
        )
        for system in systems:
            print(f"  {system} x{size:,} ...", flush=True)
            row = run_one(system, size, input_path, args)
            rows.append(row)
            print(
                f"  {system} x{size:,}: {row.status}{' (' + row.reason + ')' if row.reason else ''}, "
                f"limit used {_num(row.limit_share, '.1%')}, 429 share {_num(row.rate_limited_share, '.1%')}, "
                f"lost {_num(row.lost, ',')}, wall {_num(row.wall_seconds, '.1f')} s",
                flush=True,
            )

    report(rows, header)
    for row in rows:
        if row.system == "batchline" and row.aws_cost_usd is not None:
            share = _num(row.aws_share_of_llm, ".1%")
            print(
                f"batchline x{row.size:,}: AWS ${row.aws_cost_usd:.4f}, {share} of the LLM cost "
                f"${_num(row.llm_cost_usd, '.4f')}; cookbook: AWS n/a (one machine)"
            )
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    document = {
        "limit": {
            "model": MODEL,
            "tokens_per_minute": args.tpm,
            "requests_per_minute": args.rpm,
            "burst_seconds": args.burst_seconds,
            "latency_seconds": args.latency,
            "algorithm": "token_bucket",
        },
        "cores": cores,
        "usable_cores": usable,
        "seed": args.seed,
        "inputs": {str(size): figures for size, figures in inputs.items()},
        "cookbook": {
            "limit_fraction": COOKBOOK_LIMIT_FRACTION,
            "max_attempts": COOKBOOK_MAX_ATTEMPTS,
            "pause_after_rate_limit_seconds": COOKBOOK_PAUSE_SECONDS,
        },
        "rows": [asdict(row) for row in rows],
    }
    RESULT_JSON.write_text(json.dumps(document, indent=2) + "\n")
    print(f"figures written to {RESULT_JSON.relative_to(ROOT)}; run directories under {RUNS_DIR.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
