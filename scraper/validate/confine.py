"""Confinement of each check inside a validate worker: fork a child per check, limit it, kill it on timeout.

The wall is outside: the worker runs in a bubblewrap sandbox (scraper.sandbox; no network, no $HOME, no checkout,
nothing writable but its tmpfs, no capabilities). Inside it, `run_confined` forks a child per check (a few ms, the
imports are shared) with a fresh pipe for its answer, and the child, before it touches the kernel:

- lets go of the worker's own job and answer channels (so it can report nothing but its own result);
- rlimits: address space (RLIMIT_AS = what the worker already maps + `memory_mb`), CPU seconds, file size,
  core dumps off;
- its working directory, TMPDIR and TRITON_CACHE_DIR in a fresh scratch directory, stdout/stderr to a file there;
- Landlock: writes only under the scratch directory; seccomp: threads but no new process, so nothing it starts
  outlives it;
- an audit hook (PEP 578) that refuses writes, deletes and renames outside the scratch directory, starting
  processes, sockets and ctypes calls: a tripwire for the careless, not a wall (one line turns it off).

Without the wall (--unsafe-no-sandbox) the child also tries a user + network namespace of its own. The parent
side kills the child's process group with SIGKILL when the time limit passes.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import resource
import select
import signal
import sys
import tempfile
import time
import traceback
from typing import Callable, Iterable

from scraper.sandbox.inside import WALL_ENV, forbid_new_processes

MIB = 1024 * 1024
FILE_SIZE_LIMIT = 64 * MIB  # no single file the child writes may grow past this
RESULT_LIMIT = 1 * MIB  # the most a child may report back
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000
_PR_SET_PDEATHSIG = 1
_KERNEL_LOCATION = re.compile(r"^at (\d+):(\d+):$")
_PR_SET_NO_NEW_PRIVS = 38
# Landlock syscalls (the same numbers on x86_64 and arm64) and its write-side filesystem rights (ABI 1):
# WRITE_FILE, REMOVE_DIR, REMOVE_FILE and MAKE_CHAR/DIR/REG/SOCK/FIFO/BLOCK/SYM.
_LANDLOCK_CREATE_RULESET, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT_SELF = 444, 445, 446
_LANDLOCK_WRITE_FILE = 1 << 1
_LANDLOCK_WRITE_RIGHTS = _LANDLOCK_WRITE_FILE | (1 << 4) | (1 << 5) | sum(1 << bit for bit in range(6, 13))

# Audit events refused outright, whatever their arguments.
REFUSED_EVENTS = frozenset({
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
    "pty.spawn", "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.gethostbyaddr", "socket.__new__", "ctypes.dlopen", "ctypes.call_function",
    "os.setuid", "os.setgid", "os.chroot", "resource.setrlimit", "resource.prlimit", "sys.addaudithook",
    "webbrowser.open", "urllib.Request", "http.client.connect", "ftplib.connect", "smtplib.connect",
})
# Audit events whose path arguments must lie inside the scratch directory.
PATH_EVENTS = {
    "os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1), "os.link": (0, 1),
    "os.symlink": (1,), "os.truncate": (0,), "os.chmod": (0,), "os.chown": (0,), "os.utime": (0,),
    "os.setxattr": (0,), "os.removexattr": (0,),  # metadata: Landlock does not cover it
    "shutil.rmtree": (0,), "shutil.copyfile": (1,), "shutil.move": (0, 1), "os.mkfifo": (0,), "os.mknod": (0,),
}


class SandboxRefused(PermissionError):
    """Raised inside the child when the audit hook refuses an operation."""


def _inside(path, root: str) -> bool:
    if isinstance(path, int):  # an already-open descriptor: its opening was checked
        return True
    path = os.fsdecode(path)
    if path in (os.devnull, "/dev/stdout", "/dev/stderr"):
        return True
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)


def make_audit_hook(scratch: str) -> Callable:
    """The hook that refuses what a kernel module must not do (see REFUSED_EVENTS / PATH_EVENTS)."""
    root = os.path.realpath(scratch)

    def hook(event: str, args: tuple) -> None:
        if event in REFUSED_EVENTS:
            if event == "socket.__new__" and args and args[1] == getattr(__import__("socket"), "AF_UNIX", 1):
                return  # local socketpair()s (multiprocessing internals) reach no network
            raise SandboxRefused(f"sandbox refused {event}")
        if event == "open" and len(args) >= 3:
            path, mode, flags = args[0], args[1] or "", args[2] or 0
            writing = any(c in str(mode) for c in "wax+") or (flags & _WRITE_FLAGS)
            if writing and not _inside(path, root):
                raise SandboxRefused(f"sandbox refused writing {os.fsdecode(path)!r} outside the scratch dir")
        elif event in PATH_EVENTS:
            for index in PATH_EVENTS[event]:
                if index < len(args) and args[index] is not None and not _inside(args[index], root):
                    raise SandboxRefused(f"sandbox refused {event} on {os.fsdecode(args[index])!r}")
        elif event in ("os.kill", "os.killpg") and args and args[0] not in (0, os.getpid()):
            raise SandboxRefused(f"sandbox refused {event} {args[0]}")

    return hook


def die_with_parent() -> None:
    """PR_SET_PDEATHSIG: the kernel sends this child SIGKILL if its worker dies (no orphans left running)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def isolate_network() -> bool:
    """Move this process into its own user + network namespace (no interfaces up). False when not allowed."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0
    except (OSError, AttributeError):
        return False


class _LandlockPathBeneath(ctypes.Structure):
    _pack_ = 1  # struct landlock_path_beneath_attr is packed: u64 allowed_access, s32 parent_fd
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _landlock_rule(libc, ruleset: int, path: str, access: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        rule = _LandlockPathBeneath(access, fd)
        if libc.syscall(_LANDLOCK_ADD_RULE, ruleset, 1, ctypes.byref(rule), 0) != 0:  # 1: LANDLOCK_RULE_PATH_BENEATH
            raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
    finally:
        os.close(fd)


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 or less when it has none (then the audit hook alone guards files)."""
    try:
        return ctypes.CDLL(None, use_errno=True).syscall(_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), 1)
    except (OSError, AttributeError):
        return 0


