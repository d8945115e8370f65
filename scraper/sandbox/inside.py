"""The first code that runs inside the wall, and the limits a worker applies there (standard library only).

scraper.sandbox.wall starts `python -I -B -u -c BOOT LIMITS -m MODULE ARGS...` in a bubblewrap sandbox (LIMITS:
`nproc=N,as=BYTES,data=BYTES,fsize=BYTES`, 0 for none); `main` makes sure the process is the unprivileged
sandbox user with no capabilities, sets the process-count, memory and file-size limits and runs the worker
module. The validate worker also uses `forbid_dumping` and `forbid_new_processes` for each check.
`--describe` (the launcher's probe) prints what the sandbox looks like from inside, as JSON.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import resource
import runpy
import socket
import sys

CODE_ROOT = "/opt/triton-data"  # where the pipeline modules a worker imports appear, read-only
SANDBOX_ID = 1000  # uid and gid of every process that runs scraped code
WALL_ENV = "TRITON_DATA_WALL"  # set to "bwrap" in the sandbox's environment by the launcher
PATH_ENV = "TRITON_DATA_WALL_PATH"  # extra sys.path entries (a user site-packages), os.pathsep-separated
BOOT = (f"import sys; sys.path.insert(0, {CODE_ROOT!r}); "
        "from scraper.sandbox.inside import main; main(sys.argv[1:])")

_PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP = 4, 38, 22
_SECCOMP_MODE_FILTER = 2
# Classic BPF opcodes and seccomp return values (linux/filter.h, linux/seccomp.h).
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _ERRNO, _KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
_CLONE_THREAD = 0x00010000
_CLONE3 = 435  # the same number on every architecture
_X32_BIT = 0x40000000
# AUDIT_ARCH value and the syscalls that create a process, per machine (fork/vfork exist only on x86_64).
_ARCHES = {"x86_64": (0xC000003E, {"clone": 56, "fork": 57, "vfork": 58}),
           "aarch64": (0xC00000B7, {"clone": 220})}


_RLIMITS = {"nproc": resource.RLIMIT_NPROC, "as": resource.RLIMIT_AS, "data": resource.RLIMIT_DATA,
            "fsize": resource.RLIMIT_FSIZE}


def main(argv: list[str]) -> None:
    """argv: LIMITS, then `-m MODULE ARGS...`, `SCRIPT ARGS...` or `--describe` (the launcher's probe: print
    `describe_inside()` as JSON)."""
    limits, *target = argv
    become_sandbox_user()
    set_limits(limits)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if target == ["--describe"]:
        print(json.dumps(describe_inside()))
        return
    extra = [path for path in os.environ.pop(PATH_ENV, "").split(os.pathsep) if path]
    sys.path[1:1] = extra  # after CODE_ROOT: a user site-packages, which -I leaves out
    if target[0] == "-m":
        sys.argv = target[1:]
        runpy.run_module(target[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = target
        runpy.run_path(target[0], run_name="__main__")


def set_limits(limits: str) -> None:
    """Apply `name=value,...` (names of _RLIMITS; a bare number is the process count, 0 means no limit) as hard
    and soft limits of this process and all it starts."""
    for item in limits.split(","):
        name, _, value = item.rpartition("=")
        if int(value) > 0:
            resource.setrlimit(_RLIMITS[name or "nproc"], (int(value), int(value)))


def become_sandbox_user() -> None:
    """Be SANDBOX_ID with no capabilities, or exit. A launcher running as root maps uid 0 (needed by bwrap to set
    up the mounts) and SANDBOX_ID (to an unused uid outside) and leaves this process CAP_SETUID/SETGID and
    CAP_SYS_RESOURCE: here it closes user namespaces for good, then drops to SANDBOX_ID, which clears every
    capability. Scraped code thus never runs as the host's root (who could write /proc/sys, for one) and the
    process-count limit applies (the kernel does not enforce RLIMIT_NPROC on root)."""
    if os.getuid() != SANDBOX_ID:
        with open("/proc/sys/user/max_user_namespaces", "w") as limit:
            limit.write("0")  # bwrap's --disable-userns, which cannot be combined with the root launcher
        os.setgroups([])
        os.setresgid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID)
        os.setresuid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID)
    held = capabilities()
    if os.getuid() != SANDBOX_ID or any(held.values()):
        raise SystemExit(f"sandbox: refusing to run as uid {os.getuid()} with capabilities {held}")


def capabilities() -> dict[str, int]:
    """The permitted, effective and ambient capability sets of this process (0 = none)."""
    with open("/proc/self/status") as status:
        return {line.split(":")[0]: int(line.split()[1], 16) for line in status
                if line.startswith(("CapPrm:", "CapEff:", "CapAmb:"))}


def forbid_dumping() -> None:
    """PR_SET_DUMPABLE 0: other processes of the same uid (a check's child) can no longer open this process's
    /proc/<pid>/fd, mem or environ, nor ptrace it."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def no_process_filter(machine: str) -> list[tuple[int, int, int, int]] | None:
    """The seccomp program (code, jt, jf, k) that lets threads be created but no process: clone without
    CLONE_THREAD, fork and vfork fail with EPERM, clone3 with ENOSYS (its flags sit in memory a filter cannot
    read; glibc then falls back to clone). None for a machine it does not know."""
    if machine not in _ARCHES:
        return None
    arch, calls = _ARCHES[machine]
    errno_perm, errno_nosys = _ERRNO | 1, _ERRNO | 38
    others = [nr for name, nr in calls.items() if name != "clone"]
    program = [(_LD_ABS, 0, 0, 4), ("jeq", "next", "kill", arch), (_LD_ABS, 0, 0, 0),
               ("jge", "deny", "next", _X32_BIT), ("jeq", "nosys", "next", _CLONE3)]
    program += [("jeq", "deny", "next", nr) for nr in others]
    program += [("jeq", "next", "allow", calls["clone"]), (_LD_ABS, 0, 0, 16),  # low half of args[0]: the flags
                ("jset", "allow", "deny", _CLONE_THREAD)]
    labels = {"allow": _ALLOW, "deny": errno_perm, "nosys": errno_nosys, "kill": _KILL_PROCESS}
    return _resolve(program, labels)


def _resolve(program: list, labels: dict) -> list[tuple[int, int, int, int]]:
    """Turn symbolic jumps ("next" or a label of a return) into BPF offsets; the returns go at the end."""
    returns = list(labels)
    end = len(program)
    opcodes = {"jeq": _JEQ, "jge": _JGE, "jset": _JSET}
    resolved = []
    for index, (code, jt, jf, k) in enumerate(program):
        if code in opcodes:
            def offset(target):
                return 0 if target == "next" else end + returns.index(target) - index - 1
            code, jt, jf = opcodes[code], offset(jt), offset(jf)
        resolved.append((code, jt, jf, k))
    return resolved + [(_RET, 0, 0, labels[name]) for name in returns]


def forbid_new_processes() -> bool:
    """From now on this process may start threads but no process (seccomp; needs no_new_privs, which is set
    here). Nothing it starts can outlive it, and the process count stays one. False where unsupported."""
    program = no_process_filter(platform.machine())
    if program is None or sys.byteorder != "little":
        return False
    filters = (_SockFilter * len(program))(*program)
    prog = _SockFprog(len(program), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return False
    return libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) == 0


def describe_inside() -> dict:
    """What a process sees in the sandbox: uid, capabilities, network interfaces, whether $HOME exists."""
    return {"uid": os.getuid(), "capabilities": capabilities(), "pid": os.getpid(),
            "interfaces": sorted(name for _, name in socket.if_nameindex()), "wall": os.environ.get(WALL_ENV),
            "max_processes": resource.getrlimit(resource.RLIMIT_NPROC)[0],
            "limits": {name: resource.getrlimit(number)[0] for name, number in _RLIMITS.items()}}
