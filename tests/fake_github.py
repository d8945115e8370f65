"""A small GitHub REST API on 127.0.0.1 for the scraper's tests: real HTTP, GitHub's JSON shapes and headers.

Speaks what scrape_github.py uses: GET /search/repositories and /search/code (qualifiers stars:, created:,
size:, language:; at most 1000 results per query; `Link` pagination), /repos/{o}/{r}, /repos/{o}/{r}/commits/{ref},
/repos/{o}/{r}/zipball/{ref} (302 to a codeload-like URL on another host name, `localhost`, so requests must drop
the token), and the archive itself, built from the files of a `FakeRepo` in GitHub's zipball layout. Every request
is logged (`FakeGitHub.requests`). `Fault`s inject what GitHub does under load: 403 + Retry-After, 429, 403 with
X-RateLimit-Remaining: 0, secondary-limit 403 without headers, a 200 that uses up the quota, 502, a connection cut
mid-archive, and an archive body that stalls until the test releases it. Hostile kinds play a server that is not
GitHub: pagination that links a page to itself, search counts of a billion, bodies trickled a byte at a time,
answers that echo the Authorization header, invalid `full_name`s, endless or gzip-bombed bodies; a repository
can serve any archive bytes (`FakeRepo.archive`: zip bombs).
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import math
import re
import struct
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qs, urlencode, urlsplit

CAP = 1000
LICENSE_NAMES = {"MIT": "MIT License", "Apache-2.0": "Apache License 2.0", "BSD-3-Clause": "BSD 3-Clause"}


@dataclass
class FakeRepo:
    """One repository: metadata as GitHub reports it, and the files of its default branch's head commit."""

    full_name: str
    files: dict = field(default_factory=dict)  # path -> text
    stars: int = 150
    default_branch: str = "main"
    license: Optional[str] = "MIT"
    description: str = ""
    language: str = "Python"
    created: str = "2021-03-04"
    size_kb: int = 12
    archive: Optional[bytes] = None  # served instead of the zipball built from `files` (hostile archives)

    @property
    def sha(self) -> str:
        """A stable 40-hex commit id derived from the content."""
        blob = json.dumps([self.full_name, sorted(self.files.items())]).encode()
        return hashlib.sha1(blob).hexdigest()

    @property
    def top(self) -> str:
        owner, name = self.full_name.split("/")
        return f"{owner}-{name}-{self.sha[:7]}"

    def zip_bytes(self) -> bytes:
        """The zipball: one top folder `<owner>-<name>-<sha7>/` holding the tree (or `archive` when set)."""
        if self.archive is not None:
            return self.archive
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(zipfile.ZipInfo(self.top + "/", (2024, 1, 2, 3, 4, 6)), b"")
            for path, text in sorted(self.files.items()):
                archive.writestr(zipfile.ZipInfo(f"{self.top}/{path}", (2024, 1, 2, 3, 4, 6)), text)
        return buffer.getvalue()

    def search_text(self) -> str:
        return " ".join([self.full_name, self.description, self.files.get("README.md", "")]).lower()

    def api(self, base: str) -> dict:
        """GitHub's repository JSON (the fields the scraper reads, plus a few others as GitHub sends them)."""
        owner, name = self.full_name.split("/")
        license_data = None
        if self.license:
            license_data = {"key": self.license.lower(), "name": LICENSE_NAMES.get(self.license, self.license),
                            "spdx_id": self.license, "url": f"{base}/licenses/{self.license.lower()}"}
        return {
            "id": int(self.sha[:8], 16), "name": name, "full_name": self.full_name, "private": False,
            "owner": {"login": owner, "type": "User"}, "html_url": f"https://github.com/{self.full_name}",
            "description": self.description, "fork": False, "url": f"{base}/repos/{self.full_name}",
            "created_at": f"{self.created}T10:00:00Z", "size": self.size_kb, "stargazers_count": self.stars,
            "watchers_count": self.stars, "language": self.language, "license": license_data,
            "default_branch": self.default_branch, "archived": False,
        }


@dataclass
class CodeHit:
    """A code search hit that needs no downloadable repository (for partitioning tests)."""

    full_name: str
    path: str
    size: int