def restrict_writes(scratch: str) -> bool:
    """Landlock (Linux >= 5.13): from now on this process may create, write, delete or rename files only under
    `scratch` (and write /dev/null), whatever API it uses (C++ writers like torch.save, sqlite ATTACH, mkfifo:
    none of them raise the audit events the hook sees). Reading stays allowed. False when the kernel lacks it."""
    abi = landlock_abi()
    if abi < 1:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        handled = _LANDLOCK_WRITE_RIGHTS | (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0)  # REFER, TRUNCATE
        attr = ctypes.c_uint64(handled)  # struct landlock_ruleset_attr's first field: handled_access_fs
        ruleset = libc.syscall(_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(8), 0)
        if ruleset < 0:
            return False
        try:
            _landlock_rule(libc, ruleset, scratch, handled)
            _landlock_rule(libc, ruleset, os.devnull, _LANDLOCK_WRITE_FILE)
            libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            return libc.syscall(_LANDLOCK_RESTRICT_SELF, ruleset, 0) == 0
        finally:
            os.close(ruleset)
    except (OSError, AttributeError):
        return False


def _address_space_now() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def set_limits(memory_mb: int, timeout: float) -> None:
    """rlimits for the child: address space, CPU time (a backstop for the parent's kill), file size, no cores."""
    address_space = _address_space_now() + memory_mb * MIB
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    cpu = int(timeout) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def drop_channels(channels: Iterable[int]) -> None:
    """Close the worker's job and answer channels in the child (stdin becomes /dev/null): its only way to
    report is then the fresh pipe of its own check, however it walks the worker's frames."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    for fd in channels:
        try:
            os.close(fd)
        except OSError:
            pass


def confine(scratch: str, memory_mb: int, timeout: float) -> dict:
    """Everything the child does to itself before running untrusted code. Returns what was applied."""
    os.setpgid(0, 0)
    die_with_parent()
    walled = os.environ.get(WALL_ENV) == "bwrap"
    network = "none (sandbox)" if walled else "namespace" if isolate_network() else "audit-hook only"
    log_fd = os.open(os.path.join(scratch, "output.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.chdir(scratch)
    for var in ("TMPDIR", "TEMP", "TMP", "HOME"):
        os.environ[var] = scratch
    os.environ["TRITON_CACHE_DIR"] = os.path.join(scratch, "triton_cache")
    tempfile.tempdir = scratch
    set_limits(memory_mb, timeout)
    files = "landlock" if restrict_writes(os.path.realpath(scratch)) else "audit-hook only"
    processes = "seccomp: none" if forbid_new_processes() else "audit-hook only"
    sys.addaudithook(make_audit_hook(scratch))
    return {"wall": "bubblewrap" if walled else "none (--unsafe-no-sandbox)", "network": network, "files": files,
            "processes": processes, "memory_mb": memory_mb, "timeout_s": timeout}


def describe_error(exc: BaseException, module_file: str | None = None) -> dict:
    """{"error_class", "error": "<Class>: <first line>", "where": "<module line>"} for a failure in the child."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    location = _KERNEL_LOCATION.match(first)
    if location and len(text) > 1:  # triton's CompilationError: "at L:C:", the source, a caret, the reason
        first = f"{text[-1].strip()} (kernel line {location.group(1)})"
    info = {"error_class": type(exc).__name__, "error": f"{type(exc).__name__}: {first}"[:500]}
    if module_file:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == module_file]
        if frames:
            info["where"] = f"line {frames[-1].lineno}"
        elif isinstance(exc, SyntaxError) and exc.lineno:
            info["where"] = f"line {exc.lineno}"
    return info


