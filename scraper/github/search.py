"""Partitioned GitHub search: every result, not only the first 1000.

The search API returns at most 1000 results per query. A query whose `total_count` is above that is split on a
qualifier range and each half searched again, until every part has <= 1000 results; pages of a part are followed
through `Link` headers. Repository search splits on `stars:` ranges, then on `created:` dates when one star
count alone has more than 1000 repositories; code search splits on file `size:` ranges (bytes). Results are
de-duplicated by full name, since live star counts can move a repository across a boundary between queries.

A server is not trusted to make this end. The parts of a split cannot hold more than the whole: once they claim
more results than the query they were split from (less what their earlier siblings claimed, give or take 10 %
for counts that move between queries), the counts cannot be trusted, and that part is not split again and only
its first page is kept (`inconsistent_parts`). A server claiming 10**9 results for every query is so stopped
after about two queries per level of one path down the tree. A part deeper than `max_depth` splits is not split
again (`truncated_parts`), and once `max_queries` queries are spent the parts not yet searched are skipped
(`skipped_parts`); each is counted and named in a warning, and what was found so far is kept. Pages stop after
the 10 that hold 1000 results. Answers that are not GitHub's shape raise GitHubError; items without a valid
`owner/name` are dropped and counted (`invalid_items`).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from scraper.github.client import GitHubClient, GitHubError
from scraper.repos import is_full_name

log = logging.getLogger(__name__)

SEARCH_CAP = 1000
PER_PAGE = 100
MAX_PAGES = SEARCH_CAP // PER_PAGE
# Stars from 100 to ~500 000 take 19 halvings, then creation dates since 2007 another 13; code search's file
# sizes 19. (A server claiming more than 1000 results everywhere is stopped sooner: see _Share.)
MAX_SPLIT_DEPTH = 40
# per partitioned search: enough for 90 000 results; at GitHub's 30 searches a minute half an hour (code search, at
# 10 a minute, 100 minutes)
MAX_QUERIES = 1000
FIRST_DAY = dt.date(2007, 10, 1)  # GitHub's first repositories
MAX_CODE_FILE_SIZE = 400_000  # code search indexes files under 384 KB


@dataclass(frozen=True)
class Part:
    """One range of a qualifier: `stars:10..20`, `created:2020-01-01..2020-06-30`, `size:0..1000`.
    `high` None means unbounded (`stars:>=10`)."""

    qualifier: str
    low: object
    high: object = None

    def text(self) -> str:
        if self.high is None:
            return f"{self.qualifier}:>={self.low}"
        return f"{self.qualifier}:{self.low}..{self.high}"

    def splittable(self) -> bool:
        return self.high is not None and self.low < self.high

    def halves(self) -> tuple["Part", "Part"]:
        """Two parts covering this one without overlap."""
        if isinstance(self.low, dt.date):
            mid = self.low + (self.high - self.low) // 2
            return Part(self.qualifier, self.low, mid), Part(self.qualifier, mid + dt.timedelta(days=1), self.high)
        mid = (self.low + self.high) // 2
        return Part(self.qualifier, self.low, mid), Part(self.qualifier, mid + 1, self.high)


@dataclass
class _Share:
    """What the parts of one split may still claim: the total of the query they were split from (`whole`), less
    what the parts searched so far claimed (`left`)."""

    whole: int
    left: int

    def allows(self, total: int) -> bool:
        """True when a part claiming `total` fits (10 % of the whole, and 100, allowed for moving counts)."""
        return total <= self.left + self.whole // 10 + SEARCH_CAP // 10


@dataclass
class SearchReport:
    """What a partitioned search did: queries sent, parts it was split into, parts it could not get whole."""

    queries: int = 0
    parts: int = 0
    truncated_parts: int = 0  # more than 1000 results but not split further: only the first 1000 read
    skipped_parts: int = 0  # not searched: the query budget was spent
    inconsistent_parts: int = 0  # claimed more results than the part they were split from: not split further
    incomplete_results: int = 0
    invalid_items: int = 0  # items without a valid owner/name


def search_pages(client: GitHubClient, endpoint: str, query: str, report: SearchReport,
                 sort: Optional[str] = None) -> tuple[int, list, Iterator[list]]:
    """First page's `total_count` and items, and an iterator over every page's items (first page included)."""
    params = {"q": query, "per_page": PER_PAGE}
    if sort:
        params.update(sort=sort, order="desc")
    pages = client.paginate(endpoint, params, max_pages=MAX_PAGES)
    report.queries += 1
    total, first_items = _decode(next(pages), report)

    def items() -> Iterator[list]:
        page_items = first_items
        while True:
            yield page_items
            data = next(pages, None)
            if data is None:
                return
            report.queries += 1
            page_items = _decode(data, report)[1]

    return total, list(first_items), items()


def _decode(data, report: SearchReport) -> tuple[int, list]:
    """(total_count, items that are objects) of a search answer (the others counted as invalid items);
    GitHubError when the answer is not GitHub's shape."""
    if not isinstance(data, dict):
        raise GitHubError("search answer is not a JSON object")
    total, items = data.get("total_count", 0), data.get("items", [])
    if type(total) is not int or total < 0 or not isinstance(items, list):
        raise GitHubError(f"search answer without a count and a list of items: total_count={str(total)[:40]!r}")
    if data.get("incomplete_results"):
        report.incomplete_results += 1
    objects = [item for item in items if isinstance(item, dict)]
    report.invalid_items += len(items) - len(objects)
    return total, objects