@dataclass
class Fault:
    """Injected behaviour for requests whose path matches `path` (regex), `times` times.

    kind: retry_after (403 + Retry-After: value) | too_many (429 + Retry-After: value) | reset (403,
    X-RateLimit-Remaining: 0, reset `value` s ahead) | secondary (403 "secondary rate limit", no headers) |
    quota_spent (normal 200 answer saying Remaining: 0, reset `value` s ahead) | bad_gateway (502) |
    cut (archive: half the body, then the connection closes) | stall (half the body, then wait for release) |
    corrupt (archive of the right length with damaged member bytes) | forbidden (a plain 403, not a limit).
    Hostile: trickle (archive: one byte every `value` s) | redirect_trickle (zipball: a 302 whose body is one
    byte every `value` s, never ending) | link_loop (search: `Link: rel="next"` to the page itself) |
    huge_total (search: total_count 10**9) | item_name (search items and repository answers: full_name `text`) |
    echo_auth (403 whose message holds the Authorization header) | echo_body (200 whose body is that header) |
    big_body (200 JSON of `value` MiB of spaces) | gzip_bomb (200, Content-Encoding gzip, `value` MiB of zeros) |
    json (200 whose body is `text`, JSON of any shape) | header_trickle (the status line and headers one byte every
    `value` s, never ending) | echo_fields (a normal 200 repository or search answer whose license `spdx_id`,
    `html_url` and `description` hold the Authorization header's token) | message (403 whose message is `text`)."""

    path: str
    kind: str
    times: int = 1
    value: float = 1
    text: str = ""


@dataclass
class Seen:
    method: str
    path: str
    query: dict
    headers: dict


class FakeGitHub:
    """The server. Use as a context manager; `url` is the API base to put in GITHUB_API_URL."""

    def __init__(self, repos=(), code_hits=(), codeload_host: str = "localhost", latency: float = 0.0) -> None:
        self.repos: dict[str, FakeRepo] = {r.full_name.lower(): r for r in repos}
        self.code_hits: list[CodeHit] = list(code_hits)
        self.faults: list[Fault] = []
        self.renamed: dict[str, str] = {}  # old full_name (lower case) -> new full_name
        self.requests: list[Seen] = []
        self.release = threading.Event()
        self.stalled = threading.Event()
        self.sent_bytes = 0  # body bytes written by big_body answers
        self.codeload_host = codeload_host
        self.latency = latency  # seconds added before every answer (benchmarks: a network round trip)
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.fake = self
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> "FakeGitHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def add(self, repo: FakeRepo) -> FakeRepo:
        self.repos[repo.full_name.lower()] = repo
        return repo

    def fault(self, path: str, kind: str, times: int = 1, value: float = 1, text: str = "") -> None:
        self.faults.append(Fault(path, kind, times, value, text))

    def paths(self, pattern: str = "") -> list[str]:
        """Paths of the requests seen (those matching the regex `pattern`)."""
        return [r.path for r in self.requests if re.search(pattern, r.path)]

    def take_fault(self, path: str) -> Optional[Fault]:
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and re.search(fault.path, path):
                    fault.times -= 1
                    return fault
        return None


# faults that change a normal answer (the others replace it)
_ROUTED = frozenset({"quota_spent", "cut", "stall", "corrupt", "trickle", "redirect_trickle", "link_loop",
                     "huge_total", "item_name", "echo_fields"})


def _in_range(value, spec: str, parse) -> bool:
    if ".." in spec:
        low, high = spec.split("..")
        return (low == "*" or value >= parse(low)) and (high == "*" or value <= parse(high))
    for op, test in ((">=", lambda a, b: a >= b), ("<=", lambda a, b: a <= b), (">", lambda a, b: a > b),
                     ("<", lambda a, b: a < b)):
        if spec.startswith(op):
            return test(value, parse(spec[len(op):]))
    return value == parse(spec)


