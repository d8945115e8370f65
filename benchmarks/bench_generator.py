#!/usr/bin/env python
"""Benchmark of the generator (scraper/generator) on real repositories: recall, self-contained rate, launchers, speed.

    python benchmarks/bench_generator.py            # corpus of benchmarks/third_party/corpus + torch's own Triton files
    pip download --no-deps flag-gems==5.0.2 sglang==0.5.23 -d /work/gen_corpus     # outside the repository
    python benchmarks/bench_generator.py --wheel /work/gen_corpus/flag_gems-5.0.2-py3-none-any.whl \
        --wheel /work/gen_corpus/sglang-0.5.23-*.whl                              # each wheel: one more corpus

Builds one zip per repository in GitHub's zipball layout in a temporary folder, then measures, in the same run:
- floor: read every .py of every archive and ast.parse those that mention triton (one process);
- the generator end to end (scraper.generator.run.run, --jobs = cores, and --jobs 1), output to a temp folder;
- recall against an independent count: this script's own AST walk (decorators spelled `<triton alias>.jit`,
  `<jit alias>` or a call of those, aliases read from the file's imports; a regex for files 3.11 cannot parse);
- the share of extracted kernels that pass the static self-contained check;
- launchers: kernels with a launcher, helpers, gluon kernels, and how many of the kernels some file launches
  directly by name (`name[...](`, `name.run(`: a regex count, blind to aliases and wrappers) got a launcher.
Each `--wheel` (a wheel or sdist zip of another project) is a corpus of its own, measured the same way.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import resource
import sys
import tempfile
import time
import warnings
import zipfile
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from scraper.cli import default_jobs  # noqa: E402
from scraper.generator.run import run  # noqa: E402
from scraper.records import read_records  # noqa: E402

CORPUS = REPO_ROOT / "benchmarks" / "third_party" / "corpus"
_REGEX_KERNEL = re.compile(r"^[ \t]*@[ \t]*(?:\w+\.)*jit\b[^\n]*\n(?:[ \t]*@[^\n]*\n)*[ \t]*def[ \t]+(\w+)", re.M)


def build_archives(dest: Path, with_torch: bool) -> list[Path]:
    """One zipball per corpus folder (and one of the installed torch's Triton files)."""
    archives = []
    for folder in sorted(p for p in CORPUS.iterdir() if p.is_dir()):
        archives.append(_zip_tree(folder, sorted(folder.rglob("*")), dest / f"{folder.name}.zip"))
    if with_torch:
        import importlib.util

        torch_dir = Path(importlib.util.find_spec("torch").origin).parent
        files = [p for p in torch_dir.rglob("*.py") if "triton" in p.read_text(errors="replace")]
        archives.append(_zip_tree(torch_dir.parent, files, dest / "pytorch__pytorch.zip"))
    return archives


def _zip_tree(root: Path, files: list[Path], target: Path) -> Path:
    top = target.stem.replace("__", "-") + "-0000000"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, f"{top}/{path.relative_to(root).as_posix()}")
    return target


def iter_sources(archives: list[Path]):
    """(archive name, path in repo, text) of every .py of every archive."""
    for archive_path in archives:
        with zipfile.ZipFile(archive_path) as archive:
            for name in archive.namelist():
                if name.endswith(".py"):
                    yield archive_path.name, name.split("/", 1)[1], archive.read(name).decode("utf-8", "replace")


def floor(archives: list[Path]) -> float:
    """Seconds to read every .py and ast.parse those mentioning triton."""
    return timed(_floor, archives)[0]


