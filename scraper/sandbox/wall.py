"""The host side of the wall: start a worker process inside a bubblewrap (bwrap) sandbox.

The sandbox has its own user, PID, network, IPC, UTS and cgroup namespaces (no network at all, no other process
visible), no capabilities, no way to make user namespaces, a process-count limit, and a file system of:
  /usr, /lib* (read-only: the system and its C libraries), /etc/ld.so.*, /etc/alternatives, /etc/localtime;
  the Python installation and its site-packages, read-only, at their own paths (never the checkout or a folder
  above it: a venv made at the checkout's root is shown as its bin/, lib/, include/ and pyvenv.cfg);
  CODE_ROOT: copies of the few pipeline modules the worker imports (read-only; packages with empty __init__);
  /tmp (and /dev/shm): a fresh tmpfs, the only writable places, plus what the caller binds (a job folder);
  /proc of its own PID namespace, a minimal /dev (null, zero, random, ...) and the GPU devices asked for.
No $HOME, no project checkout, no /sys, no /etc/passwd or /etc/shadow. The launching process keeps the host PID of
the sandbox's init: killing it ends every process in the sandbox, however they forked (`Walled.kill`).

bwrap is found through TRITON_DATA_BWRAP (a path, e.g. a bwrap unpacked from the Debian package), else PATH.
"""

from __future__ import annotations

import ast
import functools
import json
import logging
import os
import re
import select
import shutil
import signal
import site
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional

from scraper.paths import PACKAGE_PARENT
from scraper.sandbox.inside import BOOT, CODE_ROOT, PATH_ENV, SANDBOX_ID, WALL_ENV

log = logging.getLogger(__name__)

BWRAP_ENV = "TRITON_DATA_BWRAP"
SCRATCH = "/tmp"
# The uid/gid the sandbox user has on the host when the pipeline runs as root (then the launcher writes the ID
# maps itself): one no account uses, far above the usual subordinate-ID ranges.
OUTSIDE_ID = 0x7FFF0000
START_TIMEOUT = 30.0  # seconds bwrap may take to report its sandbox started
_SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime")
_NVIDIA_DEVICE = re.compile(r"nvidia(ctl|-uvm|\d+)$")  # what CUDA opens (not -modeset, -uvm-tools)


class SandboxUnavailable(RuntimeError):
    """bwrap is missing or cannot make a sandbox here (no user namespaces)."""


@dataclass(frozen=True)
class Wall:
    """One kind of sandboxed worker: the repository files it imports (shown read-only under CODE_ROOT), how many
    processes (threads included) it may have, the size of its /tmp (its /dev/shm: a quarter of it), and, for
    each of its processes, the memory it may map (`memory_mb`, as RLIMIT_AS, or RLIMIT_DATA with
    `memory_limit="data"`: CUDA reserves address space far beyond what it uses) and the largest file it may
    write (`file_mb`, RLIMIT_FSIZE; its log included); 0: no such bound."""

    name: str
    modules: tuple[str, ...]
    max_processes: int
    scratch_mb: int
    memory_mb: int = 0
    memory_limit: str = "as"
    file_mb: int = 0

    def limits(self) -> str:
        """The limits argument of inside.main: `nproc=N,as=BYTES,fsize=BYTES` (0: none)."""
        memory = self.memory_mb * 1024 * 1024
        return f"nproc={self.max_processes},{self.memory_limit}={memory},fsize={self.file_mb * 1024 * 1024}"


PROBE_WALL = Wall("probe", ("scraper/sandbox/inside.py",), max_processes=16, scratch_mb=16)


def find_bwrap() -> str:
    """The bwrap executable: $TRITON_DATA_BWRAP, else `bwrap` on PATH; SandboxUnavailable when neither works."""
    configured = os.environ.get(BWRAP_ENV)
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise SandboxUnavailable(f"{BWRAP_ENV}={configured} is not an executable file")
        return configured
    found = shutil.which("bwrap")
    if found is None:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed (apt-get install bubblewrap) and "
                                 f"{BWRAP_ENV} is not set")
    return found


_PROBED: dict[tuple, Optional[str]] = {}  # (bwrap, euid) -> None when a sandbox works, else why not


def check_wall() -> None:
    """Start one tiny sandbox (once per process and bwrap) and check it from inside: the sandbox user, no
    capabilities, only a loopback interface. SandboxUnavailable with the reason when that fails."""
    key = (find_bwrap(), os.geteuid())
    if key not in _PROBED:
        _PROBED[key] = _probe()
    if _PROBED[key]:
        raise SandboxUnavailable(_PROBED[key])


