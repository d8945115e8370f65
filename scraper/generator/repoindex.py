"""A repository's Python files, parsed on demand, with module lookup as `import` would do it.

`RepoIndex(files)` holds {path in repo: text}; `module(path)` parses and indexes a file once
(fileindex.ModuleIndex); `find_module(importer, name, level)` finds the file an import names (relative
imports, and absolute ones by every path suffix so `src/pkg/...` layouts work, nearest copy first). Aliases of
triton's decorators across files are detection's business (detect.RepoAliases); the index only hands them on.
"""

from __future__ import annotations

import ast
import posixpath
import sys
from typing import Iterable, Optional

from scraper.generator.detect import JitFunction, RepoAliases, find_kernels_in_tree
from scraper.generator.fileindex import ModuleIndex, index_module
from scraper.generator.parse import ParsedModule, parse_source

# Libraries a generated module may import: the standard library plus what a Triton kernel runs with
# (`packaging`: kernels pick code paths by `version.parse(triton.__version__)`; it is in every pip environment).
DEFAULT_ALLOWED_IMPORTS = frozenset(sys.stdlib_module_names) | {"torch", "triton", "numpy", "typing_extensions",
                                                                 "packaging"}
# Tokens of one repository's files parsed at most (parse.tokens_of): ~1 GB of syntax trees for real code. A file
# past it is not parsed (counted): an archive's 512 MiB budget would otherwise mean ~180 GiB of trees.
REPOSITORY_TOKENS = 5_000_000


def module_dotted_name(path: str) -> str:
    """`pkg/sub/mod.py` -> `pkg.sub.mod`; `pkg/__init__.py` -> `pkg`."""
    stem = path[:-3] if path.endswith(".py") else path
    parts = stem.split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