def timed(function, *args) -> tuple:
    """(wall seconds, CPU seconds of this process and its finished children, result) of function(*args): the
    CPU figure is what a machine shared with other jobs changes least."""
    start, cpu = time.perf_counter(), _cpu()
    result = function(*args)
    return time.perf_counter() - start, _cpu() - cpu, result


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _floor(archives: list[Path]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _, _, text in iter_sources(archives):
            if "triton" in text:
                try:
                    ast.parse(text)
                except SyntaxError:
                    pass


def oracle_kernels(archives: list[Path]) -> tuple[Counter, int]:
    """Independent count: Counter of (archive, path, function name) of jit functions; files counted by regex."""
    found, by_regex = Counter(), 0
    for archive, path, text in iter_sources(archives):
        if "jit" not in text:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(text)
        except (SyntaxError, ValueError):
            by_regex += 1
            found.update((archive, path, name) for name in _REGEX_KERNEL.findall(text))
            continue
        spellings = _jit_spellings(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                decorators = [d.func if isinstance(d, ast.Call) else d for d in node.decorator_list]
                if any(ast.unparse(d) in spellings for d in decorators):
                    found[(archive, path, node.name)] += 1
    return found, by_regex


def _jit_spellings(tree: ast.AST) -> set:
    """Texts a jit decorator can have in this file: triton.jit, <alias>.jit, a name imported from triton,
    gluon.jit (`from triton.experimental import gluon`)."""
    spellings = {"triton.jit"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            spellings |= {f"{a.asname}.jit" for a in node.names if a.name == "triton" and a.asname}
        if isinstance(node, ast.ImportFrom) and node.module == "triton.experimental":
            spellings |= {f"{a.asname or a.name}.jit" for a in node.names if a.name == "gluon"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("triton"):
            spellings |= {a.asname or a.name for a in node.names if a.name == "jit"}
        elif isinstance(node, ast.Assign) and ast.unparse(node.value) in spellings and len(node.targets) == 1:
            spellings.add(ast.unparse(node.targets[0]))
    return spellings


def wheel_archive(wheel: Path, dest: Path) -> Path:
    """A wheel (or any zip of a project) re-packed in zipball layout, .py files only, without *.dist-info."""
    name = wheel.name.split("-")[0]
    target = dest / f"pypi__{name}.zip"
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry in source.namelist():
            if entry.endswith(".py") and ".dist-info/" not in entry:
                archive.writestr(f"pypi-{name}-0000000/{entry}", source.read(entry))
    return target


def direct_launches(archives: list[Path], names: set) -> set:
    """(archive, kernel name) for the names some file of the archive launches directly: `name[...](` or
    `name.run(` (an independent regex count, blind to aliases, module attributes and wrappers)."""
    launch = re.compile(r"\b(\w+)(?:\[[^\]\n]*\]\s*\(|\.run\s*\()")
    found = set()
    for archive, _, text in iter_sources(archives):
        found.update((archive, name) for name in launch.findall(text) if name in names)
    return found


def timed_run(archives, out_dir: Path, jobs: int) -> tuple[float, float, object]:
    return timed(run, archives, out_dir, {}, jobs, True)


def measure(label: str, archives: list[Path], tmp: Path, args) -> None:
    """Time floor and generator in the same run (best of --repeat) and print every figure for one corpus."""
    floors, parallel, single = [], [], []
    for attempt in range(args.repeat):
        floors.append(timed(_floor, archives)[:2])
        seconds, cpu, stats = timed_run(archives, tmp / f"{label}-out{attempt}", args.jobs)
        parallel.append((seconds, cpu))
        if not args.no_single:
            single.append(timed_run(archives, tmp / f"{label}-single{attempt}", 1)[0])
    records = read_records(tmp / f"{label}-out0" / "kernels.jsonl")
    oracle, by_regex = oracle_kernels(archives)
    generated = Counter((r.extra["archive"], r.path, r.name) for r in records)
    matched = sum((oracle & generated).values())
    counts = stats.counts
    print(f"== {label}")
    print(f"archives: {len(archives)}  .py files: {counts['files_read']}  mention triton: "
          f"{counts['files_mention_triton']}  salvaged: {counts.get('files_salvaged', 0)}")
    print(f"recall: {matched}/{sum(oracle.values())} = {matched / max(1, sum(oracle.values())):.2%} "
          f"of the independent AST count ({by_regex} files counted by regex); generator found "
          f"{counts['kernels_found']}, {sum((generated - oracle).values())} beyond the oracle's spellings")
    extracted = counts["kernels_extracted"]
    print(f"self-contained: {counts.get('kernels_self_contained', 0)}/{extracted} = "
          f"{counts.get('kernels_self_contained', 0) / max(1, extracted):.2%}")
    reasons = {k: v for k, v in sorted(counts.items()) if k.startswith("not_self_contained_")}
    print(f"  not self-contained by reason: {json.dumps(reasons)}")
    print_launchers(records, archives)
    best_floor, best_parallel = min(w for w, _ in floors), min(w for w, _ in parallel)
    floor_cpu, parallel_cpu = min(c for _, c in floors), min(c for _, c in parallel)
    print(f"floor (read all .py, ast.parse those mentioning triton): {best_floor:.2f} s")
    print(f"generator --jobs {args.jobs}: {best_parallel:.2f} s = {best_parallel / best_floor:.2f}x floor")
    print(f"CPU time, all processes: floor {floor_cpu:.2f} s, generator {parallel_cpu:.2f} s = "
          f"{parallel_cpu / floor_cpu:.2f}x (over {args.jobs} processes: {parallel_cpu / args.jobs / floor_cpu:.2f}x)")
    if single:
        print(f"generator --jobs 1: {min(single):.2f} s = {min(single) / best_floor:.2f}x floor")


def print_launchers(records: list, archives: list[Path]) -> None:
    """Launchers, roles and dialects of the records, and the direct launches the generator missed."""
    launched = {(r.extra["archive"], r.name) for r in records if r.launcher}
    direct = direct_launches(archives, {r.name for r in records})
    kernels = sum(1 for r in records if r.role == "kernel")
    with_launcher = sum(1 for r in records if r.launcher)
    launcher_ok = sum(1 for r in records if r.launcher and r.launcher["self_contained"])
    print(f"launchers: {with_launcher}/{len(records)} kernels have one ({launcher_ok} self-contained); "
          f"role kernel {kernels}, helper {len(records) - kernels}; gluon {sum(r.dialect == 'gluon' for r in records)}")
    print(f"  directly launched by name (regex): {len(direct)}, with a launcher: {len(direct & launched)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timings are the best of N runs (default 3)")
    parser.add_argument("--no-torch", action="store_true", help="leave out the installed torch's Triton files")
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="generator worker processes")
    parser.add_argument("--no-single", action="store_true", help="skip the --jobs 1 timing")
    parser.add_argument("--no-corpus", action="store_true", help="skip the bundled corpus (only the wheels)")
    parser.add_argument("--wheel", type=Path, action="append", default=[],
                        help="a downloaded wheel or zip of another project: one more corpus (repeatable)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.no_corpus:
            measure("corpus", build_archives(tmp, not args.no_torch), tmp, args)
        if args.wheel:
            measure("wheels", [wheel_archive(wheel, tmp) for wheel in args.wheel], tmp, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