def partitioned_search(client: GitHubClient, endpoint: str, query: str, first: Part,
                       refine: Callable[[Part, dict], Optional[Part]], report: SearchReport,
                       sort: Optional[str] = None, max_depth: int = MAX_SPLIT_DEPTH,
                       max_queries: int = MAX_QUERIES) -> Iterator[dict]:
    """Every item of `query` over `first`, splitting parts with more than SEARCH_CAP results.

    `refine(part, first_item)` turns an unbounded part into a bounded one (or a part that cannot be split on its
    own qualifier into one on another qualifier); it returns None when there is nothing finer to try. A part
    `max_depth` splits deep is not split again; parts left when `max_queries` are spent are skipped.
    """
    stack = [(first, "", 0, None)]
    while stack:
        if report.queries >= max_queries:
            _skip_rest(stack, query, report)
            return
        part, outer, depth, share = stack.pop()
        text = f"{query} {outer} {part.text()}".replace("  ", " ").strip()
        total, first_items, pages = search_pages(client, endpoint, text, report, sort)
        if share is not None and not share.allows(total):
            _inconsistent(text, total, share, report)
            yield from first_items
            continue
        if share is not None:
            share.left -= total
        if total > SEARCH_CAP:
            finer = _finer(part, outer, first_items, refine) if depth < max_depth else []
            if finer:
                log.debug("%s: %d results, split", text, total)
                halves = _Share(total, total)
                stack.extend((child, child_outer, depth + 1, halves) for child, child_outer in reversed(finer))
                continue
            report.truncated_parts += 1
            log.warning("search %r has %d results and is not split further; only the first %d are reachable",
                        text, total, SEARCH_CAP)
        report.parts += 1
        for items in pages:
            yield from items


def _inconsistent(text: str, total: int, share: _Share, report: SearchReport) -> None:
    """Count a part whose claim does not fit its share; the first of a search is a warning, the others debug."""
    report.inconsistent_parts += 1
    report.parts += 1
    level = logging.WARNING if report.inconsistent_parts == 1 else logging.DEBUG
    log.log(level, "search %r: %d results, but the parts of a query with %d claim more results than that (%d "
            "left for this one); the server's counts cannot be trusted: not split, only its first page kept "
            "(further such parts are counted in *_inconsistent_parts)", text, total, share.whole, max(share.left, 0))


def _skip_rest(stack: list, query: str, report: SearchReport) -> None:
    report.skipped_parts += len(stack)
    names = ", ".join(f"{outer} {part.text()}".strip() for part, outer, _, _ in stack[-3:])
    log.warning("search %r: %d queries spent, %d parts not searched (%s ...)", query, report.queries,
                len(stack), names)


def _finer(part: Part, outer: str, first_items: list, refine) -> list[tuple[Part, str]]:
    """The parts to search instead of `part` ([] when it cannot be split)."""
    if part.splittable():
        return [(half, outer) for half in part.halves()]
    finer = refine(part, first_items[0] if first_items else {})
    if finer is None:
        return []
    if finer.qualifier == part.qualifier:
        return [(finer, outer)]
    return [(finer, f"{outer} {part.text()}".strip())]


def _refine_stars(part: Part, top_item: dict) -> Optional[Part]:
    if part.qualifier == "stars" and part.high is None:
        # sorted by stars, descending: the first item carries the highest count
        top = top_item.get("stargazers_count")
        return Part("stars", part.low, max(part.low, top if type(top) is int else part.low))
    if part.qualifier == "stars":
        return Part("created", FIRST_DAY, dt.date.today())
    return None


def search_repositories(client: GitHubClient, query: str, min_stars: int, report: Optional[SearchReport] = None,
                        **bounds) -> Iterator[dict]:
    """Every repository (GitHub's search item: full_name, stargazers_count, default_branch, license, size, ...)
    matching `query` with at least `min_stars` stars, each once. `bounds`: max_depth, max_queries."""
    report = report if report is not None else SearchReport()
    seen: set[str] = set()
    for item in partitioned_search(client, "/search/repositories", query, Part("stars", min_stars),
                                   _refine_stars, report, sort="stars", **bounds):
        if _new_name(item, seen, report):
            yield item


def search_code_repositories(client: GitHubClient, query: str, report: Optional[SearchReport] = None,
                             **bounds) -> Iterator[dict]:
    """Repositories (code search's short repository objects) holding a file that matches `query`, each once.
    `bounds`: max_depth, max_queries.

    Code search needs a token; the caller checks `client.has_token` first."""
    report = report if report is not None else SearchReport()
    seen: set[str] = set()
    for item in partitioned_search(client, "/search/code", query, Part("size", 0, MAX_CODE_FILE_SIZE),
                                   lambda part, item: None, report, **bounds):
        repo = item.get("repository")
        if isinstance(repo, dict) and _new_name(repo, seen, report):
            yield repo


def _new_name(repo: dict, seen: set[str], report: SearchReport) -> bool:
    """True the first time a repository with a valid `full_name` comes; invalid names are counted."""
    name = repo.get("full_name")
    if not is_full_name(name):
        report.invalid_items += 1  # not logged: its text is the server's
        return False
    if name.lower() in seen:
        return False
    seen.add(name.lower())
    return True
