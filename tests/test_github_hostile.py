"""The GitHub stage against a hostile server on 127.0.0.1 (tests/fake_github.py's hostile faults) and hostile
zipballs: nothing may hang, exhaust memory, leak the token, or write outside the download folder."""

from __future__ import annotations

import dataclasses
import json
import time
import zipfile
from pathlib import Path

import pytest

from fake_github import KERNEL, FakeClock, FakeGitHub, FakeRepo, kernel_repo
from hostile_zip import member, peak_growth_mib, write_zip, zeros
from scraper.github.client import GitHubClient, GitHubError
from scraper.github.pipeline import Options, run
from scraper.github.search import SearchReport, search_repositories

import scrape_github

TOKEN = "ghp_hostile0123456789abcdef"
MiB = 1 << 20


def client_for(fake: FakeGitHub, **kwargs) -> GitHubClient:
    return GitHubClient(fake.url, TOKEN, clock=FakeClock(), backoff=0, **kwargs)


def listing(tmp_path: Path, *names: str) -> Path:
    path = tmp_path / "repos.txt"
    path.write_text("".join(f"{name}\n" for name in names))
    return path


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def zipball(tmp_path: Path, top: str, members: list) -> bytes:
    """A hostile archive's bytes, every member under the zipball's top folder."""
    members = [dataclasses.replace(m, name=f"{top}/{m.name}") for m in members]
    return write_zip(tmp_path / f"{top}.zip", members).read_bytes()


# ------------------------------------------------------------------------------------------------ pagination

@pytest.mark.timeout(30, method="thread")
def test_link_to_the_page_itself_is_not_followed_forever():
    with FakeGitHub([kernel_repo("a/triton-x")]) as fake:
        fake.fault("^/search/repositories$", "link_loop", times=10**6)
        client = client_for(fake)
        found = [item["full_name"] for item in search_repositories(client, "triton", 100, SearchReport())]
        sent = len(fake.requests)
    assert found == ["a/triton-x"]
    assert sent == 1 and client.counts.pagination_stopped == 1


@pytest.mark.timeout(60, method="thread")
def test_a_billion_results_everywhere_end_at_the_depth_bound_and_the_query_budget():
    repos = [kernel_repo(f"o{i}/triton-{i}", stars=100 + 7 * i) for i in range(30)]
    with FakeGitHub(repos) as fake:
        fake.fault("^/search/", "huge_total", times=10**9)
        client = client_for(fake)
        deep = SearchReport()
        found = {item["full_name"] for item in search_repositories(client, "triton", 100, deep, max_depth=4)}
        deep_requests = len(fake.requests)
        fake.requests.clear()
        spent = SearchReport()
        list(search_repositories(client, "triton", 100, spent, max_queries=25))
        spent_requests = len(fake.requests)
    assert found == {r.full_name for r in repos}  # every part still read its first page
    assert deep.truncated_parts > 0 and deep_requests <= 2 ** (4 + 1) - 1  # a binary tree 4 splits deep
    assert spent.skipped_parts > 0 and spent_requests == spent.queries == 25


# ------------------------------------------------------------------------------------------------ slow bodies

@pytest.mark.timeout(60, method="thread")
def test_archive_trickled_a_byte_at_a_time_hits_the_whole_download_deadline(tmp_path):
    """The deadline is the download's, every attempt together: a trickling archive is not fetched again."""
    with FakeGitHub([kernel_repo("o/slow")]) as fake:
        fake.fault("^/_codeload/", "trickle", times=3, value=0.2)  # each byte well within the read timeout
        status = run(Options(tmp_path / "dl", repos_file=listing(tmp_path, "o/slow"), jobs=1, download_deadline=1),
                     client_for(fake, timeout=5))
        attempts = len(fake.paths("^/_codeload/"))
    [reject] = lines(tmp_path / "dl" / "rejects.jsonl")
    assert reject["reason"] == "download_timeout" and "not complete after 1 s" in reject["message"]
    assert attempts == 1 and status == 1
    assert not list((tmp_path / "dl").glob("*.zip")) and not list((tmp_path / "dl").glob(".*.part"))


