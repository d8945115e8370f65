"""--local: the bundled example repositories, a real git clone, and zip archives (safe, flat, hostile)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from scraper.github.local import parse_local_arg
from scraper.zipsafe import safe_member_path
from scraper.github.manifest import archive_name, full_name_of_archive

import scrape_github

EXAMPLES = REPO_ROOT / "examples" / "repos"
# From examples/README.md: each repository's license and the kernels it defines.
EXAMPLE_TABLE = {
    "kernelsmith/softmax-triton": ("MIT", ["softmax_kernel", "softmax_looped_kernel", "exp_shifted"]),
    "lumen-ai/fastnorm": ("Apache-2.0", ["_layer_norm_fwd_kernel", "_layer_norm_bwd_kernel", "_rms_norm_fwd_kernel"]),
    "matmul-lab/autotuned-gemm": ("MIT", ["matmul_kernel", "leaky_relu", "fast_gelu"]),
    "tinyllm-org/llm-kernels": ("Apache-2.0", ["_swiglu_fwd_kernel", "_rotary_kernel"]),
}


def manifest(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def stats(folder: Path) -> dict:
    return json.loads((folder / "stats.json").read_text())["counts"]


def source_files(folder: Path) -> set[str]:
    """Every file of a plain folder, caches aside (oracle for the archive's member list)."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def kernel_files(folder: Path, kernels: list[str]) -> int:
    """Files that define one of the kernels named in the examples README."""
    pattern = re.compile(r"def (%s)\(" % "|".join(map(re.escape, kernels)))
    return sum(1 for p in folder.rglob("*.py") if "__pycache__" not in p.parts and pattern.search(p.read_text()))


def members(archive: Path) -> list[str]:
    with zipfile.ZipFile(archive) as zf:
        return zf.namelist()


def test_bundled_examples_ingest_and_rerun(tmp_path):
    out = tmp_path / "dl"
    folders = [str(EXAMPLES / name) for name in EXAMPLE_TABLE]
    assert scrape_github.main(["--local", *folders, "-o", str(out), "-q"]) == 0
    entries = {e["full_name"]: e for e in manifest(out)}
    for name, (license_id, kernels) in EXAMPLE_TABLE.items():
        folder, entry = EXAMPLES / name, entries["local/" + name.split("/")[1]]
        archive = out / entry["archive"]
        assert entry["archive"] == f"local__{name.split('/')[1]}.zip"
        assert entry["license"] == license_id and entry["origin"] == "local"
        assert entry["commit_sha"] is None and entry["stars"] is None
        assert entry["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
        assert entry["triton_files"] == kernel_files(folder, kernels)
        top = f"local-{name.split('/')[1]}-nocommit/"
        names = members(archive)
        assert names[0] == top and all(n.startswith(top) for n in names)
        assert {n[len(top):] for n in names[1:]} == source_files(folder)
        with zipfile.ZipFile(archive) as zf:  # exact bytes of a kernel file
            some_py = next(n for n in names if n.endswith(".py"))
            assert zf.read(some_py) == (folder / some_py[len(top):]).read_bytes()
    assert stats(out)["local_ingested"] == 4

    before = (out / "manifest.jsonl").read_text()
    assert scrape_github.main(["--local", *folders, "-o", str(out), "-q"]) == 0
    assert (out / "manifest.jsonl").read_text() == before  # same bytes: nothing appended
    assert stats(out)["local_unchanged"] == 4


def git(folder: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e", "GIT_CONFIG_GLOBAL": os.devnull}
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def test_git_clone_gets_commit_branch_and_committed_files_only(tmp_path):
    clone = tmp_path / "kernels-clone"
    (clone / "pkg").mkdir(parents=True)
    source = EXAMPLES / "kernelsmith/softmax-triton"
    (clone / "pkg" / "softmax.py").write_bytes((source / "softmax_triton" / "softmax.py").read_bytes())
    (clone / "LICENSE").write_bytes((EXAMPLES / "lumen-ai/fastnorm/LICENSE").read_bytes())
    (clone / ".gitignore").write_text("*.log\n")
    git(clone, "init", "-q", "-b", "trunk")
    git(clone, "add", ".")
    git(clone, "commit", "-q", "-m", "first")
    (clone / "scratch.py").write_text("import triton\n@triton.jit\ndef uncommitted(): pass\n")  # not in HEAD
    (clone / "run.log").write_text("ignored\n")
    head = git(clone, "rev-parse", "HEAD")

    out = tmp_path / "dl"
    assert scrape_github.main(["--local", f"{clone}=acme/kernels", "-o", str(out), "-q"]) == 0
    [entry] = manifest(out)
    assert entry["full_name"] == "acme/kernels" and entry["archive"] == "acme__kernels.zip"
    assert entry["commit_sha"] == head and entry["default_branch"] == "trunk"
    assert entry["license"] == "Apache-2.0" and entry["triton_files"] == 1
    top = f"acme-kernels-{head[:7]}/"
    assert members(out / "acme__kernels.zip") == [top, f"{top}.gitignore", f"{top}LICENSE", f"{top}pkg/softmax.py"]


def make_zip(path: Path, files: dict) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def test_zip_inputs_copied_repacked_or_refused(tmp_path, capsys):
    kernel = (EXAMPLES / "lumen-ai/fastnorm/fastnorm/rms_norm.py").read_text()
    ball = make_zip(tmp_path / "ball.zip", {"me-ball-abc1234/": "", "me-ball-abc1234/k.py": kernel})
    flat = make_zip(tmp_path / "flat.zip", {"k.py": kernel, "sub/u.py": "x = 1\n"})
    evil = make_zip(tmp_path / "evil.zip", {"ok/k.py": kernel, "ok/../../evil.py": "boom"})
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        zf.writestr("ok/k.py", kernel)
        member = zipfile.ZipInfo("ok/passwd")
        member.external_attr = 0o120777 << 16  # a symbolic link
        zf.writestr(member, "/etc/passwd")
    out = tmp_path / "dl"
    argv = ["--local", str(ball), str(flat), str(evil), str(link), str(tmp_path / "missing"),
            "-o", str(out)]
    assert scrape_github.main(argv) == 3  # an input is missing
    entries = {e["full_name"]: e for e in manifest(out)}
    assert set(entries) == {"local/ball", "local/flat"}
    assert (out / "local__ball.zip").read_bytes() == ball.read_bytes()  # already zipball layout: copied
    assert members(out / "local__flat.zip") == ["local-flat-nocommit/k.py", "local-flat-nocommit/sub/u.py"]
    assert entries["local/flat"]["triton_files"] == 1
    assert not (out / "local__evil.zip").exists() and not (out / "local__link.zip").exists()
    counts = stats(out)
    assert counts["errors_local"] == 3 and counts["local_ingested"] == 2
    err = capsys.readouterr().err
    assert "unsafe member name 'ok/../../evil.py'" in err and "unsafe member name 'ok/passwd'" in err
    assert "no such file or folder" in err
    assert not list(out.glob(".*.part"))


def test_names_cannot_collide_and_round_trip():
    names = ["a-b/c", "a/b-c", "a/b__c", "x-y-z/w_v.w"]
    files = [archive_name(n) for n in names]
    assert len(set(files)) == len(names)
    assert [full_name_of_archive(f) for f in files] == names
    assert parse_local_arg("/x/y=z/clone=acme/k") == (Path("/x/y=z/clone"), "acme/k")
    assert parse_local_arg("/x/a=b") == (Path("/x/a=b"), None)


@pytest.mark.parametrize("name,ok", [("a/b.py", True), ("../x", False), ("/etc/passwd", False),
                                      ("a/../../x", False), ("C:/x", False), ("a\\..\\..\\x", False)])
def test_safe_member(name, ok):
    assert (safe_member_path(name) is not None) is ok


def test_a_bzip2_bomb_given_as_local_zip_is_refused_without_inflating_it(tmp_path):
    """A --local zip that is not in zipball layout gets re-packed: its members go through zipsafe's capped reader,
    so a 1 GiB bzip2 member (a few KB on disk) costs nothing and the zip is refused with its reason."""
    from dataclasses import replace

    from hostile_zip import peak_growth_mib, write_zip, zeros

    bomb = write_zip(tmp_path / "bomb.zip", [replace(zeros(zipfile.ZIP_BZIP2, 1 << 30), name="kernel.py")])
    assert bomb.stat().st_size < 100_000
    (tmp_path / "dl").mkdir()
    setup = f"from scraper.github.local import ingest; import pathlib; out = pathlib.Path({str(tmp_path / 'dl')!r})"
    action = f"""
try:
    ingest({str(bomb)!r}, out, None)
except Exception as exc:
    print(type(exc).__name__, exc)
"""
    growth, printed = peak_growth_mib(setup, action)
    assert printed.startswith("LocalError") and "too_large" in printed
    assert growth < 200  # MiB: nowhere near the member's 1 GiB


# ------------------------------------------------------------------------------------------------ no git run

def committed_blobs(clone: Path) -> list[str]:
    """Oracle: the regular files of HEAD's tree, as git itself lists them (what a zipball of HEAD holds)."""
    listing = git(clone, "ls-tree", "-r", "-z", "HEAD")
    return sorted(line.split("\t", 1)[1] for line in listing.split("\0")
                  if line and line.split(" ", 1)[0] in ("100644", "100755"))


def booby_trapped_clone(tmp_path: Path, index_version: int) -> tuple[Path, Path]:
    """A clone whose .git/config runs a command (`core.fsmonitor`, a hooks folder, `core.sshCommand`,
    `diff.external`) each time git looks at it; returns (clone, the marker file those commands would write)."""
    marker = tmp_path / "git-ran-a-command"
    script = tmp_path / "payload.sh"
    script.write_text(f"#!/bin/sh\necho \"$0 $*\" >> {marker}\nexit 1\n")
    script.chmod(0o755)
    clone = tmp_path / "trapped"
    (clone / "pkg" / "deep").mkdir(parents=True)
    (clone / "pkg" / "softmax.py").write_bytes(
        (EXAMPLES / "kernelsmith/softmax-triton/softmax_triton/softmax.py").read_bytes())
    for i in range(12):  # paths sharing long prefixes: version 4 compresses them
        (clone / "pkg" / "deep" / f"module_{i:02d}.py").write_text(f"x = {i}\n")
    (clone / "run.sh").write_text("#!/bin/sh\n")
    (clone / "run.sh").chmod(0o755)
    os.symlink("pkg/softmax.py", clone / "alias.py")  # committed as a link: left out, as before
    git(clone, "init", "-q", "-b", "feature/x")
    git(clone, "add", ".")
    git(clone, "commit", "-q", "-m", "first")
    (clone / "later.py").write_text("y = 2\n")
    git(clone, "add", "-N", "later.py")  # intent to add: an index entry that is not committed
    git(clone, "update-index", "--index-version", str(index_version))
    for key, value in (("core.fsmonitor", script), ("core.hooksPath", tmp_path), ("core.sshCommand", script),
                       ("diff.external", script), ("core.pager", script)):
        git(clone, "config", key, str(value))
    for hook in ("post-checkout", "post-index-change", "reference-transaction"):
        os.symlink(script, tmp_path / hook)
    return clone, marker


@pytest.mark.parametrize("index_version", [2, 3, 4])
def test_a_clone_whose_git_config_runs_commands_is_read_without_running_git(tmp_path, monkeypatch, index_version):
    """`--local` ran `git ls-files` and `git symbolic-ref` in the scraped tree, and its config's core.fsmonitor ran
    as the user. Now the commit, the branch and the committed files are read from .git's files."""
    clone, marker = booby_trapped_clone(tmp_path, index_version)
    head, expected = git(clone, "rev-parse", "HEAD"), committed_blobs(clone)
    marker.unlink(missing_ok=True)  # building the fixture with git may already have run it
    shim = tmp_path / "bin"
    shim.mkdir()
    real_git = shutil.which("git")
    (shim / "git").write_text(f"#!/bin/sh\necho \"git $*\" >> {marker}\nexec {real_git} \"$@\"\n")  # any git: fails
    (shim / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")

    out = tmp_path / "dl"
    assert scrape_github.main(["--local", f"{clone}=acme/trapped", "-o", str(out), "-q"]) == 0
    assert not marker.exists(), marker.read_text()
    [entry] = manifest(out)
    assert entry["commit_sha"] == head and entry["default_branch"] == "feature/x"
    top = f"acme-trapped-{head[:7]}/"
    assert members(out / "acme__trapped.zip") == [top] + [top + name for name in expected]
    assert "later.py" not in expected and "alias.py" not in expected and "run.sh" in expected


def write_index(path: Path, names: list[str]) -> None:
    """A version-2 `.git/index` listing `names` as regular files (what a hostile tree may hold instead of git's)."""
    import struct

    body = b"DIRC" + struct.pack(">II", 2, len(names))
    for name in sorted(n.encode() for n in names):
        entry = struct.pack(">10I", 0, 0, 0, 0, 0, 0, 0o100644, 0, 0, 0) + bytes(20)
        entry += struct.pack(">H", min(len(name), 0xFFF)) + name
        body += entry + b"\0" * (8 - len(entry) % 8)
    path.write_bytes(body + hashlib.sha1(body).digest())


def test_a_hostile_index_cannot_pack_files_from_outside_the_tree(tmp_path):
    """The index is the scraped tree's own file: its paths may climb out, go through a linked folder or name .git."""
    secret = tmp_path / "home"
    secret.mkdir()
    (secret / "id_rsa").write_text("PRIVATE KEY\n")
    clone = tmp_path / "clone"
    (clone / "pkg").mkdir(parents=True)
    (clone / "pkg" / "ok.py").write_text("import triton\n")
    git(clone, "init", "-q", "-b", "main")
    git(clone, "add", ".")
    git(clone, "commit", "-q", "-m", "first")
    os.symlink(secret, clone / "linked")
    write_index(clone / ".git" / "index", ["../home/id_rsa", "linked/id_rsa", ".git/config", "pkg/ok.py",
                                           "pkg/\x1b[2Jclear.py"])
    (clone / "pkg" / "\x1b[2Jclear.py").write_text("x = 1\n")
    out = tmp_path / "dl"
    assert scrape_github.main(["--local", f"{clone}=acme/clone", "-o", str(out), "-q"]) == 0
    top = f"acme-clone-{git(clone, 'rev-parse', 'HEAD')[:7]}/"
    assert members(out / "acme__clone.zip") == [top, f"{top}pkg/ok.py"]


def test_a_folder_is_walked_without_git_and_odd_names_are_left_out(tmp_path, capsys):
    """A plain folder (here inside a git work tree) is walked: every file but caches, links and names with control
    characters, which would reach terminals as escape sequences."""
    outer = tmp_path / "outer"
    folder = outer / "tree"
    (folder / "sub").mkdir(parents=True)
    git(outer, "init", "-q")
    (folder / "k.py").write_text("import triton\n")
    (folder / "sub" / "u.py").write_text("x = 1\n")
    (folder / "sub" / "notes.log").write_text("kept: the folder is walked\n")
    (folder / "\x1b]0;owned\x07.py").write_text("y = 2\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "k.cpython-311.pyc").write_bytes(b"\0")
    out = tmp_path / "dl"
    assert scrape_github.main(["--local", str(folder), "-o", str(out)]) == 0
    top = "local-tree-nocommit/"
    assert members(out / "local__tree.zip") == [top, f"{top}k.py", f"{top}sub/notes.log", f"{top}sub/u.py"]
    assert "\x1b" not in capsys.readouterr().err


def test_git_files_that_are_fifos_or_links_are_not_read(tmp_path):
    """A scraped `.git/HEAD` that is a FIFO held `--local` forever; a LICENSE linking to a file outside the tree
    named the tree's license after that file."""
    import threading

    clone = tmp_path / "clone"
    (clone / ".git").mkdir(parents=True)
    (clone / "k.py").write_text("import triton\n")
    os.mkfifo(clone / ".git" / "HEAD")
    outside = tmp_path / "someone-elses-LICENSE"
    outside.write_bytes((EXAMPLES / "lumen-ai/fastnorm/LICENSE").read_bytes())
    os.symlink(outside, clone / "LICENSE")
    out, result = tmp_path / "dl", {}
    worker = threading.Thread(target=lambda: result.update(
        status=scrape_github.main(["--local", f"{clone}=acme/fifo", "-o", str(out), "-q"])), daemon=True)
    worker.start()
    worker.join(10)
    blocked = worker.is_alive()
    if blocked:
        with open(clone / ".git" / "HEAD", "w"):  # let the blocked reader go
            pass
        worker.join(20)
    assert not blocked, "blocked reading .git/HEAD"
    assert result["status"] == 0
    [entry] = manifest(out)
    assert entry["commit_sha"] is None and entry["license"] is None
    assert members(out / "acme__fifo.zip") == ["acme-fifo-nocommit/", "acme-fifo-nocommit/k.py"]
