"""GitHubClient against a real HTTP server on 127.0.0.1: auth, retries, rate limits (primary and secondary)."""

from __future__ import annotations

import time

import pytest

from fake_github import FakeClock, FakeGitHub, kernel_repo
from scraper.github.client import GitHubClient, GitHubError, RateLimitTooLong

TOKEN = "ghp_testtoken0123456789"


@pytest.fixture
def fake():
    with FakeGitHub([kernel_repo("octo/kern")]) as server:
        yield server


def client_for(fake, clock=None, **kwargs) -> GitHubClient:
    return GitHubClient(fake.url, TOKEN, clock=clock or FakeClock(), backoff=0, **kwargs)


def test_headers_sent(fake):
    client = client_for(fake)
    data = client.get_json("/repos/octo/kern")
    assert data["full_name"] == "octo/kern"
    [seen] = fake.requests
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
    assert seen.headers["User-Agent"].startswith("triton-data")
    assert seen.headers["Accept"] == "application/vnd.github+json"
    assert TOKEN not in repr(client)


def test_no_token_sends_no_authorization(fake):
    client = GitHubClient(fake.url, None, clock=FakeClock())
    client.get_json("/repos/octo/kern")
    assert "Authorization" not in fake.requests[0].headers
    assert not client.has_token


def test_403_retry_after_waits_that_long(fake):
    fake.fault("/repos/octo/kern$", "retry_after", value=30)
    clock = FakeClock()
    client = client_for(fake, clock)
    assert client.get_json("/repos/octo/kern")["full_name"] == "octo/kern"
    assert clock.sleeps == [30.0]
    assert fake.paths() == ["/repos/octo/kern"] * 2
    counts = client.counts
    assert (counts.api_calls, counts.rate_limit_waits, counts.rate_limit_wait_seconds) == (2, 1, 30)


def test_429_retry_after(fake):
    fake.fault("/repos/octo/kern$", "too_many", times=2, value=7)
    clock = FakeClock()
    client_for(fake, clock).get_json("/repos/octo/kern")
    assert clock.sleeps == [7.0, 7.0]
    assert len(fake.requests) == 3


def test_secondary_limit_without_headers_waits_a_minute_then_longer(fake):
    fake.fault("/repos/octo/kern$", "secondary", times=2)
    clock = FakeClock()
    client_for(fake, clock).get_json("/repos/octo/kern")
    assert clock.sleeps == [60.0, 120.0]  # GitHub: at least a minute, more when it persists
    assert len(fake.requests) == 3


def test_primary_limit_403_really_waits_for_reset(fake):
    """403 with X-RateLimit-Remaining: 0 and a reset one second ahead: the client sleeps (real clock) until then."""
    fake.fault("/repos/octo/kern$", "reset", value=1)
    client = GitHubClient(fake.url, TOKEN, reset_margin=0)
    start = time.monotonic()
    assert client.get_json("/repos/octo/kern")["full_name"] == "octo/kern"
    elapsed = time.monotonic() - start
    assert 1.0 <= elapsed < 6.0
    assert len(fake.requests) == 2
    assert client.counts.rate_limit_waits == 1


def test_spent_quota_delays_next_call_of_that_resource_only(fake):
    """A 200 saying Remaining: 0 makes the next core call wait for the reset instead of provoking a 403."""
    fake.fault("/repos/octo/kern$", "quota_spent", value=1)
    clock = FakeClock()
    client = client_for(fake, clock, reset_margin=0)
    client.get_json("/repos/octo/kern")
    assert clock.sleeps == []
    client.get_json("/search/repositories", {"q": "kern"})  # other bucket: no wait
    assert clock.sleeps == []
    client.get_json("/repos/octo/kern/commits/main")
    assert len(clock.sleeps) == 1 and 0.0 < clock.sleeps[0] <= 2.0
    assert len(fake.requests) == 3  # no request was spent on a 403


def test_wait_over_max_wait_raises_without_sleeping(fake):
    fake.fault("/repos/octo/kern$", "retry_after", value=5000)
    clock = FakeClock()
    with pytest.raises(RateLimitTooLong, match="max-wait"):
        client_for(fake, clock, max_wait=100).get_json("/repos/octo/kern")
    assert clock.sleeps == [] and len(fake.requests) == 1


def test_502_retried_by_urllib3_and_counted(fake):
    fake.fault("/repos/octo/kern$", "bad_gateway", times=2)
    client = client_for(fake)
    assert client.get_json("/repos/octo/kern")["full_name"] == "octo/kern"
    assert len(fake.requests) == 3
    assert (client.counts.api_calls, client.counts.retries) == (1, 2)


def test_502_until_retries_run_out_is_an_error(fake):
    fake.fault("/repos/octo/kern$", "bad_gateway", times=10)
    with pytest.raises(GitHubError) as info:
        client_for(fake, retries=2).get_json("/repos/octo/kern")
    assert info.value.status == 502
    assert len(fake.requests) == 3


def test_plain_403_is_not_retried(fake):
    fake.fault("/repos/octo/kern$", "forbidden")
    with pytest.raises(GitHubError, match="Repository access blocked") as info:
        client_for(fake).get_json("/repos/octo/kern")
    assert info.value.status == 403 and len(fake.requests) == 1


def test_link_pagination_and_token_kept_off_foreign_urls(fake):
    for i in range(250):
        fake.add(kernel_repo(f"org{i}/triton-{i}"))
    client = client_for(fake)
    pages = list(client.paginate("/search/repositories", {"q": "triton", "per_page": 100}))
    names = [item["full_name"] for page in pages for item in page["items"]]
    expected = {"octo/kern"} | {f"org{i}/triton-{i}" for i in range(250)}  # every README says "Triton"
    assert len(pages) == 3 and len(names) == 251 and set(names) == expected
    assert [r.query.get("page") for r in fake.requests] == [None, "2", "3"]
    with pytest.raises(GitHubError, match="outside the API"):
        client.get("https://evil.example.com/steal")


def test_connection_refused_is_a_network_error():
    with FakeGitHub() as server:
        url = server.url
    client = GitHubClient(url, TOKEN, retries=1, backoff=0, clock=FakeClock())
    with pytest.raises(GitHubError, match="network error") as info:
        client.get_json("/repos/a/b")
    assert info.value.status is None and TOKEN not in str(info.value)


def test_retries_are_counted_when_they_all_fail(fake):
    """urllib3 retried, then gave up: each retry made is counted (the summary said 0)."""
    with FakeGitHub() as server:
        closed = server.url  # nothing listens there any more: every connection is refused
    refused = GitHubClient(closed, TOKEN, retries=3, backoff=0, clock=FakeClock())
    with pytest.raises(GitHubError, match="network error"):
        refused.get_json("/repos/a/b")
    fake.fault("/repos/octo/kern$", "bad_gateway", times=10)
    failing = client_for(fake, retries=2)
    with pytest.raises(GitHubError):
        failing.get_json("/repos/octo/kern")
    assert (refused.counts.retries, failing.counts.retries) == (3, 2)
    assert len(fake.requests) == 3