@pytest.mark.timeout(60, method="thread")
def test_headers_trickled_a_byte_at_a_time_hit_the_answer_deadline():
    with FakeGitHub([kernel_repo("o/slow")]) as fake:
        fake.fault("^/repos/o/slow$", "header_trickle", times=10**6, value=0.1)  # each byte within the read timeout
        client = client_for(fake, timeout=5, deadline=1, retries=1)
        started = time.monotonic()
        with pytest.raises(GitHubError, match="network error"):
            client.get_json("/repos/o/slow")
        seconds = time.monotonic() - started
        fake.release.set()
    assert len(fake.paths("^/repos/o/slow$")) == 2  # the first try and urllib3's one retry, each cut at 1 s
    assert seconds < 10


@pytest.mark.timeout(30, method="thread")
def test_endless_body_of_a_redirect_is_not_read(tmp_path):
    """requests reads a redirect's whole body before following it; this one never ends."""
    repo = kernel_repo("o/r")
    with FakeGitHub([repo]) as fake:
        fake.fault("^/repos/o/r/zipball/", "redirect_trickle", value=0.5)
        status = run(Options(tmp_path / "dl", repos_file=listing(tmp_path, "o/r"), jobs=1), client_for(fake))
    assert status == 0 and (tmp_path / "dl" / "o__r.zip").read_bytes() == repo.zip_bytes()


@pytest.mark.timeout(30, method="thread")
def test_huge_api_answer_is_cut_at_the_cap():
    with FakeGitHub([kernel_repo("o/r")]) as fake:
        fake.fault("^/repos/o/r$", "big_body", value=256)
        with pytest.raises(GitHubError, match="larger than"):
            client_for(fake, max_answer_bytes=MiB).get_json("/repos/o/r")
        assert fake.sent_bytes < 64 * MiB  # the client left; the rest was never sent


def test_content_encoding_is_refused_not_inflated():
    with FakeGitHub([kernel_repo("o/r")]) as fake:
        fake.fault("^/repos/o/r$", "gzip_bomb", value=64)
        with pytest.raises(GitHubError, match="Content-Encoding"):
            client_for(fake).get_json("/repos/o/r")
        assert fake.requests[0].headers["Accept-Encoding"] == "identity"


# ------------------------------------------------------------------------------------------------ the token

def test_token_echoed_by_the_server_is_never_printed_or_written(monkeypatch, tmp_path, capsys):
    out = tmp_path / "dl"
    with FakeGitHub([kernel_repo("o/r1"), kernel_repo("o/r2")]) as fake:
        fake.fault("^/repos/o/r1$", "echo_auth")  # 403 "Bad credentials: Bearer <token>"
        fake.fault("^/repos/o/r2/commits/", "echo_body")  # 200 whose body is "Bearer <token>"
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("GITHUB_API_URL", fake.url)
        monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
        status = scrape_github.main(["--repos", str(listing(tmp_path, "o/r1", "o/r2")), "-o", str(out),
                                     "-v"])
        assert [r.headers["Authorization"] for r in fake.requests][:1] == [f"Bearer {TOKEN}"]
    printed = capsys.readouterr()
    written = {p.name: p.read_text(errors="replace") for p in out.iterdir()}
    for text in [printed.out, printed.err, *written.values()]:
        assert TOKEN not in text
    assert "Bad credentials: Bearer ***" in written["errors.csv"] and "not a commit SHA" in written["errors.csv"]
    assert status == 1  # both failed


def test_link_outside_the_api_is_refused_without_showing_the_token():
    client = GitHubClient("http://127.0.0.1:9", TOKEN)
    with pytest.raises(GitHubError, match="outside the API") as refused:
        client.get(f"https://evil.example.com/next?access_token={TOKEN}")
    assert TOKEN not in str(refused.value)


# ------------------------------------------------------------------------------------------------ names

