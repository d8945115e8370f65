"""What a module's closure needs from the environment, found statically, so that a module that cannot run here is
skipped before it takes a GPU worker (`missing extension flash_attn_2_cuda`, `missing package einops`).

    required_imports(code)                      # top-level modules the closure imports unconditionally
    extension_names(files)                      # modules a repository's setup.py builds (CUDAExtension(...))
    own_packages(paths)                         # the repository's own top-level packages
    external_imports(files)                     # what it imports from outside (the closures keep those imports)
    skip_reason(imports, extensions, packages)  # "missing extension X" / "missing package X" / None

Imports inside try blocks at module level, and imports of other libraries inside functions, are not required: a
module that falls back when `selective_scan_cuda` is absent still runs. Imports inside if/else blocks are required
when they are compiled extensions (`if hip: ... else: import flash_attn_2_cuda`): nothing replaces those. Imports
of the repository's own packages inside functions (`def singleton(cls): from lmdeploy.utils import get_logger`)
are required: the closure copies definitions, not packages, so such a module needs its repository installed.
Availability is checked with importlib.util.find_spec on the top-level name only, which imports nothing.
"""

from __future__ import annotations

import ast
import re
from typing import Iterable, Optional

from scraper.worker.infer.guarded import builder_name, catches_import_error, installed  # noqa: F401

# Import names of compiled extensions: torch's `_C` convention and the `*_cuda` / `*_ext` / `*_cpp` names that
# CUDAExtension builds carry (flash_attn_2_cuda, selective_scan_cuda, causal_conv1d_cuda, fused_dense_lib ...).
EXTENSION_NAME = re.compile(r"(^_C$|^_?C_|_cuda(_lib)?$|^cuda_|_ext$|^_ext|_cpp$|_lib$|_kernels?_?cuda|^_\w+_ops$)")
EXTENSION_BUILDERS = {"CUDAExtension", "CppExtension", "Extension", "Pybind11Extension", "SyclExtension"}


