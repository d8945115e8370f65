"""Names a scraped module binds through try-imports of packages that are not installed here, found statically
(the worker uses them to tell "missing package X" from a failure; scraper.modules.needs uses `installed` and
`catches_import_error` when it lists candidates). Imports nothing: availability is importlib.util.find_spec on
the top-level name."""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys

IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def guarded_missing(code: str) -> dict[str, str]:
    """{name: top-level module} for the names module-level imports inside try blocks bind (`try: import nvtx`,
    `from quack.linear import ce`, caught as ImportError) when that module is not installed here. Such a module
    is optional for the listing (it may fall back); when it fails in code that uses one of these names it is
    skipped as missing that package, not failed (scraper.worker.infer.program)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError):
        return {}
    found = {}
    for block in ast.walk(tree):
        if not (isinstance(block, ast.Try) and any(catches_import_error(h) for h in block.handlers)):
            continue
        for node in block.body:
            if isinstance(node, ast.Import):
                pairs = [((alias.asname or alias.name).split(".")[0], alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                pairs = [(alias.asname or alias.name, node.module) for alias in node.names if alias.name != "*"]
            else:
                continue
            found.update((name, module.split(".")[0]) for name, module in pairs if not installed(module.split(".")[0]))
    return found


def catches_import_error(handler: ast.ExceptHandler) -> bool:
    """Whether an except clause catches a failed import (bare, ImportError, ModuleNotFoundError, Exception)."""
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return handler.type is None or any(builder_name(kind) in IMPORT_ERRORS for kind in kinds if kind is not None)


@functools.lru_cache(maxsize=None)
def installed(top: str) -> bool:
    """Whether a top-level module can be imported here (builtin, or found on sys.path); imports nothing."""
    if top in sys.builtin_module_names:
        return True
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def builder_name(func: ast.expr) -> str:
    """`CUDAExtension` of `CUDAExtension` / `cpp_extension.CUDAExtension`."""
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