def test_invalid_full_names_from_search_never_become_requests_or_paths(monkeypatch, tmp_path):
    out = tmp_path / "dl"
    with FakeGitHub([kernel_repo("o/triton-a"), kernel_repo("p/triton-b")]) as fake:
        fake.fault("^/search/repositories$", "item_name", text="x/../../..")
        client = client_for(fake)
        status = run(Options(out, search="repo"), client)
        paths = fake.paths()
    assert paths == ["/search/repositories"]
    counts = json.loads((out / "stats.json").read_text())["counts"]
    # no candidate left: nothing downloaded, exit 1 (README's exit statuses)
    assert counts["repo_search_invalid_items"] == 2 and counts["candidates"] == 0 and status == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dl"]


def test_invalid_full_name_in_a_repository_answer_is_an_error(tmp_path):
    out = tmp_path / "dl"
    with FakeGitHub([kernel_repo("o/r"), kernel_repo("o/ok")]) as fake:
        fake.fault("^/repos/o/r$", "item_name", text="x/..")
        status = run(Options(out, repos_file=listing(tmp_path, "o/r", "o/ok"), jobs=1), client_for(fake))
        paths = fake.paths("/o/r")
    assert paths == ["/repos/o/r"]  # no commit, no zipball for a name that is not owner/name
    counts = json.loads((out / "stats.json").read_text())["counts"]
    assert counts["errors_download"] == 1 and counts["repos_failed"] == 1 and counts["downloaded"] == 1
    assert status == 0  # one of two failed: the run goes on and says so in its counts
    assert sorted(p.name for p in out.glob("*.zip")) == ["o__ok.zip"]


# ------------------------------------------------------------------------------------------------ archives

@pytest.mark.timeout(120, method="thread")
def test_zipball_bomb_is_checked_without_decompressing_it(tmp_path):
    """check_zip's CRC pass decompressed every member whole: 4 bzip2 members of 128 MiB from ~400 bytes."""
    bomb = zeros(zipfile.ZIP_BZIP2, 128 * MiB)
    members = [dataclasses.replace(bomb, name=f"pkg/gen{i}.py") for i in range(4)]
    repo = FakeRepo("o/bomb", {"x": "1"})
    repo.archive = zipball(tmp_path, repo.top, members + [member("pkg/k.py", KERNEL.encode())])
    out = tmp_path / "dl"
    with FakeGitHub([repo]) as fake:
        growth, printed = peak_growth_mib(
            "from pathlib import Path\nfrom scraper.github.client import GitHubClient\n"
            "from scraper.github.pipeline import Options, run",
            f"print(run(Options(Path({str(out)!r}), repos_file=Path({str(listing(tmp_path, 'o/bomb'))!r}), "
            f"jobs=1), GitHubClient({fake.url!r}, 'token')))")
    [entry] = lines(out / "manifest.jsonl")
    assert printed.strip() == "0" and entry["triton_files"] == 1
    assert growth < 48


def test_zipball_with_escaping_names_or_shared_entries_is_refused_at_once(tmp_path):
    escaping, shared = FakeRepo("o/escape", {"a": "1"}), FakeRepo("o/shared", {"b": "2"})
    kernel = member("pkg/k.py", KERNEL.encode())
    escaping.archive = zipball(tmp_path, escaping.top, [kernel, member("../../evil.py", b"import os\n")])
    shared.archive = zipball(tmp_path, shared.top, [kernel] + [dataclasses.replace(kernel, shares=0)] * 50)
    out = tmp_path / "dl"
    with FakeGitHub([escaping, shared]) as fake:
        status = run(Options(out, repos_file=listing(tmp_path, "o/escape", "o/shared"), jobs=1), client_for(fake))
        archive_requests = len(fake.paths("^/_codeload/"))
    assert sorted((r["reason"], r["full_name"]) for r in lines(out / "rejects.jsonl")) == [
        ("unsafe_archive", "o/escape"), ("unsafe_archive", "o/shared")]
    assert archive_requests == 2  # refused, not fetched again
    assert status == 1 and not list(out.glob("*.zip")) and not list(out.glob(".*.part"))
    assert lines(out / "manifest.jsonl") == []