def _probe() -> Optional[str]:
    """None when a probe sandbox works, else the reason."""
    try:
        walled = launch(PROBE_WALL, ["--describe"], env={"PATH": "/usr/bin:/bin"},
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except (SandboxUnavailable, OSError) as exc:
        return str(exc)
    try:
        out, err = walled.proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        walled.kill()
        return "the probe sandbox did not finish in 60 s"
    last = (err.decode(errors="replace").strip().splitlines() or [""])[-1]
    try:
        inside = json.loads(out)
    except ValueError:
        return f"bwrap could not start a sandbox (exit status {walled.proc.returncode}): {last}"
    if inside["uid"] != SANDBOX_ID or any(inside["capabilities"].values()) or inside["interfaces"] != ["lo"]:
        return f"the probe sandbox is not confined as expected: {inside}"
    return None


def require_wall(unsafe_no_sandbox: bool = False) -> bool:
    """True when scraped code can run behind the wall. With `unsafe_no_sandbox` (the user's explicit
    --unsafe-no-sandbox), False and a warning; otherwise SandboxUnavailable with what to do."""
    if unsafe_no_sandbox:
        log.warning("--unsafe-no-sandbox: scraped code runs WITHOUT the bubblewrap sandbox (only rlimits, "
                    "Landlock, seccomp and an audit hook inside the worker): it can read your files")
        return False
    try:
        bwrap = find_bwrap()
    except SandboxUnavailable as exc:
        raise SandboxUnavailable(
            f"scraped code runs only inside a bubblewrap sandbox, and none can be made here: {exc}. Install "
            f"it (apt-get install bubblewrap; `make install` does it as root), point {BWRAP_ENV} at a bwrap "
            "binary, or pass --unsafe-no-sandbox to run it without the wall (it could then read your files)"
        ) from None
    try:
        check_wall()
    except SandboxUnavailable as exc:  # bwrap is there: say what stopped it, not to install it
        raise SandboxUnavailable(
            f"scraped code runs only inside a bubblewrap sandbox, and {bwrap} could not make one here: {exc}. "
            "Fix that cause (user namespaces disabled, a seccomp or AppArmor policy, a container without "
            "them...), or pass --unsafe-no-sandbox to run it without the wall (it could then read your files)"
        ) from None
    return True


# What a prefix (a venv's or an installation's) holds for Python; bound one by one instead of the prefix when the
# prefix holds the checkout (`python -m venv .` in it, or a checkout inside a venv folder).
_PREFIX_PARTS = ("bin", "include", "lib", "lib32", "lib64", "share", "pyvenv.cfg")


def python_paths() -> list[str]:
    """The Python installation: prefixes and site-packages (user site too), outermost first, without any folder
    inside another or inside /usr (bound whole), and never the checkout or a folder above it."""
    return list(_python_paths())


@functools.lru_cache(maxsize=1)
def _python_paths() -> tuple[str, ...]:  # the installation does not move during a run: worked out once
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *site.getsitepackages()}
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        candidates.add(site.getusersitepackages())
    return tuple(installation_paths(candidates, str(PACKAGE_PARENT)))


def installation_paths(candidates: Iterable[str], checkout: str) -> list[str]:
    """The paths to bind for the installation folders `candidates` (and their real paths), outermost first, none
    inside another or inside /usr. A candidate that is the checkout or above it is replaced by its Python parts
    (_PREFIX_PARTS): a venv inside the repository shows the sandbox itself, never the repository's files."""
    checkout = os.path.realpath(checkout)
    found = set()
    for path in candidates:
        found |= {os.path.normpath(path), os.path.realpath(path)}
    parts = set()
    for path in found:
        parts |= set(_prefix_parts(path)) if _holds(path, checkout) else {path}
    kept: list[str] = []
    for path in sorted(p for p in parts if os.path.exists(p) and not _holds(p, checkout)):
        if not any(_holds(k, path) for k in ["/usr", *kept]):
            kept.append(path)
    return kept


def _prefix_parts(prefix: str) -> list[str]:
    """The Python parts of `prefix` there, as real paths (a lib64 -> lib link is then lib)."""
    return [os.path.realpath(os.path.join(prefix, part)) for part in _PREFIX_PARTS
            if os.path.exists(os.path.join(prefix, part))]


