"""The corpus and the browser of the report tests (tests/test_report.py).

`build_corpus` fills scraper/corpus.py's layout by running each stage for real on the fixtures, as `triton-data
build` would: the suite debug roots of a real H200 run (timm, huggingface, with accuracy and pairing records) and a
part of a real --suite modules run (no stats.json: it was cut down), stage 1 over them and two plain debug folders
(a training run, a user kernel), the pair check's results as that H200 run recorded them (pairs_h200_checked:
pair_correct, speedup) with the summary the check writes, the bundled repositories plus one hostile repository
through the scraper's offline path and the generator (with --validate parses), and create_json.py's three tasks.

`Browser` drives a real headless Chromium over its DevTools pipe (--remote-debugging-pipe: no Python browser
package, no port): open a page, evaluate JavaScript in it, see which requests it made."""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import select
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "tests" / "fixtures"
SUITE_RUN = FIXTURES / "suite_run"
TCD = FIXTURES / "torch_compile_debug"
# What a scraped kernel may hold: markup that would end the page's <pre>, run a script, load an image, and a
# right-to-left override that would reorder the text around it.
HOSTILE = ('</pre></td></tr></table><script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
           "<style>body { display: none }</style>")
BIDI = "\u202e"
EVIL_KERNEL = f'''import triton
import triton.language as tl


@triton.jit
def evil_kernel(x_ptr, n):
    """{HOSTILE} {BIDI}gnp.exe"""
    pid = tl.program_id(0)
    tl.store(x_ptr + pid, tl.load(x_ptr + pid) * 2)
'''
CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def unpack(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest


def build_corpus(root: Path) -> Path:
    """A corpus with every stage run on the fixtures (see the module's docstring); returns its folder."""
    corpus = root / "corpus"
    suites = corpus / "suites"
    unpacked = unpack(SUITE_RUN / "pairs_h200.tar.gz", root / "h200")
    suites.mkdir(parents=True)
    shutil.move(unpacked / "tcd_timm", suites / "timm")
    shutil.move(unpacked / "tcd_hf", suites / "huggingface")
    shutil.move(unpack(SUITE_RUN / "suite_modules.tar.gz", root / "modules") / "suite_modules", suites / "modules")
    plain = [unpack(TCD / f"{name}.tar.gz", root / name) / "torch_compile_debug"
             for name in ("tcd_training", "tcd_userkernel")]
    run_main("get_kernels_from_debug_info", [*sorted(suites.iterdir()), *plain, "-o", corpus / "kernels"])
    record_gpu_check(corpus / "kernels")
    github_and_generator(root, corpus)
    datasets(corpus)
    return corpus


def run_main(module: str, argv: list) -> None:
    import importlib

    done = importlib.import_module(module).main([*map(str, argv), "-q"])
    assert done == 0, f"{module} {argv}: exit {done}"


def record_gpu_check(kernels: Path) -> None:
    """The H200's verdicts (pair_correct, speedup, check) on the model-level pairs of the same models, and the
    pair check's summary of them, written as `triton-data pairs check` writes both."""
    from scraper.pairs.check import CHECK_SUMMARY, summarize
    from scraper.pairs.record import read_pairs
    from scraper.fileio import atomic_write_json, write_jsonl

    checked = {p["model"]: p for p in map(json.loads, gzip.open(SUITE_RUN / "pairs_h200_checked.jsonl.gz", "rt"))}
    pairs = read_pairs(kernels / "pairs.jsonl")
    judged = [p for p in pairs if p.pair_level == "model" and p.model in checked]
    for pair in judged:
        gpu = checked[pair.model]
        pair.pair_correct, pair.speedup, pair.check = gpu["pair_correct"], gpu["speedup"], gpu["check"]
    write_jsonl(kernels / "pairs.jsonl", pairs)
    atomic_write_json(kernels / CHECK_SUMMARY, summarize(judged, 0.0))


def github_and_generator(root: Path, corpus: Path) -> None:
    evil = root / "repos" / "evil-kernels"
    evil.mkdir(parents=True)
    (evil / "evil.py").write_text(EVIL_KERNEL, encoding="utf-8")
    local = [f"{repo}={repo.relative_to(REPO_ROOT / 'examples' / 'repos').as_posix()}"
             for repo in sorted((REPO_ROOT / "examples" / "repos").glob("*/*")) if repo.is_dir()]
    run_main("scrape_github", ["--local", *local, f"{evil}=mallory/evil-kernels", "-o", corpus / "github"])
    from scraper.generator import main as generator

    assert generator.main(["--generate-all", "--download-dir", str(corpus / "github"), "-o", str(corpus / "generated"),
                           "--jobs", "1", "--validate", "parses", "-q"]) == 0


def datasets(corpus: Path) -> None:
    out = corpus / "datasets"
    inputs = [corpus / "kernels", corpus / "generated"]
    run_main("create_json", [*inputs, "-o", out / "triton_functions.json"])
    run_main("create_json", [corpus / "kernels", "--task", "pairs", "--include-unchecked", "--pair-level",
                             "kernel,module,model,graph", "-o", out / "triton_pairs.json"])
    run_main("create_json", [corpus / "kernels", "--task", "problems", "-o", out / "triton_problems.json"])


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


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
