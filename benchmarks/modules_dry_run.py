"""The --suite modules CPU dry run over a folder of repositories, and its figures: the share of candidates that
build and run, failures by phase and by first error line, and the same share among the classes paritybench
itself could run (its generated tests' TESTCASES) and among the others.

    # the repositories of benchmarks/ordinary_repos.txt, as .py-only zipballs + manifest.jsonl, from bare git
    # mirrors named owner+name (the `fetch` tool's /work/.mirror/owner+name/repo)
    python benchmarks/modules_dry_run.py pack /work/.mirror /work/ordinary/repos

    # the dry run (TRITON_INTERPRET=1, --device cpu --backend none, 2 workers, behind the wall), then the figures;
    # --code COMMIT runs that commit's suite (git archive into a temporary folder) instead of this checkout's
    python benchmarks/modules_dry_run.py run /work/ordinary/repos -o /work/ordinary/before --code main \\
        --per-repo 12 --paritybench /work/ordinary/pb/generated
    python benchmarks/modules_dry_run.py run /work/ordinary/repos -o /work/ordinary/after \\
        --models-from /work/ordinary/before --paritybench /work/ordinary/pb/generated

    python benchmarks/modules_dry_run.py summary -o /work/ordinary/after --paritybench ...   # figures only

`--models-from` runs exactly the modules an earlier run's manifest lists, so before and after share their
candidates whatever the listing does.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
REPOS_LIST = REPO_ROOT / "benchmarks" / "ordinary_repos.txt"
TOP_ERRORS = 5  # first error lines shown per phase
NEEDS_CUDA = r"not compiled with CUDA|0 active drivers|[Oo]nly support CUDA|[Nn]o CUDA GPUs|no NVIDIA driver"


# ------------------------------------------------------------------------------------------ pack


def read_list(path: Path) -> list[tuple[str, str]]:
    """(owner/name, commit) of each line of a repository list; `#` comments."""
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            full_name, commit = line.split()
            pairs.append((full_name, commit))
    return pairs


def git_dir(mirrors: Path, full_name: str) -> Path:
    """The bare git directory of a mirror (`owner+name/repo`, or its `.git` when it is a clone)."""
    repo = mirrors / full_name.replace("/", "+", 1) / "repo"
    return repo / ".git" if (repo / ".git").is_dir() else repo


def pack_one(git: Path, full_name: str, commit: str, out: Path) -> dict:
    """`owner__name.zip` of the .py files at `commit`, under a zipball's top folder; its manifest line. Blobs are
    read one by one (a mirror may lack its large data files: `git archive` would stop at the first)."""
    owner, name = full_name.split("/", 1)
    archive = out / f"{owner}__{name}.zip"
    top = f"{owner}-{name}-{commit[:7]}"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for blob, path in python_blobs(git, commit):
            text = subprocess.run(["git", "--git-dir", str(git), "cat-file", "blob", blob], capture_output=True,
                                  check=True).stdout
            z.writestr(f"{top}/{path}", text)
    return {"full_name": full_name, "commit_sha": commit, "archive": archive.name, "origin": "github"}


def python_blobs(git: Path, commit: str) -> list[tuple[str, str]]:
    """(blob id, path) of every .py file of the tree at `commit`."""
    listing = subprocess.run(["git", "--git-dir", str(git), "ls-tree", "-r", "-z", commit], capture_output=True,
                             check=True).stdout.decode("utf-8", "replace")
    blobs = []
    for item in filter(None, listing.split("\0")):
        meta, path = item.split("\t", 1)
        mode, kind, blob = meta.split()
        if kind == "blob" and path.endswith(".py") and mode != "120000":
            blobs.append((blob, path))
    return blobs


def pack(args) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [pack_one(git_dir(args.mirrors, full_name), full_name, commit, args.out)
             for full_name, commit in read_list(args.list)]
    (args.out / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    print(f"{len(lines)} repositories in {args.out}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------ run


def checkout(commit: str, into: Path) -> Path:
    """The files of `commit` (git archive of this repository) under `into`."""
    data = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", commit], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def models_of(folder: Path) -> list[str]:
    """The module names an earlier run's manifests list, in order."""
    names = {entry["model"]: None for entry in manifest_entries(folder)}
    return list(names)


def suite_command(code: Path, args) -> list[str]:
    command = [sys.executable, str(code / "run_inductor_suite.py"), "--suite", "modules", "--repos",
               str(args.repos.resolve()), "-o", str(args.out.resolve()), "--gpus", "none", "--device", "cpu",
               "--backend", "none", "--workers-per-gpu", str(args.workers), "--timeout", str(args.timeout), "-q",
               "--keep-going"]
    if args.models_from:
        command += ["--models", ",".join(models_of(args.models_from))]
    elif args.per_repo:
        command += ["--per-repo", str(args.per_repo)]
    return command


def run(args) -> int:
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONUNBUFFERED="1")
    with tempfile.TemporaryDirectory() as scratch:
        code = checkout(args.code, Path(scratch)) if args.code else REPO_ROOT
        args.out.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(args.out / "dry_run.log", "w", encoding="utf-8") as log:  # the suite's own messages
            done = subprocess.run(suite_command(code, args), cwd=code, env={**env, "PYTHONPATH": str(code)},
                                  stdout=log, stderr=subprocess.STDOUT)
        seconds = time.monotonic() - started
    print(f"suite exit status {done.returncode} after {seconds:.0f} s (code: {args.code or 'this checkout'}; "
          f"its messages in {args.out / 'dry_run.log'})")
    return summary(args)