class RepoIndex:
    """The Python files of one repository, parsed on demand (each at most once), with module lookup."""

    def __init__(self, files: dict[str, str], name: str = "", allowed_imports: Iterable[str] = DEFAULT_ALLOWED_IMPORTS):
        self.name = name
        self.texts = dict(files)  # path in repo -> text
        self.allowed_imports = frozenset(allowed_imports)
        self.aliases = RepoAliases(self)
        self._modules: dict[str, ModuleIndex] = {}
        self._kernels: dict[str, list] = {}
        self.tokens_left = REPOSITORY_TOKENS  # what is left of the repository's parse budget
        self.skipped: dict[str, str] = {}  # path -> why it was not parsed (too large, over the budget)
        self.cache: dict = {}  # analyses of the whole repository, built on first use (launchers.repo_launches)
        # folders holding Python files but no __init__.py are namespace packages: `pkg/__init__.py` stands for
        # such a folder (an empty module) so `from pkg import mod` and `from . import mod` resolve
        self.namespaces = _namespace_packages(self.texts)
        self._roots: dict[str, str] = {}
        self._by_dotted: dict[str, list[str]] = {}
        for path in list(self.texts) + sorted(self.namespaces):
            parts = module_dotted_name(path).split(".")
            for start in range(len(parts)):  # every suffix: repos keep packages under src/, python/, ...
                self._by_dotted.setdefault(".".join(parts[start:]), []).append(path)

    @classmethod
    def from_source(cls, source, **kwargs) -> "RepoIndex":
        """Index of an `archives.RepoSource`."""
        return cls({f.path: f.text for f in source.files}, name=source.name, **kwargs)

    @classmethod
    def from_location(cls, location, **kwargs) -> "RepoIndex":
        """Index of a zip archive (GitHub zipball layout or not) or a directory."""
        from scraper.generator.archives import read_repository

        return cls.from_source(read_repository(location), **kwargs)

    def module(self, path: str) -> Optional[ModuleIndex]:
        """The indexed module at `path` (parsed on first use), or None when the repository has no such file."""
        if path not in self._modules:
            text = self.texts.get(path, "" if path in self.namespaces else None)
            if text is None:
                return None
            self.add_parsed(path, parse_source(text, path, max_tokens=self.tokens_left))
        return self._modules[path]

    def add_parsed(self, path: str, parsed: ParsedModule) -> ModuleIndex:
        """Register a module already parsed by the caller (saves parsing it twice); its tokens count against the
        repository's budget."""
        self.tokens_left -= parsed.tokens
        if parsed.skipped:
            self.skipped[path] = parsed.errors[0]
        self._modules[path] = index_module(path, parsed, self.imports_from_repo)
        return self._modules[path]

    def drop(self) -> None:
        """Let go of every tree and analysis (the index refers to itself through its aliases: without this, a
        repository's trees stay alive until the cyclic GC, which the generator keeps off, finds them)."""
        self._modules.clear()
        self._kernels.clear()
        self.cache.clear()
        self.aliases = RepoAliases(self)

    def triton_aliases(self, path: str) -> dict[str, str]:
        """Aliases of triton's decorators file `path` imports from the repository (detect.RepoAliases)."""
        return self.aliases.triton_aliases(path)

    def own_triton_aliases(self, path: str) -> dict[str, str]:
        """Aliases of triton's decorators file `path` binds itself (detect.RepoAliases)."""
        return self.aliases.own_triton_aliases(path)

    def kernels(self, path: str) -> list[JitFunction]:
        """The jit functions of file `path` (detect.find_kernels_in_tree with the repository's aliases), cached."""
        if path not in self._kernels:
            module = self.module(path)
            self._kernels[path] = [] if module is None else \
                find_kernels_in_tree(module.parsed, path, names=self.aliases.names(path))
        return self._kernels[path]

    def imports_from_repo(self, importer: str, node: ast.stmt) -> bool:
        """True when an import statement in `importer` names a module of this repository."""
        if isinstance(node, ast.ImportFrom):
            return bool(node.level) or self.find_module(importer, node.module, 0) is not None
        return any(self.find_module(importer, alias.name, 0) for alias in node.names)

    def is_allowed(self, module_name: str) -> bool:
        """True when `module_name` is an allow-listed library (never looked up in the repository)."""
        return module_name.split(".")[0] in self.allowed_imports

    def find_module(self, importer: str, module_name: Optional[str], level: int) -> Optional[str]:
        """Path of the repository file that `from <level dots><module_name> import ...` in `importer` names."""
        if level:
            package = posixpath.dirname(importer)
            for _ in range(level - 1):
                package = posixpath.dirname(package)
            base = posixpath.join(package, *module_name.split(".")) if module_name else package
            for candidate in (base + ".py", posixpath.join(base, "__init__.py")):
                if candidate in self.texts or candidate in self.namespaces:
                    return candidate.lstrip("/")
            return None
        if not module_name or self.is_allowed(module_name):
            return None
        candidates = self._by_dotted.get(module_name, [])
        if "." not in module_name:  # `import iris`: a file named iris.py is only it where Python would find it
            candidates = [p for p in candidates if self._importable_as(p, module_name, importer)]
        # the copy nearest to the importer wins (longest shared directory prefix), then the shortest path
        return min(candidates, key=lambda p: (-_shared_prefix(p, importer), len(p), p), default=None)

    def _importable_as(self, path: str, name: str, importer: str) -> bool:
        """True when top-level module `name` resolves to file `path` for code in `importer`: the file is not
        inside a regular package (its dotted name from its package root is `name`) and its root folder is one
        the importer runs from (the root itself, the repository's root, or a folder above the importer)."""
        folder = posixpath.dirname(path[:-len("/__init__.py")] if path.endswith("/__init__.py") else path)
        if self._root(folder) != folder:
            return False  # `pkg/ops/iris.py` is `pkg.ops.iris`, never `iris`
        return folder == "" or importer.startswith(folder + "/")

    def _root(self, folder: str) -> str:
        """The folder above which `folder` stops being a regular package (the sys.path entry it hangs from)."""
        if folder not in self._roots:
            inside = folder and posixpath.join(folder, "__init__.py") in self.texts
            self._roots[folder] = self._root(posixpath.dirname(folder)) if inside else folder
        return self._roots[folder]

    def submodule(self, package_path: str, name: str) -> Optional[str]:
        """Path of `name` as a submodule of the package whose __init__.py is `package_path` (None for a module)."""
        if posixpath.basename(package_path) != "__init__.py":
            return None
        base = posixpath.join(posixpath.dirname(package_path), name)
        for candidate in (base + ".py", posixpath.join(base, "__init__.py")):
            if candidate in self.texts or candidate in self.namespaces:
                return candidate
        return None


def _namespace_packages(texts: dict) -> set[str]:
    """`folder/__init__.py` for every folder (and folder above one) holding .py files without an __init__.py."""
    folders = set()
    for path in texts:
        folder = posixpath.dirname(path)
        while folder and folder not in folders:
            folders.add(folder)
            folder = posixpath.dirname(folder)
    return {f"{folder}/__init__.py" for folder in folders} - set(texts)


def _shared_prefix(a: str, b: str) -> int:
    count = 0
    for x, y in zip(a.split("/")[:-1], b.split("/")[:-1]):
        if x != y:
            break
        count += 1
    return count
