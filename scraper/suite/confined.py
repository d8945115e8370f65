"""--suite modules behind the wall: each worker (scraper/worker/, or a --worker script) runs in a
bubblewrap sandbox (scraper.sandbox) that sees the Python installation, the module's source (read-only, at /src)
and one private job folder (/job, read-write), nothing of --out, the checkout or $HOME. Each of its processes may
map --worker-memory-mb and write no file larger than --worker-disk-mb; its /tmp is a 4 GiB tmpfs. What it leaves
in /job is made safe (`scraper.sandbox.take_out`), and checked against its bound (--worker-disk-mb, 50,000
entries, 32 levels: over it, nothing is kept and the job fails), then moved to its place by the orchestrator: the
program, the result and the debug run folder, renamed after the sandbox's host pid (inside, every worker is pid 2).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from pathlib import Path
from typing import Optional

from scraper.sandbox import Wall, Walled, gpu_devices, launch
from scraper.sandbox.folders import Bounds
from scraper.sandbox.inside import CODE_ROOT

DEFAULT_MEMORY_MB = 8192  # what each process of a worker may map (--worker-memory-mb)
DEFAULT_DISK_MB = 2048  # what its job folder may hold, and its largest file (--worker-disk-mb)
# The worker's folder, shipped whole (with the shared modules it imports, followed statically).
SUITE_WALL = Wall("suite", ("scraper/sandbox/inside.py", "scraper/worker/"), max_processes=4096, scratch_mb=4096,
                  memory_mb=DEFAULT_MEMORY_MB, file_mb=DEFAULT_DISK_MB)
JOB = "/job"
INSIDE = {"out": f"{JOB}/debug", "program": f"{JOB}/program.py", "result": f"{JOB}/result.json",
          "problem": f"{JOB}/problem.py", "pairing": f"{JOB}/pairing.json", "job": f"{JOB}/job.json"}
CUSTOM_WORKER = f"{CODE_ROOT}/custom_worker.py"
_RUN_DIR = re.compile(r"run_[A-Za-z0-9_.-]+$")


def source_inside(source: Optional[Path]) -> Optional[str]:
    """Where the module's source file appears in the sandbox."""
    return None if source is None else f"/src/{Path(source).name}"


def worker_command(custom: Optional[Path]) -> list[str]:
    """The worker as launched inside: the real one as a module, or the --worker script copied in."""
    return [CUSTOM_WORKER] if custom else ["-m", "scraper.worker"]


def suite_wall(memory_mb: int, disk_mb: int, gpu: Optional[str]) -> Wall:
    """SUITE_WALL with these bounds per process: `memory_mb` as RLIMIT_AS, or as RLIMIT_DATA with a GPU (CUDA
    reserves address space far beyond what it uses: an address-space limit would stop CUDA itself), `disk_mb` as
    the largest file (RLIMIT_FSIZE)."""
    return dataclasses.replace(SUITE_WALL, memory_mb=memory_mb, file_mb=disk_mb,
                               memory_limit="data" if gpu is not None else "as")


def job_bounds(disk_mb: int) -> Bounds:
    """What a job folder may hold when the worker is gone: `disk_mb` of files, at most 50,000 entries and 32
    levels (a debug run folder holds a few hundred files, 6 levels deep)."""
    return Bounds(bytes=disk_mb * 1024 * 1024)


def start(command: list[str], env: dict, folder: Path, source: Optional[Path], custom: Optional[Path],
          gpu: Optional[str], log_file, wall: Wall = SUITE_WALL) -> Walled:
    """Launch one worker behind `wall`: `folder` as /job, the source and a custom worker copied in, and, with a
    GPU slot, the NVIDIA devices; stdout and stderr to `log_file`."""
    files = {}
    if source is not None and Path(source).is_file():  # else the worker cannot read it: its failure, recorded
        files[source_inside(source)] = str(source)
    if custom is not None:
        files[CUSTOM_WORKER] = str(custom)
    return launch(wall, command, env=env, binds={str(folder): JOB}, files=files,
                  devices=gpu_devices() if gpu is not None else (), stdout=log_file, stderr=subprocess.STDOUT,
                  start_new_session=True)


SERVE = ["-m", "scraper.worker.serve", "--walled"]
SOURCES = "/tmp/src"  # a persistent walled worker's module sources: on its own tmpfs, sent in each job


def start_server(env: dict, folder: Path, gpu: Optional[str], log_file, wall: Wall) -> Walled:
    """Launch a persistent worker (scraper.worker.serve --walled) behind `wall`: `folder` as /job, jobs on its
    stdin, answers and the files each model made on its stdout, everything it prints to `log_file`."""
    return launch(wall, SERVE, env=env, binds={str(folder): JOB}, devices=gpu_devices() if gpu is not None else (),
                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, start_new_session=True)


def served_source(source: Optional[Path]) -> Optional[str]:
    """Where a persistent walled worker writes the module's source."""
    return None if source is None else f"{SOURCES}/{Path(source).name}"


def move_out(folder: Path, paths: dict[str, Path], debug_root: Path, pid: int) -> Optional[Path]:
    """Move the program, the result, the problem and the pairing record from a made-safe job folder to their
    places and the debug run folder into `debug_root` as run_<...>-pid_<pid>; returns that folder (None when the
    worker made none)."""
    for name in ("program", "result", "problem", "pairing"):
        made = folder / Path(INSIDE[name]).name
        if made.is_file():
            os.replace(made, paths[name])
    debug = folder / "debug"
    runs = sorted(p for p in debug.iterdir() if p.is_dir() and _RUN_DIR.match(p.name)) if debug.is_dir() else []
    if not runs:
        return None
    stem = re.sub(r"-pid_\d+$", "", runs[-1].name)
    target = debug_root / f"{stem}-pid_{pid}"
    number = 1
    while target.exists():  # a folder of an earlier run whose worker had the same pid
        target = debug_root / f"{stem}.{number}-pid_{pid}"
        number += 1
    os.replace(runs[-1], target)
    return target
