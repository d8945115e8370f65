"""The GitHub stage end to end: pick repositories (search, --repos, or --local), download them in parallel,
keep the manifest, count everything, print the summary.

Whatever the stage records (stats.json, errors.csv, rejects.jsonl, log lines) passes through the client's `scrub`
(the token masked, control characters escaped), and every manifest line through its `mask`, so a token a server
echoes back is never written and a server's text cannot drive the terminal. `repos_failed` counts the
repositories that ended in an error (network, server, a damaged, refused, stalled or late archive, an answer
whose default branch is no branch name, a stop); a run in which every repository to fetch failed returns 1.

One run is one discovery (`Options.discovery`: scraper.github.discovery): its searches, its test on the archive,
its file of rejected repositories. A repository another discovery already downloaded is not fetched again: its
archive on disk is tested, and when it passes, a manifest line naming both discoveries is appended.
"""

from __future__ import annotations

import logging
import sys
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional


from scraper.cli import EXIT_NOTHING, EXIT_OK, INTERRUPTED, exit_status
from scraper.progress import progress
from scraper.github.client import GitHubClient, GitHubError, RateLimitTooLong
from scraper.github.discovery import DEFAULT_DISCOVERY, DISCOVERIES, Discovery, still_confirmed
from scraper.github.download import (
    DOWNLOAD_DEADLINE, Archive, RepoInfo, Skip, download_archive, fetch_commit, fetch_info, manifest_entry,
    scan_archive,
)
from scraper.github.local import LocalError, ingest
from scraper.github.manifest import (
    append_entry, discoveries_of, is_finished, read_latest, read_manifest, remove_partials, utc_now,
)
from scraper.github.search import SearchReport, search_code_repositories, search_repositories
from scraper.records import atomic_write_text
from scraper.repos import is_full_name
from scraper.stats import Rejects, Stats

log = logging.getLogger(__name__)

NO_TOKEN_WARNING = (
    "GITHUB_TOKEN is not set (environment or .env): unauthenticated clients get 60 API calls per hour and "
    "10 searches per minute, and code search is not available"
)
# Skips that are failures, not choices
FAILED_REASONS = frozenset({"bad_archive", "unsafe_archive", "stopped", "download_stalled", "download_timeout",
                            "invalid_metadata"})


@dataclass
class Options:
    """Everything the stage needs besides the client (the CLI fills it from argparse)."""

    download_dir: Path
    discovery: str = DEFAULT_DISCOVERY  # triton | pytorch (scraper.github.discovery)
    query: Optional[str] = None  # None: the discovery's
    code_query: Optional[str] = None  # None: the discovery's (pytorch has none)
    min_stars: int = 100
    search: Optional[str] = None  # repo | code | both; None: both, or repo when there is no code query
    repos_file: Optional[Path] = None
    local: list = field(default_factory=list)
    max_size_mb: Optional[float] = 500.0
    max_repos: Optional[int] = None
    jobs: int = 4
    download_deadline: float = DOWNLOAD_DEADLINE  # seconds for one archive, all attempts (CLI: 30 x --timeout)
    refresh: bool = False
    confirm: bool = True
    discover_only: bool = False
    keep_going: bool = False  # --local: an input that cannot be ingested does not fail a run that ingested others

    @property
    def max_bytes(self) -> Optional[int]:
        return int(self.max_size_mb * 2**20) if self.max_size_mb else None

    @property
    def profile(self) -> Discovery:
        return DISCOVERIES[self.discovery]

    @property
    def repo_query(self) -> str:
        return self.query or self.profile.query

    @property
    def code_search_query(self) -> Optional[str]:
        return self.code_query or self.profile.code_query

    @property
    def searches(self) -> str:
        return self.search or ("both" if self.code_search_query else "repo")


@dataclass
class Candidate:
    """A repository to fetch: its name, the metadata a search item already gave, whether --min-stars applies."""

    full_name: str
    info: Optional[RepoInfo] = None
    check_stars: bool = False


