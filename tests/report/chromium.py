"""Headless Chromium driven over the DevTools protocol on a pipe, and a PNG decoder: no new dependency.

`--remote-debugging-pipe` makes Chromium read commands on fd 3 and write answers on fd 4, each a
JSON message ended by a NUL byte. That is all a test needs to open a page, ask the layout engine
where each chart is, take a screenshot of it and see which requests the page made.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

# Tried in this order; BATCHLINE_CHROMIUM names another binary. Debian's package is `chromium`.
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    named = os.environ.get("BATCHLINE_CHROMIUM")
    if named:
        return named
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


class BrowserError(RuntimeError):
    pass


@dataclass
class Chromium:
    """One headless browser with one page; a context manager that always closes it."""

    binary: str
    timeout: float = 20.0
    width: int = 1100
    _process: subprocess.Popen | None = None
    _to_browser: int = -1
    _from_browser: int = -1
    _buffer: bytes = b""
    _next_id: int = 0
    _session: str | None = None
    _profile: tempfile.TemporaryDirectory | None = None
    events: list[dict] = field(default_factory=list)

    def __enter__(self) -> Chromium:
        self._profile = tempfile.TemporaryDirectory(prefix="batchline-chromium-")
        commands_read, commands_write = os.pipe()
        answers_read, answers_write = os.pipe()

        def on_fds_3_and_4() -> None:  # runs in the child, before exec
            inbound, outbound = os.dup(commands_read), os.dup(answers_write)
            os.dup2(inbound, 3)
            os.dup2(outbound, 4)

        self._process = subprocess.Popen(
            [
                self.binary,
                "--headless",
                "--no-sandbox",  # containers and CI runners often run as root
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--force-color-profile=srgb",  # colours in screenshots as written in the page
                "--remote-debugging-pipe",
                f"--user-data-dir={self._profile.name}",
                "about:blank",
            ],
            preexec_fn=on_fds_3_and_4,
            close_fds=False,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_read)
        os.close(answers_write)
        self._to_browser, self._from_browser = commands_write, answers_read
        try:
            target = self.send("Target.createTarget", url="about:blank")["targetId"]
            self._session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Network"):
                self.send(f"{domain}.enable")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            try:
                self._session = None
                self.send("Browser.close", timeout=5)
                process.wait(timeout=5)
            except (BrowserError, OSError, subprocess.TimeoutExpired):
                os.killpg(process.pid, signal.SIGKILL)  # the session started with this browser: only its own
                process.wait(timeout=5)
        for fd in (self._to_browser, self._from_browser):
            if fd >= 0:
                os.close(fd)
        self._to_browser = self._from_browser = -1
        if self._profile is not None:
            self._profile.cleanup()

    # -- the protocol ----------------------------------------------------------------------------
    def send(self, method: str, *, timeout: float | None = None, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self._session:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        answer = self._until(lambda m: m.get("id") == self._next_id, timeout or self.timeout, method)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def _until(self, wanted, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if wanted(message):
                    return message
                if "method" in message:
                    self.events.append(message)
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise BrowserError(f"no answer from Chromium within {timeout:.0f} s ({what})")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium closed the pipe ({what})")
            self._buffer += chunk

    # -- what the tests use ------------------------------------------------------------------------
    def open(self, path: Path) -> None:
        """Open a local file and wait until it has loaded."""
        self.events.clear()
        self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=900, deviceScaleFactor=1, mobile=False)
        self.send("Page.navigate", url=path.resolve().as_uri())
        if not any(event.get("method") == "Page.loadEventFired" for event in self.events):
            loaded = self._until(lambda m: m.get("method") == "Page.loadEventFired", self.timeout, "page load")
            self.events.append(loaded)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (run by the test, not by the page)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:60]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, x: float, y: float, width: float, height: float) -> Image:
        """The pixels of a region of the page, in CSS pixels (page coordinates)."""
        data = self.send(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": x, "y": y, "width": width, "height": height, "scale": 1},
        )["data"]
        return decode_png(base64.b64decode(data))

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def page_errors(self) -> list[dict]:
        return [e["params"] for e in self.events if e.get("method") == "Runtime.exceptionThrown"]


# -- PNG -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    width: int
    height: int
    channels: int
    rows: list[bytes]

    def count(self, colour: str, tolerance: int = 12) -> int:
        """Pixels within `tolerance` (per channel) of a #rrggbb colour."""
        target = bytes.fromhex(colour.lstrip("#"))
        low = [max(0, c - tolerance) for c in target]
        high = [min(255, c + tolerance) for c in target]
        step, hits = self.channels, 0
        for row in self.rows:
            for i in range(0, len(row), step):
                if low[0] <= row[i] <= high[0] and low[1] <= row[i + 1] <= high[1] and low[2] <= row[i + 2] <= high[2]:
                    hits += 1
        return hits


def decode_png(data: bytes) -> Image:
    """8-bit RGB or RGBA, not interlaced: what Chromium's screenshots are."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    position, compressed = 8, []
    width = height = depth = colour_type = interlace = 0
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            compressed.append(body)
        position += 12 + length
    if depth != 8 or interlace or colour_type not in (2, 6):
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour_type}, interlace {interlace}")
    channels = 3 if colour_type == 2 else 4
    raw = zlib.decompress(b"".join(compressed))
    stride = width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, row = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(channels, stride):
                row[i] = (row[i] + row[i - channels]) & 255
        elif kind == 2:  # Up
            row = bytearray((a + b) & 255 for a, b in zip(row, previous, strict=True))
        elif kind == 3:  # Average
            for i in range(stride):
                left = row[i - channels] if i >= channels else 0
                row[i] = (row[i] + ((left + previous[i]) >> 1)) & 255
        elif kind == 4:  # Paeth
            for i in range(stride):
                a = row[i - channels] if i >= channels else 0
                b, c = previous[i], previous[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(row))
        previous = row
    return Image(width, height, channels, rows)