# ------------------------------------------------------------------------------------------------ outcome

def test_a_run_where_every_download_fails_says_so(tmp_path):
    repos = [kernel_repo("o/r1"), kernel_repo("o/r2")]
    with FakeGitHub(repos) as fake:
        fake.fault("^/_codeload/", "corrupt", times=6)
        failed = run(Options(tmp_path / "a", repos_file=listing(tmp_path, "o/r1", "o/r2"), jobs=1),
                     client_for(fake))
        fake.fault("^/_codeload/o/r1/", "corrupt", times=3)
        partial = run(Options(tmp_path / "b", repos_file=listing(tmp_path, "o/r1", "o/r2"), jobs=1),
                      client_for(fake))
    counts = [json.loads((tmp_path / d / "stats.json").read_text())["counts"] for d in "ab"]
    assert (failed, counts[0]["repos_failed"], counts[0].get("downloaded", 0)) == (1, 2, 0)
    assert (partial, counts[1]["repos_failed"], counts[1]["downloaded"]) == (0, 1, 1)


def test_answers_of_the_wrong_shape_are_errors_not_crashes(tmp_path):
    """JSON that is not GitHub's shape ended the whole stage with an AttributeError or ValueError."""
    items = json.dumps({"total_count": 3, "items": [1, "x", {"full_name": 5}, {"full_name": "o/ok", "size": "big",
                                                                               "license": [1], "stargazers_count": 200}]})
    out = tmp_path / "dl"
    with FakeGitHub([kernel_repo("o/ok", stars=200), kernel_repo("o/r")]) as fake:
        fake.fault("^/search/repositories$", "json", text=items)
        fake.fault("^/search/code$", "json", text=json.dumps({"total_count": "many", "items": 5}))
        status = run(Options(out), client_for(fake))
        fake.fault("^/repos/o/r$", "json", text="[1, 2]")
        fake.fault("^/repos/o/ok/commits/", "json", text="[]")
        listed = run(Options(tmp_path / "d2", repos_file=listing(tmp_path, "o/r", "o/ok"), jobs=1), client_for(fake))
    counts = json.loads((out / "stats.json").read_text())["counts"]
    assert counts["repo_search_invalid_items"] == 3 and counts["errors_search"] == 1 and status == 1
    assert [e["full_name"] for e in lines(out / "manifest.jsonl")] == ["o/ok"]  # size "big" counted as unknown
    errors = (tmp_path / "d2" / "errors.csv").read_text()
    assert "without a valid owner/name" in errors and "not a commit SHA" in errors and listed == 1


# ------------------------------------------------------------------------------------------------ fields of answers

