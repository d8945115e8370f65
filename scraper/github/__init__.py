"""GitHub stage: find repositories with Triton kernels (or using PyTorch), download them pinned to a commit, keep a
manifest.

Modules: client (HTTP session, retries, rate limits), search (partitioned search), discovery (what each
discovery searches for and the archive test that confirms it), download (one repository),
manifest (the download folder's manifest.jsonl), local (--local ingest), gitindex (a clone's branch and files read
from `.git`, never by running git), pipeline (the whole stage).
"""

from scraper.github.client import DEFAULT_API_URL, GitHubClient, GitHubError, RateLimitTooLong
from scraper.github.manifest import archive_name, full_name_of_archive, read_manifest
from scraper.github.pipeline import Options, run

__all__ = [
    "DEFAULT_API_URL", "GitHubClient", "GitHubError", "RateLimitTooLong", "Options", "archive_name",
    "full_name_of_archive", "read_manifest", "run",
]
