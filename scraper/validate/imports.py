"""The `imports` level, run inside the sandboxed child: execute the module, find the kernel, check its type.

Only ever called by scraper.validate.worker in a forked, confined child (scraper.validate.confine).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from scraper.validate.confine import describe_error

MODULE_NAME = "kernel_module"
MODULE_FILE = "kernel_module.py"


def write_module(scratch: str, code: str) -> str:
    """Write the kernel module into the scratch directory (Triton reads kernel source from a real file)."""
    path = os.path.join(scratch, MODULE_FILE)
    Path(path).write_text(code, encoding="utf-8")
    return path


def load_module(path: str) -> ModuleType:
    """Execute the module file as `kernel_module` (registered in sys.modules, as an import would)."""
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


def unwrap_kernel(obj) -> tuple[object, list[str]]:
    """Follow `.fn` through Autotuner / Heuristics wrappers; returns (innermost object, chain of type names)."""
    chain = [type(obj).__name__]
    while not is_jit_function(obj) and hasattr(obj, "fn") and len(chain) < 8:
        obj = obj.fn
        chain.append(type(obj).__name__)
    return obj, chain


def is_jit_function(obj) -> bool:
    """True for triton's JITFunction or (under TRITON_INTERPRET=1) its InterpretedFunction."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    return isinstance(obj, (JITFunction, InterpretedFunction))


def find_kernel(module: ModuleType, name: str) -> tuple[object, list[str]]:
    """The kernel `name` of the module, unwrapped; raises LookupError / TypeError with a clear message."""
    if not hasattr(module, name):
        raise LookupError(f"module defines no {name!r}")
    kernel, chain = unwrap_kernel(getattr(module, name))
    if not is_jit_function(kernel):
        raise TypeError(f"{name!r} is a {' -> '.join(chain)}, not a triton JITFunction")
    return kernel, chain


def check_imports(job: dict, scratch: str) -> dict:
    """Run the module under TRITON_INTERPRET=1 and check that job["name"] is a (wrapped) JIT function."""
    os.environ["TRITON_INTERPRET"] = "1"
    path = os.path.join(scratch, MODULE_FILE)
    try:
        module = load_module(path)
        _, chain = find_kernel(module, job["name"])
    except BaseException as exc:  # noqa: BLE001 - SystemExit from the module is a result too
        return {"ok": False, **describe_error(exc, path)}
    return {"ok": True, "object": " -> ".join(chain)}