def files_text(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_token_in_fields_of_a_successful_answer_never_reaches_the_manifest(monkeypatch, tmp_path):
    """A 200 answer (a repository, a search item) that puts the Authorization header's token in `license.spdx_id`
    and `html_url`: those went to manifest.jsonl as they came, and from there to the dataset's license column."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    outs = {"repos": tmp_path / "by-name", "search": tmp_path / "by-search"}
    with FakeGitHub([kernel_repo("o/r1"), kernel_repo("o/triton-r2", stars=300)]) as fake:
        monkeypatch.setenv("GITHUB_API_URL", fake.url)
        fake.fault("^/repos/o/r1$", "echo_fields")
        assert scrape_github.main(["--repos", str(listing(tmp_path, "o/r1")), "-o", str(outs["repos"])]) == 0
        fake.fault("^/search/repositories$", "echo_fields")
        assert scrape_github.main(["--search", "repo", "--query", "triton", "-o", str(outs["search"])]) == 0
    for out, expected in ((outs["repos"], ["o/r1"]), (outs["search"], ["o/triton-r2", "o/r1"])):
        entries = lines(out / "manifest.jsonl")
        assert sorted(e["full_name"] for e in entries) == sorted(expected)
        for entry in entries:
            assert entry["license"] is None and entry["html_url"] is None, entry  # not GitHub's shape: unknown
            assert entry["commit_sha"] and entry["triton_files"] == 1  # the repository itself is fine
        for name, data in files_text(out).items():
            assert TOKEN.encode() not in data, name


def test_every_string_of_a_manifest_line_is_masked_where_it_is_written(tmp_path):
    """The last guard, behind the answers' own masking: the one writer of manifest lines masks every string."""
    from scraper.github.manifest import append_entry

    client = GitHubClient("http://127.0.0.1:9", TOKEN)
    append_entry(tmp_path, {"full_name": "o/r", "license": f"x{TOKEN}", "nested": {"list": [TOKEN, 3]}},
                 mask=client.mask)
    [entry] = lines(tmp_path / "manifest.jsonl")
    assert entry == {"full_name": "o/r", "license": "x***", "nested": {"list": ["***", 3]}}


def test_api_fields_are_validated_where_they_are_parsed(tmp_path):
    """Fields of the wrong shape are unknown (None), a default branch that is no ref name is refused before it
    becomes a request, GitHub's NOASSERTION license is unknown."""
    odd = {"full_name": "o/odd", "default_branch": "main", "stargazers_count": -5, "size": -1,
           "license": {"spdx_id": "NOASSERTION"}, "html_url": "https://evil.example/o/odd"}
    spaced = {"full_name": "o/spaced", "default_branch": "main", "stargazers_count": 3, "size": 1,
              "license": {"spdx_id": "MIT; rm -rf /"}, "html_url": "https://github.com/o/spaced"}
    branch = {"full_name": "o/branch", "default_branch": "../../x", "stargazers_count": 3, "size": 1}
    out = tmp_path / "dl"
    with FakeGitHub([kernel_repo("o/odd"), kernel_repo("o/spaced"), kernel_repo("o/branch")]) as fake:
        for data in (odd, spaced, branch):
            fake.fault(f"^/repos/{data['full_name']}$", "json", text=json.dumps(data))
        run(Options(out, repos_file=listing(tmp_path, "o/odd", "o/spaced", "o/branch"), jobs=1), client_for(fake))
        branch_requests = fake.paths("^/repos/o/branch/")
    entries = {e["full_name"]: e for e in lines(out / "manifest.jsonl")}
    assert set(entries) == {"o/odd", "o/spaced"}
    odd_entry = entries["o/odd"]
    assert (odd_entry["stars"], odd_entry["size_kb"], odd_entry["license"], odd_entry["html_url"]) == (
        None, None, None, None)
    assert entries["o/spaced"]["license"] is None and entries["o/spaced"]["html_url"] == "https://github.com/o/spaced"
    assert branch_requests == []  # no commit lookup for a branch name git would refuse
    [reject] = lines(out / "rejects.jsonl")
    assert (reject["full_name"], reject["reason"]) == ("o/branch", "invalid_metadata")


# ------------------------------------------------------------------------------------------------ deadlines

@pytest.mark.timeout(60, method="thread")
def test_trickled_archive_fails_on_its_stall_deadline_from_timeout_and_the_run_goes_on(monkeypatch, tmp_path):
    """One byte every 0.2 s is within any per-read timeout: with --timeout 1 the download went on for minutes.
    The body must make progress every --timeout seconds; a trickle fails, counted, and the next repository is
    fetched."""
    import threading

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    out, result = tmp_path / "dl", {}
    with FakeGitHub([kernel_repo("o/slow"), kernel_repo("o/ok")]) as fake:
        monkeypatch.setenv("GITHUB_API_URL", fake.url)
        fake.fault("^/_codeload/o/slow/", "trickle", times=10**6, value=0.2)
        argv = ["--repos", str(listing(tmp_path, "o/slow", "o/ok")), "-o", str(out), "--timeout", "1", "-j", "1"]
        worker = threading.Thread(target=lambda: result.update(status=scrape_github.main(argv)), daemon=True)
        started = time.monotonic()
        worker.start()
        worker.join(15)
        seconds = time.monotonic() - started
        fake.release.set()  # frees a trickling handler (and the scraper) if the deadline did not
        worker.join(30)
    assert seconds < 10, f"still downloading after {seconds:.0f} s"
    assert result["status"] == 0  # one of two failed
    [reject] = lines(out / "rejects.jsonl")
    assert (reject["full_name"], reject["reason"]) == ("o/slow", "download_stalled")
    counts = json.loads((out / "stats.json").read_text())["counts"]
    assert counts["dropped_download_stalled"] == 1 and counts["repos_failed"] == 1 and counts["downloaded"] == 1
    assert [e["full_name"] for e in lines(out / "manifest.jsonl")] == ["o/ok"]
    assert not list(out.glob(".*.part"))


# ------------------------------------------------------------------------------------------------ search bound

@pytest.mark.timeout(300, method="thread")
def test_a_billion_results_stop_splitting_early_and_keep_what_was_found(tmp_path, caplog):
    """Every query claiming 10**9 results: the search split its query 2000 times. The halves of a split cannot
    hold more than the whole; once they claim to, that part is not split again, and the search ends soon."""
    repos = [kernel_repo(f"o{i}/triton-{i}", stars=100 + 7 * i) for i in range(30)]
    out = tmp_path / "dl"
    with FakeGitHub(repos) as fake:
        fake.fault("^/search/", "huge_total", times=10**9)
        status = run(Options(out, search="repo", query="triton", discover_only=True), client_for(fake))
        sent = len(fake.requests)
    assert sent <= 100, f"{sent} search requests"
    assert set((out / "candidates.txt").read_text().split()) == {r.full_name for r in repos}
    counts = json.loads((out / "stats.json").read_text())["counts"]
    assert counts["repo_search_inconsistent_parts"] >= 1 and counts["repo_search_queries"] == sent
    assert "claim more results" in caplog.text
    assert status == 0


# ------------------------------------------------------------------------------------------------ control characters

ESCAPES = "\x1b]0;owned\x07\x1b[2J\x9b1m\r"


def test_control_characters_from_the_server_or_member_names_never_reach_the_terminal(monkeypatch, tmp_path, capsys):
    """A server's error message and a zipball member's name with escape sequences were printed raw in log lines
    (a terminal title set, the screen cleared); member names with control characters are refused like `..`."""
    odd = kernel_repo("o/names", files={f"pkg/{ESCAPES}kernel.py": KERNEL * 40})
    out = tmp_path / "dl"
    monkeypatch.chdir(tmp_path)
    with FakeGitHub([kernel_repo("o/msg"), odd]) as fake:
        monkeypatch.setenv("GITHUB_API_URL", fake.url)
        fake.fault("^/repos/o/msg$", "message", text=f"blocked {ESCAPES} here")
        fake.fault("^/_codeload/o/names/", "corrupt", times=3)  # a damaged member is named in the log
        scrape_github.main(["--repos", str(listing(tmp_path, "o/msg", "o/names")), "-o", str(out), "-v"])
    printed = capsys.readouterr()
    written = [data.decode() for name, data in files_text(out).items() if not name.endswith(".zip")]
    for text in (printed.out, printed.err, *written):
        assert not any(c in text for c in "\x1b\x07\x9b"), text
    assert "blocked \\x1b]0;owned\\x07" in printed.err  # escaped, still readable
    assert [(r["full_name"], r["reason"]) for r in lines(out / "rejects.jsonl")] == [("o/names", "unsafe_archive")]
    from scraper.zipsafe import printable, safe_member_path

    assert safe_member_path(f"a/{ESCAPES}b.py") is None and safe_member_path("a/\u202eb.py") is None
    assert printable("a\x1bb\u202ec\n") == "a\\x1bb\\u202ec\\x0a"