def parse_query(q: str) -> tuple[list[str], dict[str, str]]:
    """Free-text terms and qualifiers of a search query."""
    terms, qualifiers = [], {}
    for token in q.split():
        key, sep, value = token.partition(":")
        if sep and key in ("stars", "created", "size", "language", "in", "fork", "user", "repo"):
            qualifiers[key] = value
        else:
            terms.append(token.lower())
    return terms, qualifiers


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeGitHub/1.0"

    def log_message(self, *args) -> None:  # quiet
        pass

    @property
    def fake(self) -> FakeGitHub:
        return self.server.fake

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.fake.requests.append(Seen("GET", parts.path, query, dict(self.headers.items())))
        if self.fake.latency:
            time.sleep(self.fake.latency)
        fault = self.fake.take_fault(parts.path)
        try:
            if fault and fault.kind not in _ROUTED:
                return self.send_fault(fault)
            self.route(parts.path, query, fault)
        except (BrokenPipeError, ConnectionResetError):
            pass

    # ---------------------------------------------------------------------------------------- responses

    def rate_headers(self, path: str, remaining: int = 4999, reset_in: float = 3600) -> dict:
        resource = "code_search" if path.startswith("/search/code") else "search" if path.startswith("/search") \
            else "core"
        return {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset": str(math.ceil(time.time() + reset_in)), "X-RateLimit-Used": "1",
                "X-RateLimit-Resource": resource}

    def send_json(self, status: int, data, headers: Optional[dict] = None) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def send_fault(self, fault: Fault) -> None:
        path = urlsplit(self.path).path
        message = {"message": "API rate limit exceeded", "documentation_url": "https://docs.github.com/rest"}
        if fault.kind == "retry_after":
            secondary = {"message": "You have exceeded a secondary rate limit. Please wait a few minutes."}
            self.send_json(403, secondary, {"Retry-After": str(int(fault.value))})
        elif fault.kind == "too_many":
            self.send_json(429, message, {"Retry-After": str(int(fault.value))})
        elif fault.kind == "reset":
            headers = self.rate_headers(path, remaining=0, reset_in=fault.value)
            self.send_json(403, message, headers)
        elif fault.kind == "secondary":
            self.send_json(403, {"message": "You have exceeded a secondary rate limit and have been temporarily "
                                            "blocked from content creation."})
        elif fault.kind == "bad_gateway":
            self.send_json(502, {"message": "Server Error"})
        elif fault.kind == "forbidden":
            self.send_json(403, {"message": "Repository access blocked"})
        elif fault.kind == "message":
            self.send_json(403, {"message": fault.text})
        elif fault.kind == "echo_auth":
            self.send_json(403, {"message": f"Bad credentials: {self.headers.get('Authorization')}"})
        elif fault.kind == "echo_body":
            self.send_body(200, str(self.headers.get("Authorization")).encode(), "text/plain")
        elif fault.kind == "gzip_bomb":
            body = gzip.compress(bytes(int(fault.value * 2**20)))
            self.send_body(200, body, "application/json", {"Content-Encoding": "gzip"})
        elif fault.kind == "json":
            self.send_body(200, fault.text.encode(), "application/json")
        elif fault.kind == "big_body":
            self.send_spaces(int(fault.value * 2**20))
        elif fault.kind == "header_trickle":  # a status line and headers that never end
            self.trickle(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10**6, fault.value)
        else:
            raise ValueError(fault.kind)

    def send_body(self, status: int, body: bytes, content_type: str, headers: Optional[dict] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def send_spaces(self, size: int) -> None:
        """A JSON answer of `size` bytes of spaces, written a block at a time (counted in `sent_bytes`)."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        block = b" " * (1 << 16)
        while size > 0:
            self.wfile.write(block[:size])
            self.fake.sent_bytes += min(size, len(block))
            size -= len(block)

    def trickle(self, body: bytes, seconds: float) -> None:
        """`body` one byte every `seconds`, until the client leaves or the test releases the server."""
        for byte in body:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            if self.fake.release.wait(seconds):
                break
        self.close_connection = True

    def not_found(self) -> None:
        self.send_json(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})

    def route(self, path: str, query: dict, fault: Optional[Fault]) -> None:
        remaining, reset_in = (0, fault.value) if fault and fault.kind == "quota_spent" else (4999, 3600)
        rate = self.rate_headers(path, remaining, reset_in)
        if path == "/search/repositories":
            return self.search_repositories(query, rate, fault)
        if path == "/search/code":
            if not self.headers.get("Authorization"):
                return self.send_json(401, {"message": "Requires authentication"}, rate)
            return self.search_code(query, rate, fault)
        if path.startswith("/_codeload/"):
            return self.archive(path, fault)
        match = re.fullmatch(r"/repos/([^/]+)/([^/]+)(?:/(commits|zipball)/(.+))?", path)
        moved = self.fake.renamed.get(f"{match[1]}/{match[2]}".lower()) if match else None
        if moved:  # GitHub answers an old name with 301 to the repository's new URL
            self.send_response(301)
            rest = f"/{match[3]}/{match[4]}" if match[3] else ""
            self.send_header("Location", f"{self.fake.url}/repos/{moved}{rest}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        repo = self.fake.repos.get(f"{match[1]}/{match[2]}".lower()) if match else None
        if repo is None:
            return self.not_found()
        if match[3] is None:
            answer = repo.api(self.fake.url)
            if fault and fault.kind == "item_name":
                answer["full_name"] = fault.text
            if fault and fault.kind == "echo_fields":
                self.echo_token(answer)
            return self.send_json(200, answer, rate)
        if match[4] not in (repo.default_branch, repo.sha):
            return self.send_json(422, {"message": f"No commit found for SHA: {match[4]}"}, rate)
        if match[3] == "commits":
            if self.headers.get("Accept") == "application/vnd.github.sha":  # GitHub: the bare SHA as text
                body = repo.sha.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/vnd.github.sha; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                for key, value in rate.items():
                    self.send_header(key, value)
                self.end_headers()
                return self.wfile.write(body)
            return self.send_json(200, {"sha": repo.sha, "commit": {"message": "head"}, "files": []}, rate)
        self.send_response(302)
        self.send_header("Location", f"http://{self.fake.codeload_host}:{self.fake.port}/_codeload/"
                                     f"{repo.full_name}/legacy.zip/{repo.sha}")
        endless = fault is not None and fault.kind == "redirect_trickle"
        self.send_header("Content-Length", str(10**12) if endless else "0")
        for key, value in rate.items():
            self.send_header(key, value)
        self.end_headers()
        if endless:
            self.trickle(b"<html>" * 10**6, fault.value)

    def archive(self, path: str, fault: Optional[Fault]) -> None:
        match = re.fullmatch(r"/_codeload/([^/]+/[^/]+)/legacy\.zip/([0-9a-f]{40})", path)
        repo = self.fake.repos.get(match[1].lower()) if match else None
        if repo is None or repo.sha != match[2]:
            return self.not_found()
        body = repo.zip_bytes()
        if fault and fault.kind == "corrupt":  # right length, damaged member data: only a CRC check notices
            start = _largest_py_data(body)
            body = body[:start] + bytes(b ^ 0xFF for b in body[start:start + 16]) + body[start + 16:]
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Disposition", f"attachment; filename={repo.top}.zip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if fault and fault.kind == "trickle":
            return self.trickle(body, fault.value)
        if fault and fault.kind in ("cut", "stall"):
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if fault.kind == "stall":
                self.fake.stalled.set()
                self.fake.release.wait(60)
            self.close_connection = True
            return
        self.wfile.write(body)

    # ---------------------------------------------------------------------------------------- search

    def page(self, path: str, query: dict, matches: list, rate: dict, to_item, fault: Optional[Fault]) -> None:
        per_page = min(int(query.get("per_page", 30)), 100)
        page = int(query.get("page", 1))
        if (page - 1) * per_page >= CAP:
            return self.send_json(422, {"message": "Only the first 1000 search results are available"}, rate)
        reachable = matches[:CAP]
        items = reachable[(page - 1) * per_page: page * per_page]
        last = max(1, -(-len(reachable) // per_page))
        links = []
        for rel, number in (("next", page + 1), ("last", last), ("first", 1), ("prev", page - 1)):
            if (rel in ("next", "last") and page < last) or (rel in ("first", "prev") and page > 1):
                link_query = urlencode({**query, "page": number})
                links.append(f'<{self.fake.url}{path}?{link_query}>; rel="{rel}"')
        kind = fault.kind if fault else None
        if kind == "link_loop":
            links = [f'<{self.fake.url}{self.path}>; rel="next"']
        headers = dict(rate)
        if links:
            headers["Link"] = ", ".join(links)
        data = {"total_count": 10**9 if kind == "huge_total" else len(matches), "incomplete_results": False,
                "items": [to_item(m) for m in items]}
        if kind == "item_name":
            for item in data["items"]:
                item.get("repository", item)["full_name"] = fault.text
        if kind == "echo_fields":
            for item in data["items"]:
                self.echo_token(item.get("repository", item))
        self.send_json(200, data, headers)

    def echo_token(self, answer: dict) -> None:
        """Put the request's token (the Authorization header without `Bearer `) into fields a scraper keeps."""
        token = str(self.headers.get("Authorization", "")).removeprefix("Bearer ")
        answer["license"] = {"key": "other", "name": token, "spdx_id": token, "url": token}
        answer["html_url"] = f"https://github.com/{answer.get('full_name')}?{token}"
        answer["description"] = token

    def search_repositories(self, query: dict, rate: dict, fault: Optional[Fault] = None) -> None:
        terms, qualifiers = parse_query(query.get("q", ""))
        matches = [r for r in self.fake.repos.values() if self.repo_matches(r, terms, qualifiers)]
        if query.get("sort") == "stars":
            matches.sort(key=lambda r: (-r.stars, r.full_name))
        else:
            matches.sort(key=lambda r: r.full_name)
        self.page("/search/repositories", query, matches, rate, lambda r: {**r.api(self.fake.url), "score": 1.0},
                  fault)

    @staticmethod
    def repo_matches(repo: FakeRepo, terms: list, qualifiers: dict) -> bool:
        text = repo.search_text()
        created = dt.date.fromisoformat(repo.created)
        return (all(t in text for t in terms)
                and ("stars" not in qualifiers or _in_range(repo.stars, qualifiers["stars"], int))
                and ("created" not in qualifiers
                     or _in_range(created, qualifiers["created"], dt.date.fromisoformat))
                and ("language" not in qualifiers or qualifiers["language"].lower() == repo.language.lower()))

    def search_code(self, query: dict, rate: dict, fault: Optional[Fault] = None) -> None:
        terms, qualifiers = parse_query(query.get("q", ""))
        hits = [CodeHit(r.full_name, p, len(t.encode())) for r in self.fake.repos.values()
                for p, t in sorted(r.files.items()) if p.endswith(".py") and all(x in t.lower() for x in terms)]
        hits += self.fake.code_hits
        if "size" in qualifiers:
            hits = [h for h in hits if _in_range(h.size, qualifiers["size"], int)]
        if qualifiers.get("language", "python").lower() == "python":
            hits = [h for h in hits if h.path.endswith(".py")]

        def item(hit: CodeHit) -> dict:
            owner, name = hit.full_name.split("/")
            return {"name": hit.path.rsplit("/", 1)[-1], "path": hit.path, "sha": "0" * 40,
                    "url": f"{self.fake.url}/repositories/1/contents/{hit.path}",
                    "html_url": f"https://github.com/{hit.full_name}/blob/main/{hit.path}",
                    "repository": {"id": 1, "name": name, "full_name": hit.full_name, "private": False,
                                   "owner": {"login": owner}, "html_url": f"https://github.com/{hit.full_name}",
                                   "fork": False},
                    "score": 1.0}

        self.page("/search/code", query, hits, rate, item, fault)


def _largest_py_data(archive: bytes) -> int:
    """Offset of the middle of the largest .py member's compressed data (what the scraper reads and checks)."""
    with zipfile.ZipFile(io.BytesIO(archive)) as handle:
        info = max((i for i in handle.infolist() if i.filename.endswith(".py")), key=lambda i: i.compress_size)
    name_length, extra_length = struct.unpack_from("<HH", archive, info.header_offset + 26)
    return info.header_offset + 30 + name_length + extra_length + info.compress_size // 2 - 8


class FakeClock:
    """Clock for GitHubClient that records sleeps instead of sleeping (time moves on by the slept amount)."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.offset += seconds


KERNEL = """import triton
import triton.language as tl


@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask), mask=mask)
"""


def kernel_repo(full_name: str, **kwargs) -> FakeRepo:
    """A small repository with one Triton kernel file, a README and a plain Python file."""
    files = {"README.md": f"# {full_name}\nTriton kernels.\n", "pkg/__init__.py": "",
             "pkg/kernels.py": KERNEL.replace("add_kernel", f"add_{full_name.split('/')[1].replace('-', '_')}"),
             "pkg/util.py": "def helper():\n    return 1\n"}
    files.update(kwargs.pop("files", {}))
    return FakeRepo(full_name, files, **kwargs)


MODULE = """import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x))
"""


def module_repo(full_name: str, **kwargs) -> FakeRepo:
    """A small PyTorch repository: a README naming PyTorch, one file with an nn.Module subclass, a plain file."""
    files = {"README.md": f"# {full_name}\nA PyTorch model.\n", "model/__init__.py": "",
             "model/block.py": MODULE, "model/util.py": "def helper():\n    return 1\n"}
    files.update(kwargs.pop("files", {}))
    return FakeRepo(full_name, files, **kwargs)