def _holds(outer: str, path: str) -> bool:
    """Whether `path` is `outer` or lies inside it."""
    return path == outer or path.startswith(outer.rstrip("/") + "/")


def visible_inside(path: str) -> bool:
    """Whether a host path is one every sandbox shows at the same place, read-only: /usr, the /bin and /lib*
    links or folders, the Python installation."""
    path = os.path.normpath(path)
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in visible_roots())


def visible_roots() -> list[str]:
    """The host folders every sandbox shows at the same place (`visible_inside` is what lies under them)."""
    return ["/usr", *_SYSTEM_LINKS, *python_paths()]


def gpu_devices(dev: str = "/dev") -> list[str]:
    """The NVIDIA device nodes CUDA needs (nvidiactl, nvidia-uvm, nvidiaN, nvidia-caps/* for MIG) present
    under `dev`; [] on a machine without them."""
    found = [os.path.join(dev, name) for name in sorted(os.listdir(dev)) if _NVIDIA_DEVICE.match(name)]
    caps = os.path.join(dev, "nvidia-caps")
    if os.path.isdir(caps):
        found += [os.path.join(caps, name) for name in sorted(os.listdir(caps))]
    return found


def system_args(wall: Wall) -> list[str]:
    """bwrap arguments for the system: /usr, the /lib* and /bin links (or folders), the few /etc files the
    dynamic linker and a C compiler need, /proc, /dev and its /dev/shm tmpfs (a quarter of the scratch's size)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for path in _SYSTEM_LINKS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in _ETC:
        args += ["--ro-bind-try", path, path]
    shm = max(1, wall.scratch_mb // 4) * 1024 * 1024
    return args + ["--proc", "/proc", "--dev", "/dev", "--size", str(shm), "--perms", "1777", "--tmpfs", "/dev/shm"]


def scratch_args(wall: Wall) -> list[str]:
    """The scratch tmpfs (SCRATCH, of wall.scratch_mb), the one writable place besides the caller's binds."""
    return ["--size", str(wall.scratch_mb * 1024 * 1024), "--perms", "1777", "--tmpfs", SCRATCH]


def python_args() -> list[str]:
    """The Python installation, read-only at its own paths. They come after the scratch tmpfs: an interpreter
    or a venv under /tmp is then mounted on top of it instead of hidden by it."""
    args = []
    for path in python_paths():
        args += [*parent_dirs([path]), "--ro-bind", path, path]
    return args


def parent_dirs(paths: Iterable[str]) -> list[str]:
    """--dir (mode 0755) for every folder above `paths`: bwrap would make them 0700, owned by uid 0 when
    launched by root, which the sandbox user could not then traverse."""
    parents = {str(parent) for path in paths for parent in Path(path).parents if str(parent) not in ("/", SCRATCH)}
    args = []
    for parent in sorted(parents, key=lambda p: (p.count("/"), p)):
        args += ["--perms", "0755", "--dir", parent]
    return args


def code_files(modules: Iterable[str]) -> dict[str, str]:
    """{path inside: host file} for the repository files a worker imports (the given ones and every `scraper`
    module they import, followed statically), plus an empty __init__.py for each package on the way (the real
    ones import whole stages)."""
    files = {}
    for module in imported_closure(modules):
        files[f"{CODE_ROOT}/{module}"] = str(PACKAGE_PARENT / module)
        parts = Path(module).parts[:-1]
        for depth in range(1, len(parts) + 1):
            files.setdefault(f"{CODE_ROOT}/{'/'.join(parts[:depth])}/__init__.py", os.devnull)
    return files


_CLOSURE_LOCK = threading.Lock()


def imported_closure(modules: Iterable[str]) -> list[str]:
    """`modules` (paths like scraper/validate/worker.py, or folders shipped whole like scraper/worker/) and every
    module of the `scraper` package they import, directly or through each other, read with `ast` (a worker's
    imports inside functions count too)."""
    # One thread at a time, and once per set of modules: the suite starts workers from several threads, and
    # CPython 3.11's parser is not safe to run in two threads at once ("AST constructor recursion depth
    # mismatch", python/cpython#106905).
    with _CLOSURE_LOCK:
        return list(_closure(tuple(sorted(modules))))


