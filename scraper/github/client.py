"""HTTP session for the GitHub REST API: token, retries, rate limits, call counts.

Two layers, each doing what it is good at:

* urllib3's `Retry` (mounted through requests' `HTTPAdapter`) retries dropped connections and 5xx answers with
  exponential backoff, and honours `Retry-After` on 503. It is well tested and needs no code of ours.
* `GitHubClient._rate_limit_wait` handles what is GitHub-specific and what urllib3 cannot know: 403/429 answers
  that are rate limits (primary: `X-RateLimit-Remaining: 0` + `X-RateLimit-Reset`; secondary: `Retry-After`, or
  neither, then at least a minute as GitHub's docs say), and *pre-emptive* waits: when a successful answer says
  `X-RateLimit-Remaining: 0`, the next call on that resource (core / search / code_search) waits for the reset
  instead of provoking a 403. These waits are counted (time and number) and capped by `max_wait`; sleeping goes
  through a clock object so tests can replace it.

Server answers are hostile input too. Every body is streamed and read one socket read at a time against a
deadline for the whole body and a stall deadline (at least `STALL_BYTES` every `timeout` seconds: a per-read
timeout alone lets a server trickle one byte every few seconds forever), and a size cap; the status line and
headers have a deadline of their own (HeaderDeadline); bodies are asked for and read without content encoding
(no gzip bomb). Redirects are followed here, not by requests (which reads a redirect's whole body into memory
first), at most `MAX_REDIRECTS` hops. `Link` pagination stops at a URL it has already read. `full_name`s and the
other fields kept are checked where they are parsed (download.py, search.py).

The token only ever travels in the `Authorization` header of requests to URLs under the API base (so not to
codeload.github.com after the zipball redirect); it is never logged (`repr` hides it), and `mask` removes its
value from every error message the client makes and from every string of every JSON answer it decodes, in case a
server echoes it back. Error messages are also passed through `printable`: a server's text cannot put escape
sequences into a terminal or forge a log line.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

from scraper.zipsafe import printable

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.github.com"
USER_AGENT = "triton-data-scraper/0.1 (+https://github.com/; dataset of Triton kernels)"
API_VERSION = "2022-11-28"
# GitHub: "If you receive a secondary rate limit error without retry-after or x-ratelimit headers, wait for at
# least one minute before retrying" and increase the wait if it keeps failing.
SECONDARY_LIMIT_WAIT = 60.0
MAX_REDIRECTS = 5
MAX_ANSWER_BYTES = 16 * 1024 * 1024  # an API answer (a search page of 100 items is about 600 KB)
MESSAGE_BYTES = 4096  # what is read of an error answer to find its message
CHUNK = 1 << 16
# A body that delivers less than this in one `timeout` window has stalled (64 KiB in 60 s is 1 KiB/s; the
# window's first bytes may arrive a read timeout late, so a stall is noticed within two windows).
STALL_BYTES = 64 * 1024


class HeaderDeadline:
    """A connection whose status line and headers must all arrive within `header_seconds`: http.client reads them
    with the per-read timeout only, so a server trickling its headers a byte at a time would hold the request
    forever. At the deadline the socket is shut down, which ends the read with a connection error."""

    header_seconds = 120.0

    def getresponse(self, *args, **kwargs):
        timer = threading.Timer(self.header_seconds, self._cut)
        timer.daemon = True
        timer.start()
        try:
            return super().getresponse(*args, **kwargs)
        finally:
            timer.cancel()

    def _cut(self) -> None:
        sock = getattr(self, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class HeaderDeadlineAdapter(HTTPAdapter):
    """requests' adapter over connections with a deadline for the headers (HeaderDeadline)."""

    def __init__(self, header_seconds: float, **kwargs) -> None:
        self.header_seconds = header_seconds
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        settings = {"header_seconds": self.header_seconds}
        http = type("Connection", (HeaderDeadline, HTTPConnection), settings)
        https = type("SecureConnection", (HeaderDeadline, HTTPSConnection), settings)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("Pool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("SecurePool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
        }


class GitHubError(Exception):
    """An API call that failed for good (after retries); `status` is the HTTP status or None for network errors."""

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.status = status


class RateLimitTooLong(GitHubError):
    """A rate-limit wait longer than the client's `max_wait` was asked for."""


