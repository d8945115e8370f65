"""The whole GitHub stage against the fake server: pinned downloads, manifest, faults, caps, resume after kill."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from fake_github import KERNEL, FakeClock, FakeGitHub, FakeRepo, kernel_repo
from scraper.github.client import GitHubClient
from scraper.github.manifest import read_manifest
from scraper.github.pipeline import Options, run

import scrape_github

TOKEN = "ghp_downloadtoken42"
SCRIPT = Path(scrape_github.__file__)


def write_list(path: Path, *names: str) -> Path:
    path.write_text("".join(f"{n}\n" for n in names))
    return path


def manifest(download_dir: Path) -> list[dict]:
    path = download_dir / "manifest.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_main(monkeypatch, tmp_path, fake, *argv, token=TOKEN) -> int:
    monkeypatch.chdir(tmp_path)  # no .env of the checkout gets read
    monkeypatch.setenv("GITHUB_API_URL", fake.url)
    if token:
        monkeypatch.setenv("GITHUB_TOKEN", token)
    else:
        monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    return scrape_github.main([*argv, "--jobs", "2"])


def test_repos_file_pinned_downloads_and_rerun(monkeypatch, tmp_path):
    repos = [kernel_repo("a-b/c", default_branch="master", stars=321),  # a-b/c and a/b-c: names that could collide
             kernel_repo("a/b-c", license=None, stars=1500),
             FakeRepo("tritonserver/client", {"README.md": "Triton Inference Server", "x.py": "import tritonclient\n"})]
    out = tmp_path / "dl"
    listing = write_list(tmp_path / "repos.txt", "a-b/c", "# a comment", "https://github.com/a/b-c",
                         "tritonserver/client", "not a name", "")
    with FakeGitHub(repos) as fake:
        assert run_main(monkeypatch, tmp_path, fake, "--repos", str(listing), "-o", str(out)) == 0
        first = list(fake.requests)
        fake.requests.clear()
        assert run_main(monkeypatch, tmp_path, fake, "--repos", str(listing), "-o", str(out)) == 0
        second = list(fake.requests)

    entries = {e["full_name"]: e for e in manifest(out)}
    assert set(entries) == {"a-b/c", "a/b-c"}  # tritonserver/client has no Triton kernel
    for repo in repos[:2]:
        entry, data = entries[repo.full_name], repo.zip_bytes()
        assert entry["commit_sha"] == repo.sha and entry["default_branch"] == repo.default_branch
        assert entry["stars"] == repo.stars and entry["size_kb"] == repo.size_kb
        assert (out / entry["archive"]).read_bytes() == data
        assert entry["sha256"] == sha256(data) and entry["archive_bytes"] == len(data)
        assert entry["origin"] == "github" and entry["html_url"] == f"https://github.com/{repo.full_name}"
        assert entry["triton_files"] == 1 and entry["fetched_at"].endswith("Z")
    assert entries["a-b/c"]["archive"] == "a-b__c.zip" and entries["a/b-c"]["archive"] == "a__b-c.zip"
    assert entries["a-b/c"]["license"] == "MIT" and entries["a/b-c"]["license"] is None
    with zipfile.ZipFile(out / "a-b__c.zip") as archive:
        assert archive.namelist()[0] == f"a-b-c-{repos[0].sha[:7]}/"

    # 4 requests per repository: metadata, head commit of the default branch, zipball of that sha, the archive
    paths = collections.Counter(r.path for r in first)
    for repo in repos:
        assert paths[f"/repos/{repo.full_name}"] == 1
        assert paths[f"/repos/{repo.full_name}/commits/{repo.default_branch}"] == 1
        assert paths[f"/repos/{repo.full_name}/zipball/{repo.sha}"] == 1
        assert paths[f"/_codeload/{repo.full_name}/legacy.zip/{repo.sha}"] == 1
    assert len(first) == 12
    for seen in first:  # the token goes to the API only, never to the archive host
        expected = None if seen.path.startswith("/_codeload/") else f"Bearer {TOKEN}"
        assert seen.headers.get("Authorization") == expected
        if "/commits/" in seen.path:  # the bare SHA, not a commit JSON with its diff
            assert seen.headers["Accept"] == "application/vnd.github.sha"

    assert second == []  # rerun: everything is finished or known to have no Triton code
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()] \
        if (out / "rejects.jsonl").exists() else []
    assert rejects == []  # the rerun's rejects file is its own
    assert (out / "candidates.txt").read_text().split() == ["a-b/c", "a/b-c", "tritonserver/client"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["counts"]["skipped_already_downloaded"] == 2
    assert stats["counts"]["skipped_known_no_triton"] == 1
    assert stats["counts"]["api_calls"] == 0
    assert stats["counts"]["errors_input"] == 1  # "not a name"
    assert not (out / "tritonserver__client.zip").exists()
    assert [e["full_name"] for e in map(json.loads, (out / "no_triton.jsonl").read_text().splitlines())] == [
        "tritonserver/client"]


def test_faults_are_waited_out_retried_and_counted(tmp_path):
    repos = [kernel_repo(f"o/r{i}") for i in range(1, 8)]
    with FakeGitHub(repos[:6]) as fake:  # o/r7 does not exist
        fake.fault("^/repos/o/r1$", "retry_after", value=30)
        fake.fault("^/repos/o/r2/commits/", "too_many", value=10)
        fake.fault("^/repos/o/r3/zipball/", "bad_gateway", times=2)
        fake.fault("^/_codeload/o/r4/", "cut")
        fake.fault("^/repos/o/r5$", "secondary")
        fake.fault("^/repos/o/r6$", "forbidden")
        clock = FakeClock()
        client = GitHubClient(fake.url, TOKEN, clock=clock, backoff=0)
        listing = write_list(tmp_path / "repos.txt", *(r.full_name for r in repos))
        assert run(Options(tmp_path / "dl", repos_file=listing, jobs=1), client) == 0
        paths = collections.Counter(r.path for r in fake.requests)

    assert clock.sleeps == [30.0, 10.0, 60.0]
    entries = {e["full_name"]: e for e in manifest(tmp_path / "dl")}
    assert set(entries) == {"o/r1", "o/r2", "o/r3", "o/r4", "o/r5"}
    for repo in repos[:5]:
        assert (tmp_path / "dl" / entries[repo.full_name]["archive"]).read_bytes() == repo.zip_bytes()
    r = {repo.full_name: repo for repo in repos}
    assert paths["/repos/o/r1"] == 2 and paths["/repos/o/r2/commits/main"] == 2
    assert paths[f"/repos/o/r3/zipball/{r['o/r3'].sha}"] == 3  # two 502s, then the 302
    assert paths[f"/repos/o/r4/zipball/{r['o/r4'].sha}"] == 2  # the cut archive is fetched again from the start
    assert paths[f"/_codeload/o/r4/legacy.zip/{r['o/r4'].sha}"] == 2
    assert paths["/repos/o/r5"] == 2
    assert paths["/repos/o/r6"] == 1 and not any("o/r6/" in p for p in paths)  # a real 403: no retry
    assert paths["/repos/o/r7"] == 1
    assert sum(paths.values()) == 5 * 4 + 1 + 1 + 2 + 2 + 1 + 1 + 1
    stats = json.loads((tmp_path / "dl" / "stats.json").read_text())["counts"]
    assert stats["downloaded"] == 5 and stats["dropped_not_found"] == 1 and stats["errors_download"] == 1
    assert stats["rate_limit_waits"] == 3 and stats["rate_limit_wait_seconds"] == 100
    assert stats["http_retries"] == 2
    # one API call per request sent, except urllib3's two 502 retries and the redirect hops to the archive host
    codeload = sum(n for p, n in paths.items() if p.startswith("/_codeload/"))
    assert stats["api_calls"] == sum(paths.values()) - 2 - codeload == 21
    errors = (tmp_path / "dl" / "errors.csv").read_text()
    assert "o/r6" in errors and "Repository access blocked" in errors and TOKEN not in errors
    assert not list((tmp_path / "dl").glob(".*.part"))


def test_rate_limit_longer_than_max_wait_stops_and_rerun_resumes(tmp_path):
    repos = [kernel_repo(f"o/r{i}") for i in range(1, 4)]
    listing = write_list(tmp_path / "repos.txt", *(r.full_name for r in repos))
    with FakeGitHub(repos) as fake:
        fake.fault("^/repos/o/r1$", "retry_after", value=5000)
        clock = FakeClock()
        status = run(Options(tmp_path / "dl", repos_file=listing, jobs=1),
                     GitHubClient(fake.url, TOKEN, clock=clock, max_wait=600))
        assert status == 1 and clock.sleeps == [] and fake.paths() == ["/repos/o/r1"]
        rejects = [json.loads(x) for x in (tmp_path / "dl" / "rejects.jsonl").read_text().splitlines()]
        assert [(x["reason"], x["full_name"]) for x in rejects] == [("stopped", "o/r2"), ("stopped", "o/r3")]
        assert run(Options(tmp_path / "dl", repos_file=listing, jobs=1),
                   GitHubClient(fake.url, TOKEN, clock=clock, max_wait=600)) == 0
    assert {e["full_name"] for e in manifest(tmp_path / "dl")} == {"o/r1", "o/r2", "o/r3"}


def test_size_caps(tmp_path):
    noise = os.urandom(300_000).hex()  # incompressible: the archive is ~330 KB whatever GitHub's size says
    repos = [kernel_repo("o/huge", size_kb=900_000), kernel_repo("o/fat", files={"blob.txt": noise}, size_kb=50),
             kernel_repo("o/ok")]
    listing = write_list(tmp_path / "repos.txt", *(r.full_name for r in repos))
    with FakeGitHub(repos) as fake:
        run(Options(tmp_path / "dl", repos_file=listing, jobs=1, max_size_mb=0.25),
            GitHubClient(fake.url, TOKEN, clock=FakeClock()))
        paths = fake.paths()
    assert [e["full_name"] for e in manifest(tmp_path / "dl")] == ["o/ok"]
    assert sorted(p.name for p in (tmp_path / "dl").iterdir() if p.suffix == ".zip" or p.name.endswith(".part")) \
        == ["o__ok.zip"]
    assert [p for p in paths if "huge" in p] == ["/repos/o/huge"]  # skipped on GitHub's size: no download
    assert any(p.startswith("/_codeload/o/fat/") for p in paths)  # cut off while streaming
    reasons = sorted(json.loads(x)["reason"] for x in (tmp_path / "dl" / "rejects.jsonl").read_text().splitlines())
    assert reasons == ["too_large", "too_large"]


def test_search_discovery_combines_repo_and_code_search(monkeypatch, tmp_path):
    repos = [
        kernel_repo("alpha/fa", stars=300),  # README says Triton: both searches find it
        kernel_repo("beta/kern", stars=500, files={"README.md": "Fast attention."}),  # only code search finds it
        kernel_repo("gamma/small", stars=50, files={"README.md": "tiny"}),  # code search only, below --min-stars
        FakeRepo("delta/server", {"README.md": "Triton Inference Server client", "c.py": "x = 1\n"}, stars=900),
        kernel_repo("eps/cpp", stars=999, language="C++", files={"pkg/kernels.py": "import triton\n"}),
    ]
    out = tmp_path / "dl"
    with FakeGitHub(repos) as fake:
        assert run_main(monkeypatch, tmp_path, fake, "-o", str(out)) == 0
        paths = collections.Counter(fake.paths())
    assert {e["full_name"] for e in manifest(out)} == {"alpha/fa", "beta/kern"}
    assert sorted((out / "candidates.txt").read_text().split()) == ["alpha/fa", "beta/kern", "delta/server",
                                                                   "gamma/small"]
    assert paths["/repos/alpha/fa"] == 0  # the search item carried stars, branch, license and size
    assert paths["/repos/beta/kern"] == 1 and paths["/repos/gamma/small"] == 1
    assert not any(p.startswith("/repos/gamma/small/") for p in paths)
    counts = json.loads((out / "stats.json").read_text())["counts"]
    assert (counts["found_repo_search"], counts["found_code_search"], counts["found_code_search_only"]) == (2, 3, 2)
    assert counts["dropped_below_min_stars"] == 1 and counts["dropped_no_triton"] == 1


def test_without_token_code_search_is_skipped_or_refused(monkeypatch, tmp_path, capsys):
    with FakeGitHub([kernel_repo("alpha/fa")]) as fake:
        assert run_main(monkeypatch, tmp_path, fake, "-o", str(tmp_path / "dl"), token=None) == 0
        assert not any(p.startswith("/search/code") for p in fake.paths())
        assert run_main(monkeypatch, tmp_path, fake, "--search", "code", "-o", str(tmp_path / "d2"),
                        token=None) == 2
    err = capsys.readouterr().err
    assert "code search needs a token" in err
    assert [e["full_name"] for e in manifest(tmp_path / "dl")] == ["alpha/fa"]


def test_resume_after_kill_mid_download(tmp_path):
    """Kill the scraper while an archive body is half sent, run it again: finished repositories are not fetched
    again, the partial one is fetched whole, no half-written archive or manifest line is ever left."""
    repos = [kernel_repo(f"o/r{i}") for i in range(1, 4)]
    listing = write_list(tmp_path / "repos.txt", *(r.full_name for r in repos))
    out = tmp_path / "dl"
    part = out / ".o__r2.zip.part"
    with FakeGitHub(repos) as fake:
        fake.fault("^/_codeload/o/r2/", "stall")
        env = {**os.environ, "GITHUB_API_URL": fake.url, "GITHUB_TOKEN": TOKEN, "PYTHONPATH": str(SCRIPT.parent)}
        command = [sys.executable, str(SCRIPT), "--repos", str(listing), "-o", str(out), "--jobs", "1"]
        proc = subprocess.Popen([*command, "-v"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert fake.stalled.wait(30), "the scraper never reached the stalled archive"
            deadline = time.monotonic() + 10
            while not part.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            proc.kill()
            killed_out, killed_err = proc.communicate()
        assert part.exists() and not (out / "o__r2.zip").exists()
        assert [e["full_name"] for e in manifest(out)] == ["o/r1"]
        fake.release.set()
        before = len(fake.requests)
        done = subprocess.run([*command, "-v"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        rerun_paths = [r.path for r in fake.requests[before:]]

    assert done.returncode == 0, done.stderr
    assert not any("/o/r1" in p for p in rerun_paths)
    assert {e["full_name"] for e in manifest(out)} == {"o/r1", "o/r2", "o/r3"}
    assert len(manifest(out)) == 3
    for repo in repos:
        assert (out / f"o__{repo.full_name[2:]}.zip").read_bytes() == repo.zip_bytes()
    assert not part.exists()
    counts = json.loads((out / "stats.json").read_text())["counts"]
    assert counts["partial_downloads_removed"] == 1 and counts["skipped_already_downloaded"] == 1
    assert "== github summary ==" in done.stderr and "downloaded" in done.stderr
    for text in (killed_out, killed_err, done.stdout, done.stderr,
                 *(p.read_text(errors="replace") for p in out.iterdir() if p.suffix != ".zip")):
        assert TOKEN not in text


def test_a_failing_search_keeps_what_the_other_found(monkeypatch, tmp_path):
    out = tmp_path / "dl"
    with FakeGitHub([kernel_repo("alpha/fa"), kernel_repo("beta/kern", files={"README.md": "fast"})]) as fake:
        fake.fault("^/search/code$", "forbidden")
        assert run_main(monkeypatch, tmp_path, fake, "-o", str(out)) == 1
    assert [e["full_name"] for e in manifest(out)] == ["alpha/fa"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["counts"]["errors_search"] == 1
    assert "Repository access blocked" in stats["errors"]["search"][0]["example"]


def test_discover_only_downloads_nothing(monkeypatch, tmp_path):
    out = tmp_path / "dl"
    with FakeGitHub([kernel_repo("alpha/fa"), kernel_repo("beta/kern")]) as fake:
        assert run_main(monkeypatch, tmp_path, fake, "--discover-only", "--search", "repo",
                        "-o", str(out)) == 0
        assert fake.paths() == ["/search/repositories"]
    assert (out / "candidates.txt").read_text() == "alpha/fa\nbeta/kern\n"
    assert not (out / "manifest.jsonl").exists()


def test_refresh_fetches_only_moved_heads(tmp_path):
    r1, r2 = kernel_repo("o/r1"), kernel_repo("o/r2")
    listing = write_list(tmp_path / "repos.txt", "o/r1", "o/r2")
    out = tmp_path / "dl"
    with FakeGitHub([r1, r2]) as fake:
        client = GitHubClient(fake.url, TOKEN, clock=FakeClock())
        assert run(Options(out, repos_file=listing, jobs=1), client) == 0
        old_sha = r2.sha
        r2.files["pkg/more.py"] = KERNEL  # a new commit on o/r2's default branch
        fake.requests.clear()
        assert run(Options(out, repos_file=listing, jobs=1, refresh=True), client) == 0
        paths = fake.paths()
    assert r2.sha != old_sha
    assert paths == ["/repos/o/r1", "/repos/o/r1/commits/main", "/repos/o/r2", "/repos/o/r2/commits/main",
                     f"/repos/o/r2/zipball/{r2.sha}", f"/_codeload/o/r2/legacy.zip/{r2.sha}"]
    assert [e["full_name"] for e in manifest(out)] == ["o/r1", "o/r2", "o/r2"]
    latest = read_manifest(out)["o/r2"]
    assert latest["commit_sha"] == r2.sha and latest["triton_files"] == 2
    assert (out / "o__r2.zip").read_bytes() == r2.zip_bytes()


def test_token_from_dotenv_and_environment_wins(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("GITHUB_TOKEN=ghp_fromdotenv\n")
    monkeypatch.setenv("GITHUB_TOKEN", "placeholder")  # recorded, so whatever load_dotenv sets is undone
    listing = write_list(tmp_path / "repos.txt", "alpha/fa")
    with FakeGitHub([kernel_repo("alpha/fa")]) as fake:
        run_main(monkeypatch, tmp_path, fake, "--repos", str(listing), "-o", str(tmp_path / "a"),
                 token=None)
        run_main(monkeypatch, tmp_path, fake, "--repos", str(listing), "-o", str(tmp_path / "b"),
                 token="ghp_fromenv")
        tokens = [r.headers.get("Authorization") for r in fake.requests if r.path == "/repos/alpha/fa"]
    assert tokens == ["Bearer ghp_fromdotenv", "Bearer ghp_fromenv"]


def test_corrupt_archive_is_fetched_again_then_given_up(tmp_path):
    repos = [kernel_repo("o/flaky", files={"pkg/big.py": KERNEL * 20}), kernel_repo("o/broken")]
    listing = write_list(tmp_path / "repos.txt", "o/flaky", "o/broken")
    out = tmp_path / "dl"
    with FakeGitHub(repos) as fake:
        fake.fault("^/_codeload/o/flaky/", "corrupt", times=1)
        fake.fault("^/_codeload/o/broken/", "corrupt", times=5)
        run(Options(out, repos_file=listing, jobs=1), GitHubClient(fake.url, TOKEN, clock=FakeClock()))
        codeload = collections.Counter(p.split("/")[3] for p in fake.paths("^/_codeload/"))
    assert codeload == {"flaky": 2, "broken": 3}  # three attempts per archive
    assert [e["full_name"] for e in manifest(out)] == ["o/flaky"]
    assert (out / "o__flaky.zip").read_bytes() == repos[0].zip_bytes()
    assert sorted(p.name for p in out.iterdir() if "broken" in p.name) == []
    [reject] = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert reject["reason"] == "bad_archive" and reject["full_name"] == "o/broken"


def test_renamed_repository_is_followed_and_not_fetched_twice(tmp_path):
    repo = kernel_repo("neworg/kern")
    listing = write_list(tmp_path / "repos.txt", "oldorg/kern")
    out = tmp_path / "dl"
    with FakeGitHub([repo]) as fake:
        fake.renamed["oldorg/kern"] = "neworg/kern"
        client = GitHubClient(fake.url, TOKEN, clock=FakeClock())
        run(Options(out, repos_file=listing, jobs=1), client)
        fake.requests.clear()
        run(Options(out, repos_file=listing, jobs=1), client)
        second = fake.paths()
    [entry] = manifest(out)
    assert entry["full_name"] == "neworg/kern" and entry["archive"] == "neworg__kern.zip"
    assert (out / "neworg__kern.zip").read_bytes() == repo.zip_bytes()
    assert second == ["/repos/oldorg/kern", "/repos/neworg/kern"]  # the redirect, then skipped: no download


def test_unreadable_repos_file_is_a_clear_error_and_bad_bytes_a_counted_line(monkeypatch, tmp_path, capsys):
    listing = tmp_path / "repos.txt"
    listing.write_bytes(b"o/r1\n\xff\xfe not utf-8\n")
    with FakeGitHub([kernel_repo("o/r1")]) as fake:
        try:
            code = run_main(monkeypatch, tmp_path, fake, "--repos", str(tmp_path / "missing.txt"))
        except SystemExit as exc:  # argparse's usage error
            code = exc.code
        assert code == 2 and "missing.txt" in capsys.readouterr().err and fake.requests == []
        assert run_main(monkeypatch, tmp_path, fake, "--repos", str(listing), "-o", str(tmp_path / "dl")) == 0
    assert [e["full_name"] for e in manifest(tmp_path / "dl")] == ["o/r1"]
    assert json.loads((tmp_path / "dl" / "stats.json").read_text())["counts"]["errors_input"] == 1