@functools.lru_cache(maxsize=None)
def _closure(modules: tuple[str, ...]) -> tuple[str, ...]:
    found, todo = [], [file for module in modules for file in folder_files(module)]
    while todo:
        module = todo.pop()
        if module in found:
            continue
        found.append(module)
        todo += [m for m in _scraper_imports(PACKAGE_PARENT / module) if m not in found]
    return tuple(sorted(found))


def folder_files(module: str) -> list[str]:
    """A module path as itself; a folder (ending in "/": a part of the package shipped whole) as its .py files."""
    if not module.endswith("/"):
        return [module]
    base = PACKAGE_PARENT / module
    return sorted(path.relative_to(PACKAGE_PARENT).as_posix() for path in base.rglob("*.py")
                  if "__pycache__" not in path.parts)


def _scraper_imports(path: Path) -> list[str]:
    """The files of `scraper` modules one file imports (`import scraper.x`, `from scraper.x import y`, where y
    may itself be a module of package scraper.x)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    scraper = [name.replace(".", "/") for name in names if name.split(".")[0] == "scraper"]
    # A module's file, or a package's __init__.py when a name is imported from the package itself.
    files = [f"{name}.py" for name in scraper] + [f"{name}/__init__.py" for name in scraper]
    return [file for file in files if (PACKAGE_PARENT / file).is_file()]


class Walled:
    """A running sandbox: `proc` is the bwrap process (stdin/stdout as asked), `init_pid` the host pid of the
    sandbox's init; every process inside dies with it. Call `kill()` in the end, even after it exited."""

    def __init__(self, proc: subprocess.Popen, init_pid: int) -> None:
        self.proc, self.init_pid = proc, init_pid
        self._lock = threading.Lock()  # kill() may come from two threads at once (a Ctrl-C and a dead pipe)
        self.pid, self.stdin, self.stdout = proc.pid, proc.stdin, proc.stdout
        try:
            self.pidfd: Optional[int] = os.pidfd_open(init_pid)
        except OSError:
            self.pidfd = None
        if proc.poll() is not None:  # bwrap already gone, and the init it reaped: the pid may be another's now
            self._close()

    def poll(self) -> Optional[int]:
        return self.proc.poll()

    def wait(self, timeout: Optional[float] = None) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the sandbox's init; the kernel kills everything else in its PID namespace and reaps it before
        the init counts as exited. Returns once that has happened and bwrap has exited: nothing of the sandbox
        runs any more (even when bwrap itself was killed first, and its init was only told by a signal)."""
        with self._lock:
            if self.pidfd is not None:
                try:
                    signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                select.select([self.pidfd], [], [], 30)  # readable once the init has exited
                self._close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def launch(wall: Wall, command: list[str], *, env: Mapping[str, str], binds: Mapping[str, str] = {},
           files: Mapping[str, str] = {}, devices: Iterable[str] = (), **popen) -> Walled:
    """Start `python -I -B -u -c BOOT <max processes> <command...>` in a new sandbox (command: `-m MODULE ARGS` or
    `SCRIPT ARGS`, paths as seen inside). `env`: its whole environment (the wall's own variables are added);
    `binds`: {host folder: path inside} mounted read-write; `files`: {path inside: host file} copied in
    read-only (besides the wall's modules); `devices`: device nodes to pass through. `popen`: stdin, stdout,
    stderr, start_new_session, ... for subprocess.Popen. SandboxUnavailable when bwrap is missing or fails."""
    bwrap = find_bwrap()
    as_root = os.geteuid() == 0
    info_r, info_w = os.pipe()
    block_r, block_w = os.pipe() if as_root else (-1, -1)
    data: list[int] = []
    try:
        args = [*namespace_args(as_root, info_w, block_r), *system_args(wall), *scratch_args(wall), *python_args(),
                *file_args({**code_files(wall.modules), **files}, data), *bind_args(binds, devices),
                "--remount-ro", "/", "--chdir", SCRATCH]
        # -I: no PYTHON* variables, no user site, no folder of the command on sys.path (BOOT sets it); -B: the
        # code folders are read-only anyway; -u: a worker's output reaches its log even when it is killed.
        argv = [bwrap, *args, "--", sys.executable, "-I", "-B", "-u", "-c", BOOT, wall.limits(), *command]
        keep = [fd for fd in (info_w, block_r, *data) if fd >= 0]
        proc = subprocess.Popen(argv, env=sandbox_environment(env), pass_fds=keep, **popen)
    finally:
        for fd in (info_w, block_r, *data):
            if fd >= 0:
                os.close(fd)
    try:
        init_pid = _started(proc, info_r, block_w if as_root else None)
    except BaseException as exc:
        proc.kill()
        proc.wait()
        said = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
        if isinstance(exc, SandboxUnavailable) and said:
            raise SandboxUnavailable(f"{exc}: {said.splitlines()[-1]}") from None
        raise
    return Walled(proc, init_pid)


def namespace_args(as_root: bool, info_fd: int, block_fd: int) -> list[str]:
    """Namespaces and privileges. As a user, bwrap maps SANDBOX_ID to that user and forbids new user
    namespaces itself. As root, bwrap would run the command as the host's uid 0 (with every capability unless
    dropped), so it waits on `block_fd` while the launcher writes the ID maps (`_map_ids`) and leaves the three
    capabilities that `inside.become_sandbox_user` needs to close user namespaces and drop to SANDBOX_ID."""
    args = ["--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--hostname", "sandbox", "--die-with-parent", "--new-session",
            "--info-fd", str(info_fd), "--cap-drop", "ALL"]
    if as_root:
        return args + ["--userns-block-fd", str(block_fd), "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                       "--cap-add", "CAP_SYS_RESOURCE"]
    return args + ["--uid", str(SANDBOX_ID), "--gid", str(SANDBOX_ID), "--disable-userns"]


def file_args(files: Mapping[str, str], opened: list[int]) -> list[str]:
    """--ro-bind-data for each {path inside: host file}: bwrap copies the bytes from a descriptor opened here,
    so the file is readable inside whatever its mode or folder on the host (the descriptors go to `opened`)."""
    args = parent_dirs(files)
    for inside, host in sorted(files.items()):
        fd = os.open(host, os.O_RDONLY)
        opened.append(fd)
        args += ["--perms", "0444", "--ro-bind-data", str(fd), inside]
    return args


def bind_args(binds: Mapping[str, str], devices: Iterable[str]) -> list[str]:
    """--bind for each {host folder: path inside}, --dev-bind for each device node."""
    args = parent_dirs(binds.values())
    for host, inside in binds.items():
        args += ["--bind", str(host), inside]
    for device in devices:
        args += ["--dev-bind", device, device]
    return args


def sandbox_environment(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with what the wall sets: HOME and TMPDIR on the scratch tmpfs, a user name (getpass needs one;
    there is no /etc/passwd), PATH with the interpreter's folder, WALL_ENV, and the user site-packages."""
    path = os.pathsep.join(dict.fromkeys([os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"]))
    extra = site.getusersitepackages() if site.ENABLE_USER_SITE and site.getusersitepackages() in sys.path else ""
    fixed = {"HOME": SCRATCH, "TMPDIR": SCRATCH, "USER": "sandbox", "LOGNAME": "sandbox", "PATH": path,
             WALL_ENV: "bwrap", PATH_ENV: extra}
    return {**{k: v for k, v in env.items() if k not in ("PYTHONPATH", "PWD", "OLDPWD")}, **fixed}


def _started(proc: subprocess.Popen, info_fd: int, block_fd: Optional[int]) -> int:
    """Wait for bwrap's --info-fd report; as root, write the ID maps and let it go on. The sandbox init's pid."""
    try:
        info = _read_all(info_fd, time.monotonic() + START_TIMEOUT)
    finally:
        os.close(info_fd)
    try:
        init_pid = int(json.loads(info)["child-pid"])
    except (ValueError, KeyError, TypeError):
        raise SandboxUnavailable("bwrap did not start a sandbox") from None
    if block_fd is not None:
        try:
            _map_ids(init_pid)
            os.write(block_fd, b"1")
        finally:
            os.close(block_fd)
    return init_pid


def _read_all(fd: int, deadline: float) -> bytes:
    """What is written to `fd` until its writer closes it or `deadline` passes."""
    chunks = []
    while (left := deadline - time.monotonic()) > 0 and select.select([fd], [], [], left)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _map_ids(pid: int) -> None:
    """Root only: map uid/gid 0 (bwrap needs it for the mounts) and SANDBOX_ID -> OUTSIDE_ID in the sandbox's
    user namespace. setgroups stays allowed so that the sandbox can drop root's supplementary groups."""
    mapping = f"0 0 1\n{SANDBOX_ID} {OUTSIDE_ID} 1\n"
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as handle:
            handle.write(mapping)