class BodyTooSlow(GitHubError):
    """A body that stalled (`reason` "stalled": under STALL_BYTES in a `timeout` window) or was not complete by
    its deadline (`reason` "deadline")."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class Clock:
    """Wall clock; tests pass an object with the same two methods to skip real sleeping."""

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _ServerRetry(Retry):
    """urllib3 Retry that leaves 429 (and 413) to the GitHub layer: only 503's Retry-After is honoured here.
    It calls `on_retry` for every retry urllib3 makes, so retries that end in an error are counted too."""

    RETRY_AFTER_STATUS_CODES = frozenset({503})

    def __init__(self, *args, on_retry: Optional[Callable[[], None]] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.on_retry = on_retry

    def new(self, **kwargs) -> "_ServerRetry":
        return super().new(on_retry=self.on_retry, **kwargs)  # urllib3 copies the policy at every attempt

    def increment(self, *args, **kwargs) -> "_ServerRetry":
        retry = super().increment(*args, **kwargs)  # raises MaxRetryError when no retry is left: none is made
        if self.on_retry is not None:
            self.on_retry()
        return retry


def make_retry(retries: int, backoff: float, on_retry: Optional[Callable[[], None]] = None) -> Retry:
    """The urllib3 policy: `retries` attempts on connection errors and 5xx, exponential backoff, no raise;
    `on_retry` is called for each retry made."""
    return _ServerRetry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff,
        status_forcelist=(500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "HEAD"}),
        raise_on_status=False,  # the last 5xx comes back as a response; we turn it into a GitHubError
        respect_retry_after_header=True,
        on_retry=on_retry,
    )


@dataclass
class CallCounts:
    """What the client did, for the end-of-run summary. Updated under a lock (downloads run in threads)."""

    api_calls: int = 0
    retries: int = 0  # extra attempts urllib3 made (5xx, dropped connections)
    pagination_stopped: int = 0  # `Link: rel="next"` chains cut short (a page seen before, or too many pages)
    rate_limit_waits: int = 0
    rate_limit_wait_seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def resource_of(path: str) -> str:
    """GitHub's rate-limit bucket for an API path (the `X-RateLimit-Resource` values)."""
    if path.startswith("/search/code"):
        return "code_search"
    if path.startswith("/search/"):
        return "search"
    return "core"