# ------------------------------------------------------------------------------------------ figures


def manifest_entries(folder: Path) -> list[dict]:
    """The latest manifest line of each module of a suite output folder (every shard's manifest)."""
    latest = {}
    for path in sorted((folder / "suite").glob("manifest*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                latest[entry["model"]] = entry
    return list(latest.values())


def paritybench_classes(generated: Path, full_name: str) -> set[str]:
    """The classes of TESTCASES in paritybench's generated test of a repository (named as its crawler names
    archives: every run of other characters one `_`)."""
    test = generated / f"test_{re.sub(r'[^a-zA-Z0-9]+', '_', full_name)}.py"
    if not test.is_file():
        return set()
    text = test.read_text(encoding="utf-8", errors="replace")
    cases = text.split("\nTESTCASES = [", 1)[-1] if "\nTESTCASES = [" in text else ""
    return set(re.findall(r"^    \((\w+),$", cases, flags=re.M))


def outcome(entry: dict) -> str:
    """ok | skipped | the failed phase (a crash or a timeout by its status)."""
    if entry["status"] in ("ok", "skipped"):
        return entry["status"]
    return entry["status"] if entry["status"] in ("crashed", "timeout") else entry.get("phase") or "unknown"


def first_line(entry: dict) -> str:
    """The error's first line with its numbers as N, so alike errors group."""
    text = (entry.get("error") or "").splitlines()[0] if entry.get("error") else entry["status"]
    return re.sub(r"\d+", "N", text)[:110]


def share(part: int, whole: int) -> str:
    return f"{part}/{whole} = {100 * part / whole:.1f}%" if whole else f"{part}/0"


def summary(args) -> int:
    entries = manifest_entries(args.out)
    outcomes = Counter(outcome(entry) for entry in entries)
    ran = [entry for entry in entries if outcome(entry) != "skipped"]
    print(f"candidates {len(entries)}, skipped {outcomes['skipped']}, run {len(ran)}, "
          f"ran ok {share(outcomes['ok'], len(ran))}")
    skips = Counter(entry.get("skip_reason") or "" for entry in entries if outcome(entry) == "skipped")
    if skips:
        print("  skipped: " + ", ".join(f"{reason} {n}" for reason, n in skips.most_common()))
    failed = Counter({name: n for name, n in outcomes.items() if name not in ("ok", "skipped")})
    print("  failures by phase: " + ", ".join(f"{name} {n}" for name, n in failed.most_common()))
    cuda = sum(1 for entry in ran if outcome(entry) != "ok" and re.search(NEEDS_CUDA, entry.get("error") or ""))
    print(f"  failures only for want of CUDA (a GPU run may pass them): {cuda}")
    for name, _ in failed.most_common():
        errors = Counter(first_line(entry) for entry in ran if outcome(entry) == name)
        for error, n in errors.most_common(TOP_ERRORS):
            print(f"    {name:8} {n:3}  {error}")
    if args.paritybench:
        split_by_paritybench(ran, args.paritybench)
    return 0


def split_by_paritybench(ran: list[dict], generated: Path) -> None:
    """The share that ran among the classes paritybench ran and among the others (non-skipped candidates)."""
    known: dict[str, set] = {}
    groups = {True: Counter(), False: Counter()}
    for entry in ran:
        repo = entry["module"]["repo"]
        if repo not in known:
            known[repo] = paritybench_classes(generated, repo)
        group = groups[entry["module"]["class_name"] in known[repo]]
        group["all"] += 1
        group["ok"] += outcome(entry) == "ok"
    print(f"  classes paritybench ran: {share(groups[True]['ok'], groups[True]['all'])}; "
          f"the others: {share(groups[False]['ok'], groups[False]['all'])}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="zip the listed repositories from git mirrors")
    packing.add_argument("mirrors", type=Path, help="folder of owner+name/repo git mirrors")
    packing.add_argument("out", type=Path, help="folder the zips and manifest.jsonl go to")
    packing.add_argument("--list", type=Path, default=REPOS_LIST, help="repositories and commits")
    running = commands.add_parser("run", help="the dry run, then its figures")
    running.add_argument("repos", type=Path, help="folder of repository zips (+ manifest.jsonl)")
    running.add_argument("--code", help="commit whose suite runs (default: this checkout)")
    running.add_argument("--per-repo", type=int, default=0, help="at most N candidates per repository")
    running.add_argument("--models-from", type=Path, help="exactly the modules of this earlier run's folder")
    running.add_argument("--workers", type=int, default=2)
    running.add_argument("--timeout", type=int, default=120, help="seconds per module")
    figures = commands.add_parser("summary", help="the figures of an earlier run")
    for sub in (running, figures):
        sub.add_argument("-o", "--out", type=Path, required=True, help="the suite's output folder")
        sub.add_argument("--paritybench", type=Path, help="paritybench's generated/ folder (its TESTCASES)")
    args = parser.parse_args(argv)
    return {"pack": pack, "run": run, "summary": summary}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
