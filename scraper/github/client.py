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

The token only ever travels in the `Authorization` header of requests to the API base; it is never logged
(`repr` hides it), and requests drops it when a redirect leaves the API host (codeload.github.com).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.github.com"
USER_AGENT = "triton-data-scraper/0.1 (+https://github.com/; dataset of Triton kernels)"
API_VERSION = "2022-11-28"
# GitHub: "If you receive a secondary rate limit error without retry-after or x-ratelimit headers, wait for at
# least one minute before retrying" and increase the wait if it keeps failing.
SECONDARY_LIMIT_WAIT = 60.0


class GitHubError(Exception):
    """An API call that failed for good (after retries); `status` is the HTTP status or None for network errors."""

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.status = status


class RateLimitTooLong(GitHubError):
    """A rate-limit wait longer than the client's `max_wait` was asked for."""


class Clock:
    """Wall clock; tests pass an object with the same two methods to skip real sleeping."""

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _ServerRetry(Retry):
    """urllib3 Retry that leaves 429 (and 413) to the GitHub layer: only 503's Retry-After is honoured here."""

    RETRY_AFTER_STATUS_CODES = frozenset({503})


def make_retry(retries: int, backoff: float) -> Retry:
    """The urllib3 policy: `retries` attempts on connection errors and 5xx, exponential backoff, no raise."""
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
    )


@dataclass
class CallCounts:
    """What the client did, for the end-of-run summary. Updated under a lock (downloads run in threads)."""

    api_calls: int = 0
    retries: int = 0  # extra attempts urllib3 made (5xx, dropped connections)
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
    access token or None; `max_wait`: the longest single rate-limit wait (seconds) before `RateLimitTooLong`;
    `clock`: object with time()/sleep(); `retries`/`backoff`: urllib3 Retry settings for 5xx and network errors;
    `reset_margin`: seconds added to GitHub's reset time against clock skew.
    """

    def __init__(
        self,
        api_url: str = DEFAULT_API_URL,
        token: Optional[str] = None,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_wait: float = 3700.0,
        max_rate_retries: int = 8,
        reset_margin: float = 1.0,
        clock: Optional[Clock] = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = token or None
        self.timeout = timeout
        self.retry = make_retry(retries, backoff)
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

    # ------------------------------------------------------------------------------------------ session

    def session(self) -> requests.Session:
        """This thread's session, created on first use."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(max_retries=self.retry, pool_maxsize=4)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers.update(
                {"User-Agent": USER_AGENT, "Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION}
            )
            self._local.session = session
        return session

    def url(self, path_or_url: str) -> str:
        """Absolute URL for an API path; absolute URLs (Link headers) must lie under the API base."""
        if path_or_url.startswith(("http://", "https://")):
            if not path_or_url.startswith(self.api_url + "/"):
                raise GitHubError(f"refusing to send the token to a URL outside the API: {path_or_url}")
            return path_or_url
        return self.api_url + "/" + path_or_url.lstrip("/")

    def _path(self, url: str) -> str:
        return "/" + url[len(self.api_url):].lstrip("/").split("?")[0]

    # ------------------------------------------------------------------------------------------ requests

    def get(self, path_or_url: str, params: Optional[dict] = None, *, stream: bool = False,
            ok: tuple[int, ...] = (200,), headers: Optional[dict] = None) -> requests.Response:
        """GET an API path, waiting out rate limits; returns a response whose status is in `ok`, else raises
        GitHubError (RateLimitTooLong when a wait would exceed max_wait). `headers` add to the session's."""
        url = self.url(path_or_url)
        resource = resource_of(self._path(url))
        for attempt in range(self.max_rate_retries + 1):
            self._wait_if_blocked(resource)
            response = self._send(url, params, stream, headers)
            self._note_quota(resource, response)
            if response.status_code in ok:
                return response
            wait = self._rate_limit_wait(response, attempt)
            if wait is None:
                raise GitHubError(_describe(response, url), response.status_code)
            response.close()
            self._block(resource, wait)  # the other threads wait too instead of hammering a limited server
            self._sleep(wait, f"rate limited ({response.status_code}) on {self._path(url)}")
        raise GitHubError(f"still rate limited after {self.max_rate_retries} waits: {self._path(url)}", 429)

    def get_json(self, path_or_url: str, params: Optional[dict] = None) -> Any:
        """GET and decode JSON."""
        response = self.get(path_or_url, params)
        try:
            return response.json()
        except ValueError as exc:
            raise GitHubError(f"invalid JSON from {self._path(self.url(path_or_url))}: {exc}") from None

    def paginate(self, path_or_url: str, params: Optional[dict] = None) -> Iterator[requests.Response]:
        """Each page's response, following `Link: <...>; rel="next"` until there is none."""
        response = self.get(path_or_url, params)
        yield response
        while "next" in response.links:
            response = self.get(response.links["next"]["url"])
            yield response

    def _send(self, url: str, params: Optional[dict], stream: bool, extra: Optional[dict]) -> requests.Response:
        headers = dict(extra or {})
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        with self.counts.lock:
            self.counts.api_calls += 1
        try:
            response = self.session().get(url, params=params, headers=headers, stream=stream, timeout=self.timeout)
        except requests.RequestException as exc:
            # The exception text names host and path only; headers (the token) are never part of it.
            raise GitHubError(f"network error on {self._path(url)}: {type(exc).__name__}: {_short(exc)}") from None
        self._count_retries(response)
        return response

    def _count_retries(self, response: requests.Response) -> None:
        """Add the attempts urllib3 repeated (on this response and on the redirects before it)."""
        extra = 0
        for hop in [*response.history, response]:
            history = getattr(getattr(hop.raw, "retries", None), "history", ()) or ()
            extra += sum(1 for item in history if item.redirect_location is None)
        if extra:
            with self.counts.lock:
                self.counts.retries += extra

    # ------------------------------------------------------------------------------------------ rate limits

    def _rate_limit_wait(self, response: requests.Response, attempt: int) -> Optional[float]:
        """Seconds to wait before retrying a 403/429 that is a rate limit; None when it is a real error."""
        if response.status_code not in (403, 429):
            return None
        headers = response.headers
        retry_after = headers.get("Retry-After")
        if retry_after is not None and retry_after.strip().isdigit():
            return float(retry_after)
        if headers.get("X-RateLimit-Remaining") == "0" and headers.get("X-RateLimit-Reset", "").isdigit():
            return max(0.0, float(headers["X-RateLimit-Reset"]) - self.clock.time()) + self.reset_margin
        if response.status_code == 429 or "rate limit" in _message(response).lower():
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


def _message(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    return str(data.get("message", "")) if isinstance(data, dict) else ""


def _describe(response: requests.Response, url: str) -> str:
    path = urlsplit(url).path
    return f"HTTP {response.status_code} on {path}: {_message(response)[:200]}".rstrip(": ")


def _short(exc: BaseException) -> str:
    """The underlying reason of a requests error (MaxRetryError's last cause), without the long retry preamble."""
    reason = exc.args[0] if exc.args else exc
    reason = getattr(reason, "reason", None) or reason
    text = str(reason)
    return text if len(text) < 200 else text[:200] + "…"
