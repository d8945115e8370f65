"""`scrape_github.py --discover pytorch` against the fake server: Python repositories using PyTorch, searched with
the same partitioning, confirmed by an nn.Module subclass in the archive, each manifest line naming the discoveries
that found it, resumable like the Triton discovery."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from pathlib import Path

import pytest

from fake_github import KERNEL, MODULE, FakeClock, FakeGitHub, FakeRepo, kernel_repo, module_repo
from scraper.github.client import GitHubClient
from scraper.github.discovery import has_nn_module
from scraper.github.manifest import discoveries_of, read_manifest
from scraper.github.pipeline import Options, run

import scrape_github

TOKEN = "ghp_discoverytoken7"


def run_main(monkeypatch, tmp_path, fake, *argv) -> int:
    monkeypatch.chdir(tmp_path)  # no .env of the checkout gets read
    monkeypatch.setenv("GITHUB_API_URL", fake.url)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    return scrape_github.main([*argv, "--jobs", "1"])


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def counts(out: Path) -> dict:
    return json.loads((out / "stats.json").read_text())["counts"]


def write_list(path: Path, *names: str) -> Path:
    path.write_text("".join(f"{n}\n" for n in names))
    return path


def test_pytorch_search_is_partitioned_past_1000(monkeypatch, tmp_path):
    day0 = dt.date(2013, 1, 1)
    repos = [FakeRepo(f"net{i}/model-{i}", stars=100 + (i * 53) % 3000, description="A PyTorch implementation",
                      created=str(day0 + dt.timedelta(days=i % 3000))) for i in range(1500)]
    repos += [FakeRepo(f"tie{i}/nets-{i}", stars=150, description="pytorch models",  # one star count, > 1000
                       created=str(day0 + dt.timedelta(days=3 * i))) for i in range(1050)]
    repos += [FakeRepo(f"tf{i}/keras-{i}", stars=800, description="TensorFlow models") for i in range(100)]
    repos += [FakeRepo(f"lua{i}/pytorch-{i}", stars=700, description="pytorch", language="Lua") for i in range(30)]
    repos += [FakeRepo(f"tri{i}/kern-{i}", stars=900, description="Triton kernels") for i in range(30)]
    # the oracle, from the data: PyTorch named, Python, at least --min-stars
    expected = {r.full_name for r in repos if "pytorch" in f"{r.full_name} {r.description}".lower()
                and r.language == "Python" and r.stars >= 150}
    assert len(expected) > 2000 and sum(r.full_name.startswith("tie") for r in repos) > 1000
    out = tmp_path / "dl"
    with FakeGitHub(repos) as fake:
        assert run_main(monkeypatch, tmp_path, fake, "--discover", "pytorch", "--min-stars", "150",
                        "--discover-only", "-o", str(out)) == 0
        seen = list(fake.requests)
    found = (out / "candidates.txt").read_text().split()
    assert len(found) == len(set(found)) and set(found) == expected
    assert {r.path for r in seen} == {"/search/repositories"}  # no code search: the discovery has none
    queries = [r.query["q"] for r in seen]
    assert queries[0] == "pytorch language:python stars:>=150"
    assert all(q.startswith("pytorch language:python stars:") for q in queries)
    assert any("stars:150..150" in q and "created:" in q for q in queries)  # the tie group went by dates
    assert all(int(r.query.get("page", 1)) <= 10 for r in seen)
    stats = counts(out)
    assert stats["found_repo_search"] == len(expected) and "repo_search_truncated_parts" not in stats


PYTORCH_REPOS = {  # name -> (files besides the README, .py files with an nn.Module subclass); 0: rejected
    "vision/resnet": ({"models/resnet.py": MODULE + "\n\nclass ResNet(nn.Module):\n    pass\n",
                       "models/head.py": "import torch.nn as nn\n\n\nclass Head(\n    nn.Module,  # classifier\n):\n"
                                         "    pass\n",
                       "train.py": "import torch\n"}, 2),
    "audio/full": ({"enc.py": "import torch\n\n\nclass Encoder(torch.nn.Module):\n    pass\n"}, 1),
    "text/bare": ({"tiny.py": "from torch.nn import Linear, Module\n\n\nclass Tiny(Module):\n    pass\n"}, 1),
    "jax/flax-port": ({"model.py": "from flax import linen as nn\n\n\nclass MLP(nn.Module):\n    pass\n"}, 0),
    "util/tensors": ({"ops.py": "import torch\n\n\ndef double(x):\n    return torch.cat([x, x])\n",
                      "fake.py": "class Module:\n    pass\n\n\nclass Fake(Module):\n    pass\n"}, 0),
    "kern/fused": ({"kernels.py": KERNEL}, 0),  # Triton kernels, no nn.Module: not a pytorch repository
}


def pytorch_fixture() -> list[FakeRepo]:
    return [FakeRepo(name, {"README.md": f"{name}: PyTorch code", **files}, stars=1000 - 10 * number)
            for number, (name, (files, _)) in enumerate(PYTORCH_REPOS.items())]


def test_confirmation_keeps_nn_module_repositories_and_rejects_the_others(monkeypatch, tmp_path):
    repos = pytorch_fixture()
    out = tmp_path / "dl"
    kept = {name for name, (_, modules) in PYTORCH_REPOS.items() if modules}
    with FakeGitHub(repos) as fake:
        assert run_main(monkeypatch, tmp_path, fake, "--discover", "pytorch", "-o", str(out)) == 0
        fake.requests.clear()
        assert run_main(monkeypatch, tmp_path, fake, "--discover", "pytorch", "-o", str(out)) == 0
        rerun = fake.paths()
    entries = {e["full_name"]: e for e in lines(out / "manifest.jsonl")}
    assert set(entries) == kept == {"vision/resnet", "audio/full", "text/bare"}
    for repo in repos:
        archive = out / f"{repo.full_name.replace('/', '__')}.zip"
        if repo.full_name in kept:
            entry = entries[repo.full_name]
            assert entry["discovery"] == ["pytorch"] and entry["commit_sha"] == repo.sha
            assert entry["nn_module_files"] == PYTORCH_REPOS[repo.full_name][1] and entry["triton_files"] == 0
            assert archive.read_bytes() == repo.zip_bytes()
        else:
            assert not archive.exists()
    rejected = {e["full_name"]: e["commit_sha"] for e in lines(out / "no_nn_module.jsonl")}
    assert rejected == {r.full_name: r.sha for r in repos if r.full_name not in kept}
    assert not (out / "no_triton.jsonl").exists()
    assert rerun == ["/search/repositories"]  # the rerun: all finished or known to have no nn.Module
    stats = counts(out)
    assert stats["skipped_already_downloaded"] == 3 and stats["skipped_known_no_nn_module"] == 3


def test_a_repository_found_by_both_discoveries_names_both(tmp_path):
    both = kernel_repo("both/fused", files={"model/block.py": MODULE})
    triton_only = kernel_repo("only/triton")
    torch_only = module_repo("only/torch")
    listing = write_list(tmp_path / "repos.txt", "both/fused", "only/triton", "only/torch")
    out = tmp_path / "dl"
    with FakeGitHub([both, triton_only, torch_only]) as fake:
        client = GitHubClient(fake.url, TOKEN, clock=FakeClock())
        assert run(Options(out, repos_file=listing, jobs=1), client) == 0
        first = read_manifest(out)
        fake.requests.clear()
        assert run(Options(out, repos_file=listing, jobs=1, discovery="pytorch"), client) == 0
        second = fake.paths()
        pytorch_counts = counts(out)
        fake.requests.clear()
        for discovery in ("pytorch", "triton"):  # again: nothing left to ask the server
            assert run(Options(out, repos_file=listing, jobs=1, discovery=discovery), client) == 0
        third = fake.paths()
    assert {k: e["discovery"] for k, e in first.items()} == {"both/fused": ["triton"], "only/triton": ["triton"]}
    latest = read_manifest(out)
    assert latest["both/fused"]["discovery"] == ["triton", "pytorch"]
    assert latest["only/triton"]["discovery"] == ["triton"]  # no nn.Module: pytorch did not take it
    assert latest["only/torch"]["discovery"] == ["pytorch"]  # triton rejected it, pytorch fetched it
    for key in ("commit_sha", "archive", "sha256", "archive_bytes", "fetched_at"):  # the same archive, not refetched
        assert latest["both/fused"][key] == first["both/fused"][key]
    assert (latest["both/fused"]["triton_files"], latest["both/fused"]["nn_module_files"]) == (1, 1)
    assert (out / "only__triton.zip").read_bytes() == triton_only.zip_bytes()  # triton's archive stays
    sha = torch_only.sha
    assert second == ["/repos/only/torch", "/repos/only/torch/commits/main", f"/repos/only/torch/zipball/{sha}",
                      f"/_codeload/only/torch/legacy.zip/{sha}"]
    assert third == []
    assert pytorch_counts["added_discovery"] == 1 and pytorch_counts["dropped_no_nn_module"] == 1
    assert [e["full_name"] for e in lines(out / "no_nn_module.jsonl")] == ["only/triton"]
    assert len(lines(out / "manifest.jsonl")) == 4


def test_refresh_keeps_the_discoveries_the_new_head_still_passes(tmp_path):
    repo = kernel_repo("both/fused", files={"model/block.py": MODULE})
    listing = write_list(tmp_path / "repos.txt", "both/fused")
    out = tmp_path / "dl"
    with FakeGitHub([repo]) as fake:
        client = GitHubClient(fake.url, TOKEN, clock=FakeClock())
        for discovery in ("triton", "pytorch"):
            assert run(Options(out, repos_file=listing, jobs=1, discovery=discovery), client) == 0
        repo.files["model/more.py"] = MODULE  # a new head that still has both
        assert run(Options(out, repos_file=listing, jobs=1, discovery="pytorch", refresh=True), client) == 0
        moved = read_manifest(out)["both/fused"]
        del repo.files["model/block.py"], repo.files["model/more.py"]  # a head without any nn.Module
        assert run(Options(out, repos_file=listing, jobs=1, refresh=True), client) == 0
        fetched = fake.paths("^/_codeload/")
    assert (moved["discovery"], moved["nn_module_files"]) == (["triton", "pytorch"], 2)
    latest = read_manifest(out)["both/fused"]
    assert latest["discovery"] == ["triton"] and latest["commit_sha"] == repo.sha
    assert (out / "both__fused.zip").read_bytes() == repo.zip_bytes()
    assert len(fetched) == 3  # the first download and one per moved head


def test_a_manifest_line_without_discovery_reads_as_triton(tmp_path):
    """A line an earlier version wrote (no `discovery`, no `nn_module_files`): Triton's; a pytorch run checks its
    archive on disk for nn.Module subclasses without asking the server."""
    repo = kernel_repo("old/line", files={"model/block.py": MODULE})
    out = tmp_path / "dl"
    out.mkdir()
    data = repo.zip_bytes()
    (out / "old__line.zip").write_bytes(data)
    old = {"full_name": "old/line", "commit_sha": repo.sha, "default_branch": "main", "stars": 150, "license": "MIT",
           "size_kb": 12, "archive": "old__line.zip", "sha256": hashlib.sha256(data).hexdigest(),
           "archive_bytes": len(data), "triton_files": 1, "fetched_at": "2024-01-01T00:00:00Z", "origin": "github",
           "html_url": "https://github.com/old/line"}
    (out / "manifest.jsonl").write_text(json.dumps(old) + "\n")
    assert discoveries_of(old) == ["triton"]
    listing = write_list(tmp_path / "repos.txt", "old/line")
    with FakeGitHub([repo]) as fake:
        assert run(Options(out, repos_file=listing, discovery="pytorch"), GitHubClient(fake.url, TOKEN)) == 0
        assert fake.requests == []
    [_, added] = lines(out / "manifest.jsonl")
    assert added == {**old, "discovery": ["triton", "pytorch"], "nn_module_files": 1}


def test_pytorch_discovery_resumes_after_a_stop(tmp_path):
    """A rate-limit wait over --max-wait stops the run part-way; the rerun fetches only what is left: nothing
    finished and nothing known to have no nn.Module is asked for again."""
    repos = [module_repo("o/r1", stars=500), FakeRepo("o/plain", {"README.md": "pytorch", "a.py": "import torch\n"},
                                                       stars=450),
             module_repo("o/r2", stars=400), module_repo("o/r3", stars=300), module_repo("o/r4", stars=200)]
    out = tmp_path / "dl"
    with FakeGitHub(repos) as fake:
        fake.fault("^/repos/o/r3/commits/", "retry_after", value=5000)
        client = GitHubClient(fake.url, TOKEN, clock=FakeClock(), max_wait=600)
        assert run(Options(out, discovery="pytorch", jobs=1), client) == 1
        assert set(read_manifest(out)) == {"o/r1", "o/r2"}
        assert [(e["reason"], e["full_name"]) for e in lines(out / "rejects.jsonl")] == [
            ("no_nn_module", "o/plain"), ("stopped", "o/r4")]
        fake.requests.clear()
        rerun_client = GitHubClient(fake.url, TOKEN, clock=FakeClock(), max_wait=600)  # a new process's
        assert run(Options(out, discovery="pytorch", jobs=1), rerun_client) == 0
        rerun = fake.paths()
    assert {k: e["discovery"] for k, e in read_manifest(out).items()} == {
        f"o/r{i}": ["pytorch"] for i in range(1, 5)}
    asked = {path.split("/")[3] for path in rerun if path.startswith(("/repos/", "/_codeload/"))}
    assert asked == {"r3", "r4"} and "/search/repositories" in rerun
    assert len(lines(out / "manifest.jsonl")) == 4


def test_pytorch_has_no_code_search_unless_given_a_query(monkeypatch, tmp_path, capsys):
    with FakeGitHub([module_repo("o/r1")]) as fake:
        assert run_main(monkeypatch, tmp_path, fake, "--discover", "pytorch", "--search", "code",
                        "-o", str(tmp_path / "dl")) == 2
        assert fake.requests == []
        assert "--code-query" in capsys.readouterr().err
        assert run_main(monkeypatch, tmp_path, fake, "--discover", "pytorch", "--search", "code", "--code-query",
                        "nn.Module language:python", "--discover-only", "-o", str(tmp_path / "d2")) == 0
        assert [r.query["q"] for r in fake.requests] == ["nn.Module language:python size:0..400000"]
    assert (tmp_path / "d2" / "candidates.txt").read_text() == "o/r1\n"


@pytest.mark.parametrize("text, expected", [
    ("from torch import nn\nclass A(nn.Module):\n    pass\n", True),
    ("import torch.nn as nn\nclass A(nn.Module, metaclass=M):\n    pass\n", True),
    ("import torch.nn\nclass A(torch.nn.Module):\n    pass\n", True),
    ("import torch as th\nclass A(th.nn.Module):\n    pass\n", True),
    ("from torch import (\n    nn,  # layers\n    optim,\n)\nclass A(nn.Module):\n    pass\n", True),
    ("from torch.nn import Module as Base\nclass A(Base):\n    pass\n", True),
    ("import torch\n\n    class Inner(torch.nn.Module):\n        pass\n", True),  # nested: still a subclass
    ('from torch import nn\nclasses = "("\nclass A(nn.Module):\n    pass\n', True),  # not a class statement
    ("from flax import linen as nn\nclass A(nn.Module):\n    pass\n", False),  # Flax's Module
    ("import torch\nclass A(nn.Module):\n    pass\n", False),  # nn is not bound to torch's
    ("import torchvision as torch\nclass A(torch.nn.Module):\n    pass\n", False),
    ("from torch import nn\nclass A(Module):\n    pass\n", False),
    ("from torch import nn\nclass A(nn.ModuleList):\n    pass\n", False),
    ("from torch import nn\nx = nn.Module()\n", False),  # used, not subclassed
])
def test_which_files_hold_an_nn_module_subclass(text, expected):
    assert has_nn_module(text.encode()) is expected


HOSTILE_TEXTS = {  # 2 MiB each, the generator's cap for one file; each names torch and Module, so none is skipped
    "unclosed_class": b"import torch\nModule\n" + b"class a(\n" * 230_000,
    "unclosed_import": b"import torch\nModule\n" + b"from torch import (\n" * 100_000,
    "spaces_then_classes": b"import torch\nModule\n" + b" " * 1_000_000 + b"class a( " * 100_000,
    "one_import_line": b"import torch\nModule\nimport " + b"a, " * 700_000,
    "many_imports": b"Module\n" + b"import torch as t\n" * 120_000,
}


@pytest.mark.timeout(60, method="thread")
@pytest.mark.parametrize("name", sorted(HOSTILE_TEXTS))
def test_hostile_files_cost_what_plain_ones_do(name):
    text = HOSTILE_TEXTS[name][: 2 << 20]
    started = time.perf_counter()
    assert has_nn_module(text) is False
    assert time.perf_counter() - started < 1.0  # about 0.1 s; patterns over the whole text took 5 to 11 s


@pytest.mark.timeout(60, method="thread")
def test_hostile_files_beside_a_module_do_not_hide_it(monkeypatch, tmp_path):
    files = {f"gen/{name}.py": text[: 2 << 20].decode() for name, text in HOSTILE_TEXTS.items()}
    repos = [module_repo("mixed/model", files=files), FakeRepo("hostile/only", {"README.md": "pytorch", **files})]
    out = tmp_path / "dl"
    with FakeGitHub(repos) as fake:
        assert run_main(monkeypatch, tmp_path, fake, "--discover", "pytorch", "-o", str(out)) == 0
    assert {k: e["nn_module_files"] for k, e in read_manifest(out).items()} == {"mixed/model": 1}
    assert [e["full_name"] for e in lines(out / "no_nn_module.jsonl")] == ["hostile/only"]
