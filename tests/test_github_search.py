"""Partitioned search against the fake server: every result of queries with more than 1000 hits."""

from __future__ import annotations

import datetime as dt

import pytest

from fake_github import CodeHit, FakeClock, FakeGitHub, FakeRepo
from scraper.github.client import GitHubClient
from scraper.github.search import SearchReport, search_code_repositories, search_repositories

TOKEN = "ghp_searchtoken"


def synthetic_repos() -> list[FakeRepo]:
    """2300 matching repositories over many star counts, 1100 more that all have exactly 150 stars (one star
    range cannot be split: the search must fall back to creation dates), and some that must not be found."""
    day0 = dt.date(2012, 1, 1)
    repos = [FakeRepo(f"spread{i}/triton-k{i}", stars=100 + (i * 37) % 4000, description="triton kernels",
                      created=str(day0 + dt.timedelta(days=i % 4000))) for i in range(2300)]
    repos += [FakeRepo(f"tie{i}/tri-{i}", stars=150, description="Triton ops",
                       created=str(day0 + dt.timedelta(days=2 * i))) for i in range(1100)]
    repos += [FakeRepo(f"few{i}/triton-{i}", stars=i, description="triton") for i in range(100)]  # < 100 stars
    repos += [FakeRepo(f"other{i}/cuda-{i}", stars=500, description="cuda") for i in range(200)]  # no "triton"
    repos += [FakeRepo(f"cpp{i}/triton-{i}", stars=900, description="triton", language="C++") for i in range(50)]
    return repos


def test_repository_search_gets_past_1000(tmp_path):
    repos = synthetic_repos()
    # the oracle: straight from the data, without the search code
    expected = {r.full_name for r in repos
                if "triton" in (r.full_name + r.description).lower() and r.stars >= 100 and r.language == "Python"}
    assert len(expected) == 3400
    with FakeGitHub(repos) as fake:
        client = GitHubClient(fake.url, TOKEN, clock=FakeClock())
        report = SearchReport()
        found = [item["full_name"] for item in search_repositories(client, "triton language:python", 100, report)]
        seen = list(fake.requests)
    assert len(found) == len(set(found)) == 3400
    assert set(found) == expected
    assert report.truncated_parts == 0
    queries = [r.query["q"] for r in seen]
    assert queries[0] == "triton language:python stars:>=100"
    assert any("stars:150..150" in q and "created:" in q for q in queries)  # the tie group went by dates
    assert all(r.query["per_page"] == "100" for r in seen)
    assert all(int(r.query.get("page", 1)) <= 10 for r in seen)  # never asked past result 1000
    assert report.queries == len(seen) < 150


def test_code_search_partitions_by_size_and_needs_token():
    hits = [CodeHit(f"user{i % 400}/repo{i % 400}", f"k{i}.py", (i * 7919) % 390_000) for i in range(1500)]
    hits += [CodeHit("notpy/repo", "kernel.cu", 1000)]  # language:python excludes it
    expected = {f"user{i}/repo{i}" for i in range(400)}
    with FakeGitHub(code_hits=hits) as fake:
        report = SearchReport()
        client = GitHubClient(fake.url, TOKEN, clock=FakeClock())
        found = [repo["full_name"] for repo in search_code_repositories(client, "triton.jit language:python", report)]
        seen = list(fake.requests)
        anonymous = GitHubClient(fake.url, None, clock=FakeClock())
        with pytest.raises(Exception, match="401"):
            list(search_code_repositories(anonymous, "triton.jit language:python"))
    assert set(found) == expected and len(found) == len(expected)
    assert report.truncated_parts == 0
    assert seen[0].query["q"] == "triton.jit language:python size:0..400000"
    assert all(q.query["q"].count("size:") == 1 for q in seen)


def test_unsplittable_part_is_reported_not_looped():
    """1200 repositories with the same stars created the same day: only 1000 reachable, said so, no endless split."""
    repos = [FakeRepo(f"same{i}/triton-{i}", stars=200, created="2020-05-05") for i in range(1200)]
    with FakeGitHub(repos) as fake:
        report = SearchReport()
        client = GitHubClient(fake.url, TOKEN, clock=FakeClock())
        found = list(search_repositories(client, "triton", 100, report))
        requests = len(fake.requests)
    assert len(found) == 1000
    assert report.truncated_parts == 1
    assert requests < 80  # ~13 date halvings (two queries each) + 10 pages, then it stops