def required_imports(code: str) -> dict[str, list[str]]:
    """Dotted names of the modules `code` imports at module level outside try blocks, in order, without relative
    imports and __future__: {"always": [...] (unconditional), "if": [...] (inside if/else blocks: required only
    when they are compiled extensions, which have no fallback), "functions": [...] (imported inside functions,
    outside try blocks: required when they are the repository's own packages, which the closure cannot stand in
    for)}; empty lists when it does not parse."""
    found = {"always": {}, "if": {}, "functions": {}}
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError):
        return {key: [] for key in found}
    guarded = {id(node) for block in ast.walk(tree) if isinstance(block, ast.Try) for node in ast.walk(block)}
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if id(node) in guarded:
                    continue
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found["functions"][node.module] = None
                elif isinstance(node, ast.Import):
                    found["functions"].update((alias.name, None) for alias in node.names)
    for node, conditional in module_level(tree.body, False):
        bucket = found["if" if conditional else "always"]
        if isinstance(node, ast.Import):
            bucket.update((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module != "__future__":
            bucket[node.module] = None
            # `from pkg import name` may name a submodule (from flash_attn import flash_attn_2_cuda)
            bucket.update((f"{node.module}.{alias.name}", None) for alias in node.names
                          if EXTENSION_NAME.search(alias.name))
    return {key: list(names) for key, names in found.items()}


def module_level(body: list, conditional: bool):
    """(statement, inside an if block) of the module-level statements: if/else blocks entered, and try blocks
    whose handlers raise again (`except ImportError: raise ImportError("please install ...")`); other try
    blocks and definitions not."""
    for node in body:
        if isinstance(node, ast.If):
            yield from module_level(node.body + node.orelse, True)
        elif isinstance(node, ast.Try) and node.handlers and all(reraises(h) for h in node.handlers):
            yield from module_level(node.body, conditional)
        else:
            yield node, conditional


def reraises(handler: ast.ExceptHandler) -> bool:
    """Whether an except block ends by raising (so what its try imports is required)."""
    return bool(handler.body) and isinstance(handler.body[-1], ast.Raise)


def extension_names(files: Iterable) -> set[str]:
    """Import names of the compiled extensions a repository builds: the `name=` of CUDAExtension(...) and the
    like in its setup.py files (full dotted name and last part)."""
    names: set[str] = set()
    for file in files:
        if not file.path.endswith("setup.py"):
            continue
        try:
            tree = ast.parse(file.text)
        except (SyntaxError, ValueError, RecursionError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and builder_name(node.func) in EXTENSION_BUILDERS:
                name = extension_argument(node)
                if name:
                    names.update({name, name.rsplit(".", 1)[-1]})
    return names


def extension_argument(call: ast.Call) -> Optional[str]:
    """The string literal given as `name=` or first argument of an extension builder call."""
    candidates = [kw.value for kw in call.keywords if kw.arg == "name"] + call.args[:1]
    for node in candidates:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
    return None


def skip_reason(imports: dict, extensions: Iterable[str] = (), own_packages: Iterable[str] = ()) -> Optional[str]:
    """Why a module cannot run in this environment: the first required import (`required_imports`) whose
    top-level module is not installed, as "missing extension X" (a compiled module: named like one, built by the
    repository's setup.py, or a module of the repository's own packages, which has no .py file since the closure
    did not copy it) or "missing package X"; None when every one is installed."""
    extensions, own_packages = set(extensions), set(own_packages)

    def compiled(name: str) -> bool:
        return (name.split(".")[0] in own_packages or name in extensions
                or bool(EXTENSION_NAME.search(name.rsplit(".", 1)[-1])))

    required = [(name, compiled(name)) for name in imports.get("always", [])]
    required += [(name, True) for name in imports.get("if", []) if compiled(name)]
    required += [(name, False) for name in imports.get("functions", []) if name.split(".")[0] in own_packages]
    for name, is_compiled in required:
        if not installed(name.split(".")[0]):
            return f"missing extension {name}" if is_compiled else f"missing package {name.split('.')[0]}"
    return None


def external_imports(files: Iterable, trees: Optional[dict] = None) -> set[str]:
    """Top-level names a repository imports at the top of its files and never in an indented block, that none of
    its own folders or files is called (einops, flash_attn_2_cuda, transformers ...): the closures keep such
    imports (`skip_reason` then tells whether they are installed here) instead of counting them as unresolved.
    A name the repository also imports inside a try, an if or a function is left out: the generator copies such
    a block whole, fallback included, only while the name is not an allowed import. Read from each file's syntax
    tree (`trees`: {path: ast.Module} already parsed; the others are parsed here), never by a pattern over its
    text (one 150 KB `from aaaa...` line made a regular expression backtrack for minutes)."""
    from scraper.generator import parse_source

    files = list(files)
    found = ImportNames()
    for file in files:
        tree = (trees or {}).get(file.path)
        found.add(tree if tree is not None else parse_source(file.text, file.path).tree)
    return found.external([file.path for file in files])


class ImportNames:
    """The top-level names a repository's files import, split by where: at the top of a file, or indented
    (inside a def, class, if, try, with, loop or match)."""

    def __init__(self) -> None:
        self.top: set[str] = set()
        self.indented: set[str] = set()

    def add(self, tree: ast.Module) -> None:
        """Fold in the import statements of one file's tree (statements only are walked, iteratively)."""
        todo = [(statement, False) for statement in tree.body]
        while todo:
            node, nested = todo.pop()
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                (self.indented if nested else self.top).update(imported_tops(node))
                continue
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                todo += [(child, True) for child in getattr(node, field, ()) if isinstance(child, ast.AST)]

    def external(self, paths: Iterable[str]) -> set[str]:
        """The names imported only at the top, that no folder or file among `paths` is called."""
        own = {part.removesuffix(".py") for path in paths for part in path.split("/")}
        return self.top - self.indented - own


def imported_tops(node: ast.stmt) -> set[str]:
    """The top-level module names an import statement names (none for a relative import)."""
    if isinstance(node, ast.ImportFrom):
        names = [node.module] if node.module and not node.level else []
    else:
        names = [alias.name for alias in node.names]
    return {name.split(".")[0] for name in names if name.split(".")[0].isidentifier()}


def own_packages(paths: Iterable[str]) -> set[str]:
    """Top-level package names of a repository's files (`pkg/...`, or `src/pkg/...`)."""
    names = set()
    for path in paths:
        parts = path.split("/")
        if len(parts) > 2 and parts[0] in ("src", "python", "lib"):
            parts = parts[1:]
        if len(parts) > 1:
            names.add(parts[0])
    return names


