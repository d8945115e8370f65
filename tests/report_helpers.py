"""The browser of the report tests (tests/test_report.py); their corpus is tests/corpus_helpers.py's.

`Browser` drives a real headless Chromium over its DevTools pipe (--remote-debugging-pipe: no Python browser
package, no port): open a page, evaluate JavaScript in it, see which requests it made."""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from corpus_helpers import BIDI, HOSTILE, REPO_ROOT, build_corpus, read_lines  # noqa: F401 (the report tests')

CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


# ------------------------------------------------------------------------------------------------ the browser


def chromium() -> str:
    """The Chromium to use (TRITON_DATA_CHROMIUM, else one on PATH); the test is skipped where there is none."""
    named = os.environ.get("TRITON_DATA_CHROMIUM")
    if named:
        if not (os.path.isfile(named) and os.access(named, os.X_OK)):
            pytest.fail(f"TRITON_DATA_CHROMIUM={named} is not an executable file")
        return named
    found = next(filter(None, map(shutil.which, CHROMIUMS)), None)
    if found is None:
        pytest.skip("no Chromium to open the report in: apt-get install chromium (make test installs it when run "
                    "as root, as CI is), or set TRITON_DATA_CHROMIUM to a chromium binary")
    return found


class Browser:
    """One headless Chromium, spoken to over the DevTools pipe (fd 3: commands in, fd 4: replies and events out,
    each message a JSON text ended by a NUL byte)."""

    def __init__(self, binary: str, timeout: float = 60.0) -> None:
        self.timeout, self.next_id, self.buffer, self.events = timeout, 0, b"", []
        self.profile = tempfile.mkdtemp(prefix="report-chromium-")
        commands, self._theirs_in = os.pipe()
        self._theirs_out, replies = os.pipe()
        flags = ["--headless", "--disable-gpu", "--no-first-run", "--remote-debugging-pipe",
                 f"--user-data-dir={self.profile}"] + (["--no-sandbox"] if os.geteuid() == 0 else [])

        def pipes_on_3_and_4():  # by way of fds above both: either pipe may itself be fd 3 or 4
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands, replies)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen([binary, *flags, "about:blank"], pass_fds=(3, 4, commands, replies),
                                        preexec_fn=pipes_on_3_and_4, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        os.close(commands)
        os.close(replies)

    def send(self, method: str, params: Optional[dict] = None, session: Optional[str] = None) -> dict:
        """Send one command; its result (the events that came meanwhile are kept in `events`)."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._theirs_in, json.dumps(message).encode() + b"\0")
        while True:
            reply = self.receive()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def receive(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._theirs_out], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._theirs_out, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def open(self, url: str) -> str:
        """A new tab showing `url`, loaded; its session id (its network requests are recorded as events)."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Network.enable", {}, session)
        self.send("Page.navigate", {"url": url}, session)
        deadline = time.monotonic() + self.timeout
        while self.evaluate(session, "document.readyState + ' ' + location.href") != f"complete {url}":
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not load")
            time.sleep(0.05)
        return session

    def evaluate(self, session: str, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:60]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def requests(self, session: str) -> list[str]:
        """The URLs the tab asked for."""
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent" and e.get("sessionId") == session]

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._theirs_in)
        os.close(self._theirs_out)
        shutil.rmtree(self.profile, ignore_errors=True)


# What the tests read off a page: every figure's text as the browser renders it (innerText: what is shown) and
# whether it is visible, the histograms' bars, the sample rows, every element's name and linking attributes.
READ_PAGE = """(() => {
  const figures = {};
  for (const e of document.querySelectorAll('[data-figure]')) {
    (figures[e.dataset.figure] ??= []).push({text: e.innerText, visible: e.checkVisibility()});
  }
  const bars = [...document.querySelectorAll('g.bar')].map(g => ({
    name: g.dataset.histogram, lo: g.dataset.lo, hi: g.dataset.hi, count: g.dataset.count,
    label: g.querySelector('text.count') ? g.querySelector('text.count').textContent : null,
    height: g.querySelector('rect').getBBox().height, visible: g.checkVisibility()}));
  const samples = [...document.querySelectorAll('[data-sample]')].map(d => ({
    task: d.dataset.sample, id: d.dataset.id, visible: d.checkVisibility(),
    texts: Object.fromEntries([...d.querySelectorAll('pre')].map(p => [p.dataset.column, p.textContent])),
    more: [...d.querySelectorAll('[data-figure="sample.more"]')].map(e => e.textContent)}));
  const links = [];
  for (const e of document.querySelectorAll('*')) {
    for (const a of e.attributes) {
      if (/^(src|href|srcset|xlink:href|action|formaction|data|poster|background)$/i.test(a.name)) {
        links.push(e.localName + ' ' + a.name + '=' + a.value);
      }
    }
  }
  return {figures, bars, samples, links, title: document.title, text: document.body.innerText,
          elements: [...document.querySelectorAll('*')].map(e => e.localName),
          styles: [...document.querySelectorAll('style')].map(s => s.textContent),
          pwned: window.pwned === undefined ? null : window.pwned};
})()"""


def read_page(browser: Browser, path: Path) -> dict:
    """READ_PAGE of the file at `path`, plus the requests it made; a figure shown once maps to its text."""
    session = browser.open(path.resolve().as_uri())
    page = browser.evaluate(session, READ_PAGE)
    page["requests"] = browser.requests(session)
    page["shown"] = {key: found[0]["text"] for key, found in page["figures"].items() if len(found) == 1}
    return page