def _child(check: Callable[[str], dict], scratch: str, memory_mb: int, timeout: float, write_fd: int,
           channels: Iterable[int]) -> None:
    """Body of the forked child; never returns."""
    try:
        try:
            drop_channels(channels)
            sandbox = confine(scratch, memory_mb, timeout)
            result = check(scratch)
            result["sandbox"] = sandbox
        except BaseException as exc:  # noqa: BLE001 - SystemExit and friends are results here
            result = {"ok": False, **describe_error(exc)}
        payload = json.dumps(result, default=str).encode()[:RESULT_LIMIT]
        while payload:
            payload = payload[os.write(write_fd, payload):]
    finally:
        os._exit(0)


def _read_until(fd: int, deadline: float) -> tuple[bytes, bool]:
    """Everything written to `fd` until its writer closes it (at most RESULT_LIMIT bytes); (data, timed_out)."""
    chunks, size = [], 0
    while size <= RESULT_LIMIT:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), True
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    return b"".join(chunks), False


def _kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def run_confined(check: Callable[[str], dict], scratch: str, *, timeout: float, memory_mb: int,
                 channels: Iterable[int] = ()) -> dict:
    """Fork, confine the child to `scratch`, run `check(scratch)` there and return its result dict, read once
    from a pipe made for this check alone. `channels`: the worker's descriptors the child must close.

    A child that outlives `timeout` seconds is killed; one that dies or exits without a result (os._exit, a
    signal, the memory limit) is reported as a failure with the reason.
    """
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(check, scratch, memory_mb, timeout, write_fd, channels)
    os.close(write_fd)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass  # the child already did it, or is gone
    data, timed_out = _read_until(read_fd, started + timeout)
    os.close(read_fd)
    _kill_group(pid)  # also after an answer: a child that closed its pipe and lingers must not hang the worker
    _, status = os.waitpid(pid, 0)
    seconds = round(time.monotonic() - started, 3)
    if timed_out:
        return {"ok": False, "error_class": "Timeout", "seconds": seconds,
                "error": f"Timeout: killed after {timeout:g} s", "output_tail": _output_tail(scratch)}
    try:
        result = json.loads(data)
    except ValueError:
        result = None
    if not isinstance(result, dict):  # nothing, or not what _child writes
        result = {"ok": False, "error_class": "SandboxExit", "error": _exit_reason(status)}
    result["seconds"] = seconds
    if not result.get("ok"):
        result.setdefault("output_tail", _output_tail(scratch))
    return result


def _output_tail(scratch: str, size: int = 400) -> str:
    """The end of what the child printed (its stdout/stderr went to output.log in the scratch dir)."""
    try:
        with open(os.path.join(scratch, "output.log"), "rb") as log_file:
            log_file.seek(0, os.SEEK_END)
            log_file.seek(max(0, log_file.tell() - size))
            return log_file.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _exit_reason(status: int) -> str:
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        hint = " (CPU limit)" if name == "SIGXCPU" else " (memory limit?)" if name in ("SIGKILL", "SIGSEGV") else ""
        return f"SandboxExit: killed by {name}{hint} before reporting a result"
    return f"SandboxExit: exited with status {os.waitstatus_to_exitcode(status)} before reporting a result"
