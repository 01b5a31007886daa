"""A minimal Chrome DevTools Protocol client over --remote-debugging-pipe, for the report's
browser test. Written by hand (stdlib only) because the pipe transport is a few lines and it
spares the test suite a browser-automation dependency (selenium, playwright, websockets)."""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """A headless Chromium driven over its DevTools pipe: fd 3 carries commands in, fd 4
    carries responses and events out, each message JSON terminated by a NUL byte."""

    def __init__(self, executable: str, profile_dir: Path, timeout: float = 60.0):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes():  # in the child, before exec: the protocol expects exactly fds 3 and 4
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile_dir}", "about:blank"],
            preexec_fn=wire_pipes,
            pass_fds=(3, 4),  # keep the two (re-numbered) pipe ends open across exec
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.timeout = timeout
        self.events: list[dict] = []
        self._buffer = b""
        self._next_id = 0

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no answer from Chromium over the DevTools pipe")
            ready, _, _ = select.select([self._from_browser], [], [], remaining)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise ConnectionError("Chromium closed the DevTools pipe")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and wait for its result, keeping every event that arrives meanwhile."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, method: str) -> dict:
        """Wait for an event (or take it if it already arrived)."""
        deadline = time.monotonic() + self.timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events.append(self._read_message(deadline))

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, ConnectionError, OSError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


def open_page(executable: str, url: str, profile_dir: Path, screenshot: Path, *, width: int = 1200, height: int = 900,
              mobile: bool = False, media: str | None = None, probes: dict[str, str] | None = None,
              full_page: bool = True, pdf: Path | None = None) -> dict:
    """Load `url` in a fresh headless Chromium of a `width` x `height` viewport (CSS media type
    `media`, e.g. "print", if given) and report what happened: the requests made, console errors
    and exceptions, every <img> with its load state, the value of each JavaScript expression in
    `probes`, a screenshot (the whole page, or the first screen without `full_page`) and, with
    `pdf`, the page printed to PDF as the browser's "print to PDF" would."""
    browser = Browser(executable, profile_dir)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}, session=session)
        if media:
            browser.send("Emulation.setEmulatedMedia", {"media": media}, session=session)
        browser.events.clear()
        browser.send("Page.navigate", {"url": url}, session=session)
        browser.wait_for("Page.loadEventFired")

        def evaluate(expression: str):
            return browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                session=session)["result"].get("value")

        images = evaluate("Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, "
                          "width: i.naturalWidth, height: i.naturalHeight, scheme: i.src.split(':')[0]}))")
        values = {name: evaluate(expression) for name, expression in (probes or {}).items()}
        clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        if full_page:
            size = browser.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
            clip.update(width=size["width"], height=size["height"])
        shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": full_page, "clip": clip},
                            session=session)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        if pdf is not None:
            pdf.write_bytes(base64.b64decode(browser.send("Page.printToPDF", {"printBackground": False}, session=session)["data"]))
        events = [e for e in browser.events if e.get("sessionId") == session]
    finally:
        browser.close()
    requests = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
    errors = [e["params"] for e in events if e["method"] == "Runtime.exceptionThrown"]
    errors += [e["params"] for e in events if e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert")]
    errors += [e["params"]["entry"] for e in events if e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"]
    return {"requests": requests, "errors": errors, "images": images, "probes": values}