class GitHubClient:
    """GET requests against the GitHub REST API with auth, retries and rate-limit handling.

    `api_url`: the API base (GitHub Enterprise `https://host/api/v3`, or a local test server); `token`: a personal
    access token or None; `timeout`: seconds for one socket read, and the window in which a body must deliver
    STALL_BYTES; `deadline`: seconds for a whole API answer's body (downloads pass their own) and for the status
    line and headers of any answer; `max_wait`: the longest single rate-limit wait (seconds) before
    `RateLimitTooLong`; `clock`: object with time()/sleep(); `retries`/`backoff`: urllib3 Retry settings for 5xx
    and network errors; `reset_margin`: seconds added to GitHub's reset time against clock skew;
    `max_answer_bytes`: the largest API answer read.
    """

    def __init__(
        self,
        api_url: str = DEFAULT_API_URL,
        token: Optional[str] = None,
        *,
        timeout: float = 30.0,
        deadline: float = 120.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_wait: float = 3700.0,
        max_rate_retries: int = 8,
        reset_margin: float = 1.0,
        clock: Optional[Clock] = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = token or None
        self.timeout = timeout
        self.deadline = deadline
        self.max_answer_bytes = max_answer_bytes
        self.retry = make_retry(retries, backoff, self._count_retry)
        self.max_wait = max_wait
        self.max_rate_retries = max_rate_retries
        self.reset_margin = reset_margin  # seconds added to X-RateLimit-Reset for clock skew
        self.clock = clock or Clock()
        self.counts = CallCounts()
        self._blocked_until: dict[str, float] = {}  # resource -> epoch seconds when its quota resets
        self._block_lock = threading.Lock()
        self._local = threading.local()  # one requests.Session per thread

    def __repr__(self) -> str:  # never show the token
        return f"GitHubClient({self.api_url!r}, token={'set' if self._token else 'none'})"

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def mask(self, text: str) -> str:
        """`text` with the token's value replaced by `***` (a server may echo the Authorization header)."""
        return text.replace(self._token, "***") if self._token else text

    def scrub(self, text: object) -> str:
        """`text` fit for a log line or an error message: the token masked, control characters escaped."""
        return printable(self.mask(str(text)))

    def error(self, message: str, status: Optional[int] = None) -> GitHubError:
        """A GitHubError whose message is scrubbed; every error the client makes goes through here."""
        return GitHubError(self.scrub(message), status)

    def mask_strings(self, data: Any) -> Any:
        """Decoded JSON with the token masked in every string value (lists and objects walked), so no field of an
        answer can carry it into a file, whatever field a server chose."""
        if not self._token:
            return data
        if isinstance(data, str):
            return self.mask(data)
        if isinstance(data, list):
            return [self.mask_strings(item) for item in data]
        if isinstance(data, dict):
            return {key: self.mask_strings(value) for key, value in data.items()}
        return data

    # ------------------------------------------------------------------------------------------ session

    def session(self) -> requests.Session:
        """This thread's session, created on first use."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # the headers of an answer within the answer's deadline (its body has its own, in chunks())
            adapter = HeaderDeadlineAdapter(self.deadline, max_retries=self.retry, pool_maxsize=4)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers.update({
                "User-Agent": USER_AGENT, "Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION,
                "Accept-Encoding": "identity",  # bodies as sent: no decompression of what a server chose to send
            })
            self._local.session = session
        return session

    def url(self, path_or_url: str) -> str:
        """Absolute URL for an API path; absolute URLs (Link headers) must lie under the API base."""
        if path_or_url.startswith(("http://", "https://")):
            if not self._in_api(path_or_url):
                raise self.error(f"refusing to send the token to a URL outside the API: {path_or_url[:200]}")
            return path_or_url
        return self.api_url + "/" + path_or_url.lstrip("/")

    def _in_api(self, url: str) -> bool:
        return url.startswith(self.api_url + "/")

    def _path(self, url: str) -> str:
        if self._in_api(url):
            return "/" + url[len(self.api_url):].lstrip("/").split("?")[0]
        return urlsplit(url).path

    # ------------------------------------------------------------------------------------------ requests

    def get(self, path_or_url: str, params: Optional[dict] = None, *, ok: tuple[int, ...] = (200,),
            headers: Optional[dict] = None) -> requests.Response:
        """GET an API path, waiting out rate limits; returns a streamed response whose status is in `ok` (read
        its body with `read` or `chunks`), else raises GitHubError (RateLimitTooLong when a wait would exceed
        max_wait). `headers` add to the session's."""
        url = self.url(path_or_url)
        resource = resource_of(self._path(url))
        for attempt in range(self.max_rate_retries + 1):
            self._wait_if_blocked(resource)
            response = self._send(url, params, headers)
            self._note_quota(resource, response)
            if response.status_code in ok:
                return response
            message = self._message(response)
            wait = self._rate_limit_wait(response, message, attempt)
            if wait is None:
                raise self.error(f"HTTP {response.status_code} on {self._path(url)}: {message}".rstrip(": "),
                                 response.status_code)
            self._block(resource, wait)  # the other threads wait too instead of hammering a limited server
            self._sleep(wait, f"rate limited ({response.status_code}) on {self._path(url)}")
        raise self.error(f"still rate limited after {self.max_rate_retries} waits: {self._path(url)}", 429)

    def get_json(self, path_or_url: str, params: Optional[dict] = None) -> Any:
        """GET and decode JSON."""
        return self.json_of(self.get(path_or_url, params))

    def json_of(self, response: requests.Response) -> Any:
        """The JSON of a response's body (read within the caps), the token masked in its strings."""
        try:
            data = json.loads(self.read(response))
        except ValueError as exc:
            raise self.error(f"invalid JSON from {self._path(response.url)}: {exc}") from None
        except RecursionError:  # nesting deeper than the interpreter's stack
            raise self.error(f"JSON from {self._path(response.url)} nested too deep") from None
        try:
            return self.mask_strings(data)
        except RecursionError:
            raise self.error(f"JSON from {self._path(response.url)} nested too deep") from None

    def paginate(self, path_or_url: str, params: Optional[dict] = None,
                 max_pages: Optional[int] = None) -> Iterator[Any]:
        """Each page's JSON, following `Link: <...>; rel="next"` until there is none, the next URL is one already
        read (a server that links a page to itself would be followed forever), or `max_pages` were read."""
        response = self.get(path_or_url, params)
        seen, pages = {response.url}, 1
        yield self.json_of(response)
        while "next" in response.links:
            url = self.url(response.links["next"]["url"])
            if url in seen or (max_pages is not None and pages >= max_pages):
                self._stop_pagination(url, pages)
                return
            response = self.get(url)
            seen.update({url, response.url})
            pages += 1
            yield self.json_of(response)

    def _stop_pagination(self, url: str, pages: int) -> None:
        log.warning("not following Link rel=next after %d pages: %s", pages, self.scrub(url[:200]))
        with self.counts.lock:
            self.counts.pagination_stopped += 1

    def _send(self, url: str, params: Optional[dict], extra: Optional[dict]) -> requests.Response:
        """One call: the request and its redirects (the token only to URLs under the API base)."""
        with self.counts.lock:
            self.counts.api_calls += 1
        for _ in range(MAX_REDIRECTS + 1):
            response = self._request(url, params, extra)
            if not response.is_redirect:
                return response
            url, params = urljoin(response.url, response.headers["Location"]), None
            response.close()  # not read: a redirect's body is of no use, and could be endless
        raise self.error(f"more than {MAX_REDIRECTS} redirects, last to {urlsplit(url).path}")

    def _request(self, url: str, params: Optional[dict], extra: Optional[dict]) -> requests.Response:
        headers = dict(extra or {})
        if self._token and self._in_api(url):
            headers["Authorization"] = f"Bearer {self._token}"
        session = self.session()
        try:
            # Through the adapter, not Session.send: that reads a redirect's whole body first, even with
            # allow_redirects=False (to prepare Response.next), and a hostile redirect's body never ends.
            prepared = session.prepare_request(requests.Request("GET", url, params=params, headers=headers))
            settings = session.merge_environment_settings(prepared.url, {}, True, None, None)  # proxies, CA file
            return session.get_adapter(prepared.url).send(prepared, timeout=self.timeout, **settings)
        except requests.RequestException as exc:
            # The exception text names host and path only; headers (the token) are never part of it.
            raise self.error(f"network error on {self._path(url)}: {type(exc).__name__}: {_short(exc)}") from None

    def _count_retry(self) -> None:
        with self.counts.lock:
            self.counts.retries += 1

    # ------------------------------------------------------------------------------------------ bodies

    def chunks(self, response: requests.Response, seconds: Optional[float] = None) -> Iterator[bytes]:
        """The body of a streamed response as it arrives, one socket read at a time, so the whole body is bounded
        in time: BodyTooSlow once it has taken longer than `seconds` (default: the client's deadline), or when a
        `timeout` window went by with less than STALL_BYTES."""
        seconds = self.deadline if seconds is None else seconds
        encoding = response.headers.get("Content-Encoding", "identity").lower()
        if encoding != "identity":
            response.close()
            raise self.error(f"{self._path(response.url)}: unasked-for Content-Encoding {encoding[:40]!r}")
        pace = _Pace(seconds, self.timeout)
        try:
            while chunk := response.raw.read1(CHUNK, decode_content=False):
                late = pace.check(len(chunk))
                if late:
                    response.close()
                    raise BodyTooSlow(self.scrub(f"{self._path(response.url)}: {late[1]}"), late[0])
                yield chunk
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            response.close()
            raise self.error(f"network error reading {self._path(response.url)}: {type(exc).__name__}: "
                             f"{_short(exc)}") from None

    def read(self, response: requests.Response) -> bytes:
        """A streamed response's whole body: GitHubError past `max_answer_bytes` or the client's deadline."""
        limit = self.max_answer_bytes
        body = bytearray()
        for chunk in self.chunks(response):
            body += chunk
            if len(body) > limit:
                response.close()
                raise self.error(f"{self._path(response.url)}: answer larger than {limit} bytes")
        return bytes(body)

    def _message(self, response: requests.Response) -> str:
        """The `message` of an error answer, from its first MESSAGE_BYTES (the rest is not read), masked."""
        body = bytearray()
        try:
            for chunk in self.chunks(response):
                body += chunk
                if len(body) >= MESSAGE_BYTES:
                    break
        except GitHubError:
            pass  # a message that does not arrive is no message
        finally:
            response.close()
        text = body.decode("utf-8", errors="replace")
        try:
            data = json.loads(text)
        except ValueError:
            return self.mask(text[:200])
        return self.mask(str(data.get("message", ""))[:200]) if isinstance(data, dict) else ""

    # ------------------------------------------------------------------------------------------ rate limits

    def _rate_limit_wait(self, response: requests.Response, message: str, attempt: int) -> Optional[float]:
        """Seconds to wait before retrying a 403/429 that is a rate limit; None when it is a real error."""
        if response.status_code not in (403, 429):
            return None
        headers = response.headers
        retry_after = headers.get("Retry-After")
        if retry_after is not None and retry_after.strip().isdigit():
            return float(retry_after)
        if headers.get("X-RateLimit-Remaining") == "0" and headers.get("X-RateLimit-Reset", "").isdigit():
            return max(0.0, float(headers["X-RateLimit-Reset"]) - self.clock.time()) + self.reset_margin
        if response.status_code == 429 or "rate limit" in message.lower():
            return SECONDARY_LIMIT_WAIT * (2 ** attempt)
        return None  # a plain 403: forbidden, blocked repository, bad token ...

    def _note_quota(self, resource: str, response: requests.Response) -> None:
        """Remember that a bucket is empty so the next call waits for its reset instead of hitting a 403."""
        headers = response.headers
        if response.status_code == 200 and headers.get("X-RateLimit-Remaining") == "0":
            reset = headers.get("X-RateLimit-Reset", "")
            if reset.isdigit():
                bucket = headers.get("X-RateLimit-Resource", resource)
                with self._block_lock:
                    self._blocked_until[bucket] = float(reset) + self.reset_margin

    def _block(self, resource: str, seconds: float) -> None:
        with self._block_lock:
            until = self.clock.time() + seconds
            self._blocked_until[resource] = max(until, self._blocked_until.get(resource, 0.0))

    def _wait_if_blocked(self, resource: str) -> None:
        with self._block_lock:
            until = self._blocked_until.get(resource)  # kept: every thread waits, not only the first
        if until is not None:
            wait = until - self.clock.time()
            if wait > 0:
                self._sleep(wait, f"{resource} quota used up, waiting for its reset")

    def _sleep(self, seconds: float, why: str) -> None:
        if seconds > self.max_wait:
            raise RateLimitTooLong(
                f"{why}: would have to wait {seconds:.0f} s, more than --max-wait {self.max_wait:.0f} s", 429
            )
        log.warning("%s: waiting %.1f s", why, seconds)
        with self.counts.lock:
            self.counts.rate_limit_waits += 1
            self.counts.rate_limit_wait_seconds += seconds
        self.clock.sleep(seconds)


class _Pace:
    """The two deadlines of a body: all of it within `seconds`, and STALL_BYTES in every `window` seconds."""

    def __init__(self, seconds: float, window: float) -> None:
        self.seconds, self.window = seconds, window
        self.started = self.window_start = time.monotonic()
        self.window_bytes = 0

    def check(self, size: int) -> Optional[tuple[str, str]]:
        """Count `size` bytes just read; (reason, message) when the body is too slow, else None."""
        now = time.monotonic()
        if now - self.started > self.seconds:
            return "deadline", f"body not complete after {self.seconds:.0f} s"
        if now - self.window_start > self.window:
            if self.window_bytes < STALL_BYTES:
                return "stalled", (f"body stalled: {self.window_bytes} bytes in {now - self.window_start:.1f} s "
                                   f"(less than {STALL_BYTES // 1024} KiB per {self.window:g} s timeout)")
            self.window_start, self.window_bytes = now, 0
        self.window_bytes += size
        return None


def _short(exc: BaseException) -> str:
    """The underlying reason of a requests error (MaxRetryError's last cause), without the long retry preamble."""
    reason = exc.args[0] if exc.args else exc
    reason = getattr(reason, "reason", None) or reason
    text = str(reason)
    return text if len(text) < 200 else text[:200] + "…"