class Stage:
    """One run: shared state of the workers (manifest snapshot, stats, stop flag)."""

    def __init__(self, options: Options, client: GitHubClient) -> None:
        self.options = options
        self.client = client
        self.dir = Path(options.download_dir)
        self.stats = Stats("github")
        self.rejects = Rejects(self.dir / "rejects.jsonl", self.stats)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.manifest: dict[str, dict] = {}
        self.rejected: dict[str, dict] = {}  # this discovery's rejected repositories (no_triton.jsonl, ...)
        self.search_failed = False

    # ---------------------------------------------------------------------------------------- whole run

    def run(self) -> int:
        """Run the stage; returns the process exit code (0 ok, 1 stopped early or discovery failed)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rejects.reset()
        if remove_partials(self.dir):
            self.stats.inc("partial_downloads_removed")
        try:
            status = self.run_local() if self.options.local else self.run_remote()
        except KeyboardInterrupt:
            log.error("%s (finished archives and manifest lines)", INTERRUPTED)
            status = 130
        self.finish()
        return status

    def run_local(self) -> int:
        """--local: ingest each path; no network. Exit status 3 when a path is missing or cannot be ingested (a
        damaged or refused zip, a file that is no zip), 1 when nothing was ingested (scraper.cli.exit_status)."""
        failed = 0
        for arg in progress(self.options.local, desc="local", unit="repo"):
            try:
                status, entry = ingest(arg, self.dir, self.options.max_bytes, mask=self.client.mask)
            except (LocalError, OSError, zipfile.BadZipFile) as exc:  # BadZipFile: refused by zipsafe's counting pass
                log.error("skipped: %s", self.client.scrub(exc))
                self.stats.error("local", self.client.scrub(arg), self.client.scrub(exc))
                failed += 1
                continue
            self.stats.inc(f"local_{status}")
            if self.options.profile.confirms(entry):
                self.stats.inc("confirmed")
        ingested = self.stats.counts["local_ingested"] + self.stats.counts["local_unchanged"]
        return exit_status(bool(ingested), failed, self.options.keep_going)

    def run_remote(self) -> int:
        if not self.client.has_token:
            log.warning(NO_TOKEN_WARNING)
        self.search_failed = False
        candidates = self.read_repos_file() if self.options.repos_file else self.discover()
        if self.options.max_repos is not None:
            candidates = candidates[: self.options.max_repos]
        atomic_write_text(self.dir / "candidates.txt", "".join(f"{c.full_name}\n" for c in candidates))
        self.stats.inc("candidates", len(candidates))
        if not candidates:  # a failed search (no network) or one that found nothing: nothing to download
            log.error("no repository to download (%s)", "the search failed" if self.search_failed else "none found")
            return EXIT_NOTHING
        if self.options.discover_only:
            return EXIT_NOTHING if self.search_failed else EXIT_OK
        self.download_all(candidates)
        all_failed = self.stats.counts["repos_failed"] == len(candidates)
        return EXIT_NOTHING if self.stop.is_set() or self.search_failed or all_failed else EXIT_OK

    def finish(self) -> None:
        """Copy the client's counters into the stats, save stats.json / errors.csv, print the summary."""
        counts = self.client.counts
        if not self.options.local:  # an offline run has no network counters to report
            self.stats.counts["api_calls"] = counts.api_calls
            self.stats.counts["http_retries"] = counts.retries
            self.stats.counts["rate_limit_waits"] = counts.rate_limit_waits
            self.stats.counts["rate_limit_wait_seconds"] = round(counts.rate_limit_wait_seconds, 1)
            if counts.pagination_stopped:
                self.stats.counts["pagination_stopped"] = counts.pagination_stopped
        self.stats.save(self.dir / "stats.json")
        self.stats.save_errors_csv(self.dir / "errors.csv")
        print(self.stats.summary(), file=sys.stderr)

    # ---------------------------------------------------------------------------------------- discovery

    def read_repos_file(self) -> list[Candidate]:
        """`--repos FILE`: one `owner/name` (or github.com URL) per line; `#` comments and blank lines skipped."""
        names: dict[str, Candidate] = {}
        text = Path(self.options.repos_file).read_text(encoding="utf-8", errors="replace")  # bad bytes: a bad line
        for number, line in enumerate(text.splitlines(), start=1):
            name = line.split("#", 1)[0].strip().removesuffix("/").removesuffix(".git")
            name = name.split("github.com/", 1)[-1]
            if not name:
                continue
            if not is_full_name(name):
                self.stats.error("input", f"{self.options.repos_file}:{number}", f"not an owner/name: {line!r}")
                continue
            names.setdefault(name.lower(), Candidate(name))
        return list(names.values())

    def discover(self) -> list[Candidate]:
        """Repository search and/or code search, merged (repository search first: its items carry metadata).
        A search that fails part-way keeps what it found; the error is counted and the exit status is 1."""
        found: dict[str, Candidate] = {}
        log.info("discovery: %s", self.options.discovery)
        if self.options.searches in ("repo", "both"):
            self.guarded_search("repo_search", self.repo_search, found)
        if self.options.searches in ("code", "both"):
            if not self.options.code_search_query:  # the CLI refuses this; a caller of run() may not
                log.warning("code search skipped: the %s discovery has no code query", self.options.discovery)
                self.stats.inc("code_search_skipped_no_query")
            elif self.client.has_token:
                self.guarded_search("code_search", self.code_search, found)
            else:
                log.warning("code search skipped: it needs a token (set GITHUB_TOKEN)")
                self.stats.inc("code_search_skipped_no_token")
        return list(found.values())

    def guarded_search(self, prefix: str, search, found: dict[str, Candidate]) -> None:
        report = SearchReport()
        try:
            search(found, report)
        except GitHubError as exc:
            self.search_failed = True
            self.stats.error("search", prefix, self.describe(exc))
            log.error("%s failed, going on with the %d repositories found so far: %s", prefix, len(found),
                      self.describe(exc))
        self.note_search(report, prefix)

    def repo_search(self, found: dict[str, Candidate], report: SearchReport) -> None:
        items = search_repositories(self.client, self.options.repo_query, self.options.min_stars, report)
        for item in progress(items, desc="repo search", unit="repo"):
            found.setdefault(item["full_name"].lower(), Candidate(item["full_name"], RepoInfo.from_api(item)))
            self.stats.inc("found_repo_search")

    def code_search(self, found: dict[str, Candidate], report: SearchReport) -> None:
        items = search_code_repositories(self.client, self.options.code_search_query, report)
        for repo in progress(items, desc="code search", unit="repo"):
            self.stats.inc("found_code_search")
            if repo["full_name"].lower() not in found:
                self.stats.inc("found_code_search_only")
                found[repo["full_name"].lower()] = Candidate(repo["full_name"], check_stars=True)

    def note_search(self, report: SearchReport, prefix: str) -> None:
        self.stats.inc(f"{prefix}_queries", report.queries)
        self.stats.inc(f"{prefix}_parts", report.parts)
        for key, value in (("truncated_parts", report.truncated_parts), ("skipped_parts", report.skipped_parts),
                           ("inconsistent_parts", report.inconsistent_parts),
                           ("incomplete_pages", report.incomplete_results), ("invalid_items", report.invalid_items)):
            if value:
                self.stats.inc(f"{prefix}_{key}", value)

    def describe(self, exc: BaseException) -> str:
        """`Type: message` of an exception, scrubbed (its text may hold what a server sent)."""
        return self.client.scrub(f"{type(exc).__name__}: {exc}")

    # ---------------------------------------------------------------------------------------- downloads

    def download_all(self, candidates: Iterable[Candidate]) -> None:
        """Fetch every candidate with `jobs` threads and one progress bar."""
        candidates = list(candidates)
        self.manifest = read_manifest(self.dir)
        self.rejected = read_latest(self.dir / self.options.profile.rejected_file)
        with progress(total=len(candidates), desc="download", unit="repo") as bar, \
                ThreadPoolExecutor(max_workers=max(1, self.options.jobs)) as pool:
            futures = [pool.submit(self.fetch_one, candidate) for candidate in candidates]
            try:
                for future in as_completed(futures):
                    future.result()
                    bar.update(1)
            except KeyboardInterrupt:
                self.stop.set()
                pool.shutdown(cancel_futures=True)
                raise

    def fetch_one(self, candidate: Candidate) -> None:
        """Fetch one repository; every outcome is counted, none raises."""
        name = candidate.full_name
        if self.stop.is_set():
            self.reject(name, Skip("stopped", "run stopped by a rate-limit wait over --max-wait"))
            return
        try:
            self.stats_inc(self.fetch(candidate))
        except Skip as skip:
            self.reject(name, skip)
        except RateLimitTooLong as exc:
            self.stop.set()
            self.fail(name, exc)
            log.error("%s: %s; stopping (rerun later to resume)", name, self.describe(exc))
        except GitHubError as exc:
            self.fail(name, exc)
            log.warning("%s: %s", name, self.describe(exc))
        except Exception as exc:  # one bad repository must not end the run; the error is grouped in the summary
            self.fail(name, exc)
            log.warning("%s: unexpected %s", name, self.describe(exc))
            log.debug("traceback for %s", name, exc_info=True)

    def reject(self, name: str, skip: Skip) -> None:
        """Record a repository left out, with its reason; some reasons are failures."""
        with self.lock:
            self.rejects.add(skip.reason, full_name=name, message=self.client.scrub(skip))
            if skip.reason in FAILED_REASONS:
                self.stats.inc("repos_failed")

    def fail(self, name: str, exc: BaseException) -> None:
        """Record a repository whose fetch ended in an error."""
        with self.lock:
            self.stats.error("download", name, self.describe(exc))
            self.stats.inc("repos_failed")

    def stats_inc(self, *keys: str) -> None:
        with self.lock:
            for key in keys:
                self.stats.inc(key)

    def fetch(self, candidate: Candidate) -> str:
        """Download one repository unless it is done; returns the counter to increment, raises Skip."""
        key = candidate.full_name.lower()
        done = is_finished(self.dir, self.manifest.get(key))
        if done and not self.options.refresh:
            return self.found_again(self.manifest[key], "skipped_already_downloaded")
        reason = self.options.profile.reject_reason
        known_empty = key in self.rejected and self.options.confirm
        if known_empty and not self.options.refresh:
            return f"skipped_known_{reason}"
        info = candidate.info
        if info is None or not info.complete:
            info = fetch_info(self.client, candidate.full_name)
            if info.full_name.lower() != key:  # renamed or transferred: GitHub redirected to the new name
                key = info.full_name.lower()
                done = is_finished(self.dir, self.manifest.get(key))
                if done and not self.options.refresh:
                    return self.found_again(self.manifest[key], "skipped_already_downloaded")
        self.note_dropped(info)
        self.check_limits(candidate, info)
        sha = fetch_commit(self.client, info.full_name, info.default_branch)
        if done and self.manifest[key].get("commit_sha") == sha:
            return self.found_again(self.manifest[key], "unchanged")
        if known_empty and self.rejected.get(key, {}).get("commit_sha") == sha:
            return f"unchanged_{reason}"
        archive = download_archive(self.client, info.full_name, sha, self.dir, self.options.max_bytes,
                                   self.options.download_deadline)
        return self.keep(info, sha, archive, self.manifest.get(key))

    def keep(self, info: RepoInfo, sha: str, archive: Archive, previous: Optional[dict]) -> str:
        """Append the manifest line of a downloaded archive, naming the discoveries whose test it passes: this
        run's, and those of the repository's previous line that still hold. An archive that no discovery keeps is
        deleted; one this run's test rejects is recorded as rejected (Skip), even when another discovery keeps it."""
        profile = self.options.profile
        wanted = profile.confirms(archive.counts) or not self.options.confirm
        found = still_confirmed(discoveries_of(previous), archive.counts) if previous else []
        if wanted and profile.name not in found:
            found.append(profile.name)
        if found:
            append_entry(self.dir, manifest_entry(info, sha, archive.path, archive.sha256, archive.size,
                                                  archive.counts, found), mask=self.client.mask)
        else:
            archive.path.unlink(missing_ok=True)
        if not wanted:
            self.record_rejected(info.full_name, sha)
        if profile.confirms(archive.counts):
            self.stats_inc("confirmed")
        return "downloaded"

    def found_again(self, entry: dict, counter: str) -> str:
        """A repository already downloaded: nothing is fetched; returns `counter` when this run's discovery is on
        its line. Else its archive is tested on disk: when it passes, a copy of the line naming this discovery
        too is appended (`added_discovery`); when not, it is recorded as rejected (Skip) and the archive stays."""
        profile, found = self.options.profile, discoveries_of(entry)
        if profile.name in found:
            return counter
        key = entry["full_name"].lower()
        if self.options.confirm and key in self.rejected \
                and self.rejected[key].get("commit_sha") == entry.get("commit_sha"):
            return f"skipped_known_{profile.reject_reason}"
        counts = self.counts_of(entry)
        if self.options.confirm and not profile.confirms(counts):
            self.record_rejected(entry["full_name"], entry.get("commit_sha"))
        line = {**entry, **counts, "discovery": [*found, profile.name]}
        append_entry(self.dir, line, mask=self.client.mask)
        with self.lock:  # an old and a new name of a renamed repository may both come
            self.manifest[key] = line
        return "added_discovery"

    def counts_of(self, entry: dict) -> dict:
        """The file counts of a downloaded repository's line; its archive scanned again (on disk, no request)
        when the line was written before one of them was counted."""
        keys = [discovery.count_key for discovery in DISCOVERIES.values()]
        if all(type(entry.get(key)) is int for key in keys):
            return {key: entry[key] for key in keys}
        return scan_archive(self.dir / entry["archive"]).counts

    def record_rejected(self, full_name: str, sha: Optional[str]) -> None:
        """Add a repository whose archive fails this run's test to the discovery's rejected file (reruns skip it
        without a request) and raise Skip."""
        profile = self.options.profile
        append_entry(self.dir, {"full_name": full_name, "commit_sha": sha, "fetched_at": utc_now()},
                     profile.rejected_file, mask=self.client.mask)
        raise Skip(profile.reject_reason, f"{profile.missing}" + (f" at {sha[:7]}" if sha else ""))

    def check_limits(self, candidate: Candidate, info: RepoInfo) -> None:
        """Skip repositories below --min-stars (when found by code search) or over --max-size-mb (GitHub's size,
        which includes history, so this is conservative; the archive is capped again while downloading)."""
        if candidate.check_stars and (info.stars or 0) < self.options.min_stars:
            raise Skip("below_min_stars", f"{info.stars} stars < --min-stars {self.options.min_stars}")
        if self.options.max_bytes and info.size_kb and info.size_kb * 1024 > self.options.max_bytes:
            raise Skip("too_large", f"repository is {info.size_kb / 1024:.0f} MiB on GitHub, over --max-size-mb")
        if not info.default_branch and "default_branch" in info.dropped:
            raise Skip("invalid_metadata", "the default branch the server named is not a branch name git accepts")
        if not info.default_branch:
            raise Skip("empty", "repository has no default branch")

    def note_dropped(self, info: RepoInfo) -> None:
        """Count (and name at debug level) the fields of a repository's answer that were refused as unknown."""
        if info.dropped:
            log.debug("%s: fields not of GitHub's shape, kept as unknown: %s", info.full_name, ", ".join(info.dropped))
            self.stats_inc(*(f"invalid_field_{name}" for name in info.dropped))


def run(options: Options, client: GitHubClient) -> int:
    """Run the GitHub stage; returns the exit code."""
    return Stage(options, client).run()
