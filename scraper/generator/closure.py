"""Static dependency closure: cut a definition out of a repository with everything it reads.

`RepoIndex` holds a repository's Python files (parsed lazily, cached); `extract_closure(index, path, qualname)`
returns a self-contained module for any def or class of the repository (jit kernels, helpers, nn.Module
classes): the definitions it reads, transitively, across files through absolute and relative imports; module
constants and `tl.constexpr` globals; what its decorators read (autotune config lists, `get_configs()` helpers,
heuristics lambdas); statements that fill a config list at module level; and imports of allow-listed libraries.
Source text comes from `ast.get_source_segment` and is never rewritten (nested definitions are only dedented).
Names that cannot be resolved are reported with a reason, never silently dropped. Nothing is executed.
"""

from __future__ import annotations

import ast
import copy
import posixpath
import re
import sys
import textwrap
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from scraper.generator.detect import TritonNames, _at_column, function_source, iter_statements
from scraper.generator.parse import ParsedModule, line_bytes, parse_source, source_segment
from scraper.generator.scopes import BUILTINS, bound_names, free_names
from scraper.generator.selfcheck import check_module

# Libraries a generated module may import: the standard library plus what a Triton kernel runs with
# (`packaging`: kernels pick code paths by `version.parse(triton.__version__)`; it is in every pip environment).
DEFAULT_ALLOWED_IMPORTS = frozenset(sys.stdlib_module_names) | {"torch", "triton", "numpy", "typing_extensions",
                                                                 "packaging"}
_MUTATING_METHODS = {"append", "extend", "insert", "update", "add", "setdefault", "__setitem__"}
_COMPOUND = (ast.If, ast.Try, ast.With, ast.For, ast.While)
# Decorators that only make sense inside a class; a method lifted to module level goes without them.
_CLASS_ONLY_DECORATORS = {"staticmethod", "classmethod"}


@dataclass
class Binding:
    """A top-level statement binding a name; for imports, the one alias that binds it."""

    node: ast.stmt
    alias: Optional[ast.alias] = None
    # for a compound statement copied whole: the name's bindings inside it, statement by statement (used when
    # the statement holds the definition being extracted, which must not be copied a second time)
    inner: Optional[list] = None


@dataclass
class ModuleIndex:
    """One parsed file of a repository with its top-level bindings."""

    path: str
    parsed: ParsedModule
    bindings: dict = field(default_factory=dict)  # name -> [Binding] in source order
    mutators: dict = field(default_factory=dict)  # name -> [top-level statements that fill it]
    star_imports: list = field(default_factory=list)  # ImportFrom nodes with `*`
    future: list = field(default_factory=list)  # `from __future__ import ...` nodes
    in_repo: Optional[Callable] = None  # (path, import node) -> bool, see index_module
    parent: Optional["ModuleIndex"] = None  # for a function body seen as a scope: the module around it
    params: set = field(default_factory=set)  # for a function body: its parameters (not resolvable statically)

    @property
    def text(self) -> str:
        return self.parsed.text


def index_module(path: str, parsed: ParsedModule, in_repo: Optional[Callable] = None) -> ModuleIndex:
    """Bindings, mutators, star and __future__ imports of a parsed file's top level (through if/try/with).

    `in_repo(path, import_node)` tells whether an import names a module of the repository (relative imports
    always do). A name bound inside an if/try/with/for statement is bound to that whole statement (it is copied
    whole, so `X = a` / `if c: X = b` and `try: ... except ImportError: ...` keep choosing at run time), except
    in a statement with a repository import that runs, which is indexed statement by statement."""
    module = ModuleIndex(path, parsed)
    module.in_repo = in_repo
    setters = _global_setters(parsed.tree.body)
    for statement in parsed.tree.body:
        _index_statement(module, statement)
        for name in _mutated_names(statement) | _set_by_call(statement, setters):
            module.mutators.setdefault(name, []).append(statement)
    return module


def _global_setters(body: list) -> dict[str, set[str]]:
    """{function: module-level names it assigns through `global`} for the top-level functions of a file."""
    setters = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names = {name for inner in ast.walk(node) if isinstance(inner, ast.Global) for name in inner.names}
            if names:
                setters[node.name] = names
    return setters


def _set_by_call(statement: ast.stmt, setters: dict[str, set[str]]) -> set[str]:
    """Names a top-level call statement sets through a same-file function's `global` (lightllm's
    `_setup_logger()` filling `_default_handler`): such a call is a mutator of those names, copied with them."""
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call) and \
            isinstance(statement.value.func, ast.Name):
        return setters.get(statement.value.func.id, set())
    return set()


def index_function_scope(module: ModuleIndex, function: ast.AST) -> ModuleIndex:
    """A function's body indexed like a module (its local imports, helpers and constants), falling back to
    `module` for the rest: what a kernel defined inside a function reads from around it."""
    scope = ModuleIndex(f"{module.path}::{function.name}", module.parsed, parent=module, in_repo=module.in_repo)
    args = function.args
    scope.params = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg] if a}
    for statement in function.body:
        _index_statement(scope, statement)
        for name in _mutated_names(statement):
            scope.mutators.setdefault(name, []).append(statement)
    return scope


def _bind(module: ModuleIndex, name: str, binding: Binding) -> None:
    module.bindings.setdefault(name, []).append(binding)


def _index_statement(module: ModuleIndex, node: ast.stmt) -> None:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        _bind(module, node.name, Binding(node))
    elif isinstance(node, ast.ImportFrom) and node.module == "__future__":
        module.future.append(node)
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        for alias in node.names:
            if alias.name == "*":
                module.star_imports.append(node)
            else:
                _bind(module, alias.asname or alias.name.split(".")[0], Binding(node, alias))
    elif isinstance(node, (ast.Assign, ast.AnnAssign)) and getattr(node, "value", None) is not None:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for name in sorted(bound_names(targets)):
            _bind(module, name, Binding(node))
    elif isinstance(node, _COMPOUND) or type(node).__name__ == "TryStar":
        _index_compound(module, node)


def _index_compound(module: ModuleIndex, node: ast.stmt) -> None:
    """Bind every name a compound statement binds to the whole statement (its guard, its alternatives and
    all), keeping the bindings inside it for when it holds the target; a statement with a repository import
    that runs cannot be copied as text and is indexed statement by statement (its main path wins)."""
    inner = ModuleIndex(module.path, module.parsed, in_repo=module.in_repo)
    _index_branches(inner, node)
    module.star_imports.extend(inner.star_imports)
    if _runs_repository_import(module, node):
        if isinstance(node, (ast.For, ast.With)):  # loop / with targets bind to the whole statement
            heads = [node.target] if isinstance(node, ast.For) else [i.optional_vars for i in node.items if i.optional_vars]
            for name in sorted(bound_names(heads)):
                _bind(module, name, Binding(node))
        for name, bindings in inner.bindings.items():
            module.bindings.setdefault(name, []).extend(bindings)
        return
    for name in sorted(bound_names([node])):
        _bind(module, name, Binding(node, inner=inner.bindings.get(name, [])))


def _index_branches(module: ModuleIndex, node: ast.stmt) -> None:
    """Index the statements inside a compound statement; a name the main path binds is taken from the main
    path only (`if triton is not None: import triton.language as tl` / `else: class tl: ...` must not end with
    the stand-in); the other branches add only new names."""
    primary, alternatives = _branches(node)
    for child in primary:
        _index_statement(module, child)
    taken = bound_names(primary)
    side = ModuleIndex(module.path, module.parsed, in_repo=module.in_repo)
    for child in alternatives:
        _index_statement(side, child)
    module.star_imports.extend(side.star_imports)
    for name, bindings in side.bindings.items():
        if name not in taken:
            module.bindings.setdefault(name, []).extend(bindings)


def _branches(node: ast.stmt) -> tuple[list, list]:
    """(statements of the main path, statements of the alternatives) of a compound statement."""
    if isinstance(node, ast.If):
        return node.body, node.orelse
    if isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
        return node.body + node.orelse + node.finalbody, [s for h in node.handlers for s in h.body]
    return node.body + getattr(node, "orelse", []), []


def _runs_repository_import(module: ModuleIndex, node: ast.stmt) -> bool:
    """True when a compound statement holds an import of the repository (relative, or of one of its modules)
    that runs: copied as text it would fail outside the repository. Imports under `if TYPE_CHECKING:` never
    run, so they do not count."""
    stack = [node]
    while stack:
        child = stack.pop()
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            stack.extend(child.orelse)
            continue
        if isinstance(child, ast.ImportFrom) and (child.level or child.module == "__future__"):
            return True
        if isinstance(child, (ast.Import, ast.ImportFrom)) and module.in_repo and module.in_repo(module.path, child):
            return True
        stack.extend(c for c in ast.iter_child_nodes(child) if isinstance(c, (ast.stmt, ast.excepthandler)))
    return False


def _is_main_guard(node: ast.stmt) -> bool:
    """`if __name__ == "__main__":` without an else (a script's harness, never run on import)."""
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and not node.orelse and isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Eq) and {_name_or_text(test.left), _name_or_text(test.comparators[0])}
            == {"__name__", "__main__"})


def _name_or_text(node: ast.expr) -> Optional[str]:
    if isinstance(node, ast.Name):
        return node.id
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _is_type_checking(test: ast.expr) -> bool:
    """`TYPE_CHECKING` or `typing.TYPE_CHECKING` (true only for static type checkers)."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _mutated_names(statement: ast.stmt) -> set[str]:
    """Names a top-level statement fills in place: `X.append(...)`, `X += ...`, `X[k] = ...`."""
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)):
        return set()
    if isinstance(statement, (ast.Assign, ast.AnnAssign)) and not any(
            isinstance(t, ast.Subscript) for t in getattr(statement, "targets", [getattr(statement, "target", None)])):
        # a plain assignment fills nothing in place (skips walking big literal tables); `f = triton.jit(f)` re-binds
        wrapped = _rewrapped_name(statement) if isinstance(statement, ast.Assign) else None
        return {wrapped} if wrapped else set()
    names = set()
    for node in _walk_module_scope(statement):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
            if node.func.attr in _MUTATING_METHODS:
                names.add(node.func.value.id)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store) and isinstance(node.value, ast.Name):
            names.add(node.value.id)
    wrapped = _rewrapped_name(statement)
    if wrapped:
        names.add(wrapped)
    return names


def _walk_module_scope(statement: ast.stmt):
    """ast.walk that does not enter function, class or lambda bodies (what runs there is not module level)."""
    stack = [statement]
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))


def _wrappers_of(module: ModuleIndex, name: str, aliases: Iterable[str] = ()) -> list:
    """Top-level `other = something.jit(name)` (or `other = my_jit(name)` for a name in `aliases`) statements:
    the kernel as the file's users see it."""
    found = []
    for statement in module.parsed.tree.body:
        value = getattr(statement, "value", None)
        if (isinstance(statement, ast.Assign) and isinstance(value, ast.Call) and value.args
                and isinstance(value.args[0], ast.Name) and value.args[0].id == name):
            callee = value.func.func if isinstance(value.func, ast.Call) else value.func
            called = getattr(callee, "attr", None) or getattr(callee, "id", None)
            if called == "jit" or (isinstance(callee, ast.Name) and called in aliases):
                found.append(statement)
    return found


def _rewrapped_name(statement: ast.stmt) -> Optional[str]:
    """`f = triton.jit(f)` (a decorator applied by hand, as unsloth does): the name it re-binds, else None."""
    if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(statement.value, ast.Call)):
        return None
    target, call = statement.targets[0], statement.value
    if isinstance(target, ast.Name) and call.args and isinstance(call.args[0], ast.Name) and call.args[0].id == target.id:
        return target.id
    return None


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
        self._modules: dict[str, ModuleIndex] = {}
        self._own_aliases: dict[str, dict] = {}  # path -> aliases of triton's decorators the file itself binds
        self._aliases: dict[str, dict] = {}  # path -> triton_aliases(path)
        self._import_froms: dict[str, list] = {}  # path -> its ImportFrom statements that may name the repository
        self._by_dotted: dict[str, list[str]] = {}
        for path in self.texts:
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
            if path not in self.texts:
                return None
            self._modules[path] = index_module(path, parse_source(self.texts[path], path), self.imports_from_repo)
        return self._modules[path]

    def add_parsed(self, path: str, parsed: ParsedModule) -> ModuleIndex:
        """Register a module already parsed by the caller (saves parsing it twice)."""
        self._modules[path] = index_module(path, parsed, self.imports_from_repo)
        return self._modules[path]

    def imports_from_repo(self, importer: str, node: ast.stmt) -> bool:
        """True when an import statement in `importer` names a module of this repository."""
        if isinstance(node, ast.ImportFrom):
            return bool(node.level) or self.find_module(importer, node.module, 0) is not None
        return any(self.find_module(importer, alias.name, 0) for alias in node.names)

    def triton_aliases(self, path: str) -> dict[str, str]:
        """{local name: "triton.jit" | "triton.autotune" | "triton.heuristics"} for the names file `path` uses
        as decorators (or calls at module level) and imports from another file of the repository where they are
        aliases of triton's decorators: `from .u import my_jit` with `my_jit = triton.jit` (or
        `from triton import jit as my_jit`, or `functools.partial(triton.jit, ...)`) in u.py, through
        re-exports (`__init__.py`) and star imports. The `aliases` argument of detect.find_kernels_in_tree.
        Only files whose text holds the name are parsed."""
        if path not in self._aliases:
            module = self.module(path)
            found = {}
            if module is not None and self._repository_import_froms(module):
                found = self._imported_aliases(module, decorator_roots(module.text), {path})
            self._aliases[path] = found
        return self._aliases[path]

    def _imported_aliases(self, module: ModuleIndex, wanted: set, seen: set) -> dict[str, str]:
        found: dict[str, str] = {}
        stars = []
        for node in self._repository_import_froms(module):
            for alias in node.names:
                local = alias.asname or alias.name
                if alias.name == "*":
                    stars.append(node)
                elif local in wanted:
                    target = self.find_module(module.path, node.module, node.level)
                    resolved = self._alias_in(target, alias.name, seen) if target else None
                    if resolved:
                        found[local] = resolved
        for node in stars:  # `from .u import *` then `@my_jit`
            target = self.find_module(module.path, node.module, node.level)
            for name in sorted(wanted - set(found)) if target else []:
                resolved = None if name.startswith("_") else self._alias_in(target, name, seen)
                if resolved:
                    found[name] = resolved
        return found

    def _repository_import_froms(self, module: ModuleIndex) -> list:
        """The `from X import ...` statements of a file (anywhere in it) that may name a repository module."""
        cached = self._import_froms.get(module.path)
        if cached is None:
            cached = self._import_froms[module.path] = [
                node for node in iter_statements(module.parsed.tree.body)
                if isinstance(node, ast.ImportFrom) and node.module != "__future__"
                and (node.level or (node.module and not self.is_allowed(node.module)))]
        return cached

    def own_triton_aliases(self, path: str) -> dict[str, str]:
        """{name: triton decorator} for the aliases of triton's decorators file `path` binds itself
        (`my_jit = triton.jit`, `from triton import jit as my_jit`, `functools.partial(triton.jit, ...)`)."""
        if path not in self._own_aliases:
            module = self.module(path)
            self._own_aliases[path] = TritonNames(module.parsed.tree).aliases() \
                if module is not None and "triton" in module.text and _MAY_ALIAS.search(module.text) else {}
        return self._own_aliases[path]

    def _alias_in(self, path: str, name: str, seen: set) -> Optional[str]:
        """The triton decorator that top-level `name` of file `path` is an alias of (own or imported), else None."""
        text = self.texts.get(path, "")
        if path in seen or (name not in text and "import *" not in text):
            return None  # an import cycle, or a file that cannot bind the name
        module = self.module(path)
        if module is None:
            return None
        own = self.own_triton_aliases(path)
        if name in own:
            return own[name]
        return self._imported_aliases(module, {name}, seen | {path}).get(name)

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
                if candidate in self.texts:
                    return candidate.lstrip("/")
            return None
        if not module_name or self.is_allowed(module_name):
            return None
        candidates = self._by_dotted.get(module_name, [])
        # the copy nearest to the importer wins (longest shared directory prefix), then the shortest path
        return min(candidates, key=lambda p: (-_shared_prefix(p, importer), len(p), p), default=None)

    def submodule(self, package_path: str, name: str) -> Optional[str]:
        """Path of `name` as a submodule of the package whose __init__.py is `package_path` (None for a module)."""
        if posixpath.basename(package_path) != "__init__.py":
            return None
        base = posixpath.join(posixpath.dirname(package_path), name)
        for candidate in (base + ".py", posixpath.join(base, "__init__.py")):
            if candidate in self.texts:
                return candidate
        return None


# `@my_jit`, `@ my_jit.x(...)` and a module-level `k = my_jit(fn)`: the names that can make a def a kernel
_ROOT_NAMES = re.compile(r"^[ \t]*@[ \t]*(\w+)|^\w+[ \t]*=[ \t]*(\w+)[ \t]*[(.]", re.M)


# a line that can bind an alias of triton's decorators: `x = ...jit/autotune/heuristics...` or `from triton... import`
_MAY_ALIAS = re.compile(r"^[ \t]*(?:\w+[ \t]*(?::[^=\n]*)?=[^=\n]*\b(?:jit|autotune|heuristics|partial)\b"
                        r"|from[ \t]+triton\b)", re.M)


def decorator_roots(text: str) -> set[str]:
    """Names at the root of the decorators (`my_jit` of `@my_jit(...)`, `u` of `@u.jit`) and of module-level
    calls (`k = my_jit(fn)`) of a file: a cheap superset of the names that can make a def a jit kernel."""
    return {a or b for a, b in _ROOT_NAMES.findall(text)}


def _shared_prefix(a: str, b: str) -> int:
    count = 0
    for x, y in zip(a.split("/")[:-1], b.split("/")[:-1]):
        if x != y:
            break
        count += 1
    return count


@dataclass
class ClosureResult:
    """A definition cut out with its dependency closure."""

    code: str
    name: str
    qualname: str
    path: str
    unresolved: list  # names read but not resolvable (sorted)
    reasons: dict  # unresolved name -> reason (undefined, external:<module>, module_object, enclosing_scope, ...)
    self_contained: bool
    dependencies: list  # "path:name" of every copied definition, in output order
    conflicts: list  # names two different copied statements both bind
    dropped_decorators: list = field(default_factory=list)

    @property
    def imports(self) -> list:
        return [line for line in self.code.splitlines() if line.startswith(("import ", "from "))]


class _Closure:
    """Accumulates the statements, imports and aliases of one closure."""

    def __init__(self, index: RepoIndex, max_depth: int = 60) -> None:
        self.index = index
        self.max_depth = max_depth
        self.future: dict[str, None] = {}
        self.imports: dict[str, None] = {}
        self.blocks: list[str] = []
        self.done_statements: set = set()
        self.visited: set = set()
        self.bound_by: dict[str, set] = {}  # output name -> files whose copied blocks bind it
        self.reasons: dict[str, str] = {}
        self.conflicts: set[str] = set()
        self.dependencies: list[str] = []
        self.attr_uses: dict[tuple, set] = {}  # (module path, name) -> attributes read on it (`tle.program_id`)
        self.module_objects: dict[tuple, tuple] = {}  # (module path, name) -> (target module path, attrs done)
        self.forwards: dict[tuple, tuple] = {}  # re-exported name -> (module path, name) it comes from
        self.namespaces: dict[tuple, set] = {}  # (target module path, local name) -> attributes already set
        # compound statements holding the definition being extracted: never copied whole (the target would be
        # there twice); the bindings inside them are used instead
        self.holders: set[int] = set()

    def note_attributes(self, module: ModuleIndex, node: ast.AST, depth: int) -> None:
        """Remember which attributes `node` reads on each name (for names that turn out to be repository
        modules: `from pkg import helpers as h` ... `h.f(x)` copies `f` and builds `h` as a module object)."""
        for name, attrs in attribute_uses(node).items():
            key = (module.path, name)
            seen = set()
            while key is not None and key not in seen:
                seen.add(key)
                self.attr_uses.setdefault(key, set()).update(attrs)
                if key in self.module_objects:
                    self._fill_module_object(key, depth)
                key = self.forwards.get(key)

    def need_names(self, module: ModuleIndex, names: Iterable[str], depth: int, skip=frozenset()) -> None:
        for name in sorted(names):
            if name not in skip:
                self.need(module, name, depth)

    def need(self, module: ModuleIndex, name: str, depth: int) -> None:
        """Make `name`, as `module` sees it at top level, available in the output."""
        key = (module.path, name)
        if key in self.visited:
            return
        self.visited.add(key)
        if depth > self.max_depth:
            self.reasons.setdefault(name, "too_deep")
            return
        bindings = module.bindings.get(name)
        if bindings:
            self._use_binding(module, name, bindings, depth)
        elif module.parent is not None:
            if name in module.params:
                self.reasons.setdefault(name, "enclosing_scope")
            else:
                self.need(module.parent, name, depth)
        elif not self._from_star_imports(module, name, depth) and name not in BUILTINS:
            self.reasons.setdefault(name, "undefined")

    def _use_binding(self, module: ModuleIndex, name: str, bindings: list, depth: int) -> None:
        # every top-level statement binding `name`, in file order: `X = a` then `if c: X = b` works as in the file;
        # an `if __name__ == "__main__":` block does not run on import: it counts only when nothing else binds
        bindings = [b for b in bindings if not _is_main_guard(b.node)] or bindings
        for binding in bindings:
            if binding.inner is not None and id(binding.node) in self.holders:
                self._use_binding(module, name, binding.inner, depth)
            elif binding.alias is None:
                self.add_statement(module, binding.node, depth)
            else:
                self._use_import(module, name, binding, depth)

    def _use_import(self, module: ModuleIndex, name: str, binding: Binding, depth: int) -> None:
        node, alias = binding.node, binding.alias
        if isinstance(node, ast.Import):
            if self.index.is_allowed(alias.name):
                self.imports[_import_line(alias)] = None
            elif self.index.find_module(module.path, alias.name, 0):
                target_path = self.index.find_module(module.path, alias.name, 0)
                if alias.asname:  # `import pkg.helpers as h`
                    self._make_module_object(module, name, target_path, depth)
                else:  # `import pkg.helpers` then `pkg.helpers.f`: not followed
                    self.reasons.setdefault(name, "module_object")
            else:
                self.reasons.setdefault(name, f"external:{alias.name.split('.')[0]}")
            return
        if node.level == 0 and self.index.is_allowed(node.module or ""):
            self.imports[f"from {node.module} import {_alias_text(alias)}"] = None
            return
        target_path = self.index.find_module(module.path, node.module, node.level)
        if target_path is None:
            where = ("." * node.level) + (node.module or "")
            self.reasons.setdefault(name, f"external:{where.split('.')[0] or where}" if not node.level else f"missing_module:{where}")
            return
        self._import_from_repo(module, target_path, alias, name, depth)

    def _import_from_repo(self, module: ModuleIndex, target_path: str, alias: ast.alias, local: str, depth: int) -> None:
        target = self.index.module(target_path)
        submodule = self.index.submodule(target_path, alias.name)
        if submodule and all(b.alias is not None for b in target.bindings.get(alias.name, [])):
            # `from pkg import sub` where sub is a module (the package may import it too): a module object
            self._make_module_object(module, local, submodule, depth)
            return
        forwarded = (target.path, alias.name)
        self.forwards[(module.path, local)] = forwarded
        self.attr_uses.setdefault(forwarded, set()).update(self.attr_uses.get((module.path, local), set()))
        self.need(target, alias.name, depth + 1)
        if alias.name in self.reasons:
            self.reasons.setdefault(local, self.reasons[alias.name])
        elif local != alias.name:
            self._add_block(f"{local} = {alias.name}", {local}, module.path)

    def _make_module_object(self, module: ModuleIndex, local: str, target_path: str, depth: int) -> None:
        """`local` names a repository module: copy the attributes read on it and build it as a module object
        (types.ModuleType, which Triton accepts as a global inside kernels)."""
        key = (module.path, local)
        if not self.attr_uses.get(key):
            self.reasons.setdefault(local, "module_object")
            return
        namespace = (target_path, local)
        if namespace not in self.namespaces:  # two files importing one module share one object
            self.namespaces[namespace] = set()
            self.imports["import types"] = None
            self._add_block(f"{local} = types.ModuleType({local!r})", {local}, module.path)
        self.module_objects[key] = (target_path, local, self.namespaces[namespace])
        self._fill_module_object(key, depth)

    def _fill_module_object(self, key: tuple, depth: int) -> None:
        target_path, local, done = self.module_objects[key]
        target = self.index.module(target_path)
        for attr in sorted(self.attr_uses.get(key, set()) - done):
            done.add(attr)
            if self.index.submodule(target_path, attr) and attr not in target.bindings:
                self.reasons.setdefault(f"{local}.{attr}", "module_object")
                continue
            self.need(target, attr, depth + 1)
            if attr in self.reasons:
                self.reasons.setdefault(f"{local}.{attr}", self.reasons[attr])
            else:
                self._add_block(f"{local}.{attr} = {attr}", set(), target_path)

    def _from_star_imports(self, module: ModuleIndex, name: str, depth: int) -> bool:
        for node in module.star_imports:
            if node.level == 0 and self.index.is_allowed(node.module or ""):
                continue  # names of an allowed library's star import cannot be listed statically
            target_path = self.index.find_module(module.path, node.module, node.level)
            target = self.index.module(target_path) if target_path else None
            if target is not None and (name in target.bindings or target.star_imports):
                self.need(target, name, depth + 1)
                if name not in self.reasons:
                    return True
        for node in module.star_imports:
            if node.level == 0 and self.index.is_allowed(node.module or "") and name not in BUILTINS:
                self.imports[f"from {node.module} import *"] = None
                return True
        return False

    def add_statement(self, module: ModuleIndex, node: ast.stmt, depth: int, skip=frozenset()) -> None:
        """Copy a top-level statement after everything it reads, then the statements that fill what it binds."""
        key = (module.path, node.lineno, node.col_offset)
        if key in self.done_statements:
            return
        self.done_statements.add(key)
        for future in module.future:
            self.future[_statement_text(module.text, future)] = None
        binds = _statement_binds(node)
        for name in sorted(binds):  # `X = 0` before `if c: X = 1`, also when the block came for another name
            earlier = self._earlier_bindings(module.bindings.get(name, []), node)
            if earlier:
                self._use_binding(module, name, earlier, depth + 1)
        self.note_attributes(module, node, depth + 1)
        self.need_names(module, free_names(node) - binds, depth + 1, skip)
        self._add_block(_statement_text(module.text, node), binds, module.path)
        self.dependencies.append(f"{module.path}:{','.join(sorted(binds)) or node.lineno}")
        for name in sorted(binds):
            for mutator in self._mutators(module, name):
                self.add_statement(module, mutator, depth + 1)

    def _earlier_bindings(self, bindings: list, node: ast.stmt) -> list:
        """The bindings before statement `node` in the file (inside a holder of the target, its own ones)."""
        found = []
        for binding in bindings:
            if binding.inner is not None and id(binding.node) in self.holders:
                found.extend(self._earlier_bindings(binding.inner, node))
            elif not _is_main_guard(binding.node) and _position(binding.node) < _position(node):
                found.append(binding)
        return found

    def _mutators(self, module: ModuleIndex, name: str) -> list:
        """Top-level statements filling `name` in place; inside a statement holding the target, its own
        statements that do (the holder itself is not copied)."""
        found = []
        pending = list(module.mutators.get(name, []))
        while pending:
            statement = pending.pop(0)
            if _is_main_guard(statement):  # does not run when the module is imported
                continue
            if id(statement) not in self.holders:
                found.append(statement)
                continue
            primary, alternatives = _branches(statement)
            pending[:0] = [child for child in primary + alternatives if name in _mutated_names(child)]
        return found

    def _add_block(self, text: str, binds: set, origin: str) -> None:
        """Append a block binding `binds`, copied from (or made for) file `origin`. A name bound by blocks of two
        files is a conflict (the later wins); rebinding in one file (`X = 0`, `if c: X = 1`) is the file's own."""
        origin = origin.split("::")[0]  # a function scope's statements belong to its file
        for name in binds:
            origins = self.bound_by.setdefault(name, set())
            origins.add(origin)
            if len(origins) > 1:
                self.conflicts.add(name)
        self.blocks.append(text)

    def render(self) -> str:
        """The module: __future__ imports, allowed imports, then the copied statements in dependency order."""
        heads = []
        if self.future:
            heads.append("\n".join(self.future))
        if self.imports:
            heads.append("\n".join(sorted(self.imports, key=lambda line: (not line.startswith("import "), line))))
        out = "\n\n".join(heads)
        previous_simple = False
        for block in self.blocks:
            simple = not block.lstrip().startswith(("def ", "async def ", "class ", "@"))
            separator = "\n" if simple and previous_simple else "\n\n\n"
            out = f"{out}{separator}{block.rstrip()}" if out else block.rstrip()
            previous_simple = simple
        return out + "\n"


def _position(node: ast.stmt) -> tuple[int, int]:
    return node.lineno, node.col_offset


def _alias_text(alias: ast.alias) -> str:
    return f"{alias.name} as {alias.asname}" if alias.asname else alias.name


def _import_line(alias: ast.alias) -> str:
    return f"import {_alias_text(alias)}"


def _statement_binds(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    return bound_names([node])


def _statement_text(text: str, node: ast.AST) -> str:
    """Exact source of a statement (decorators included), dedented when it sits inside a block."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        segment = function_source(text, node)
        start = (node.decorator_list[0].lineno, _at_column(text, node.decorator_list[0])) if node.decorator_list \
            else (node.lineno, node.col_offset)
    else:
        segment, start = source_segment(text, node) or "", (node.lineno, node.col_offset)
    return _dedent(text, start, segment + _trailing_comment(text, node))


def _trailing_comment(text: str, node: ast.AST) -> str:
    """The `  # comment` after a statement's last token on its last line (ast segments stop before it)."""
    rest = line_bytes(text, node.end_lineno)[node.end_col_offset:]
    return rest.decode("utf-8", "replace").rstrip() if rest.strip().startswith(b"#") else ""


def _dedent(text: str, start: tuple, segment: str) -> str:
    """Dedent a segment that starts at byte column start[1] of line start[0] (its first line lacks the indent)."""
    if start[1] <= 0:
        return segment
    prefix = line_bytes(text, start[0])[: start[1]].decode("utf-8", "replace")
    if prefix.strip():  # `if x: y = 1` on one line: the indent of what follows is unknown, use spaces
        prefix = " " * len(prefix)
    return textwrap.dedent(prefix + segment)


def walk_definitions(body, prefix="", parent=None):
    """Yield (node, qualname, enclosing function or None) for every def and class, nested ones included."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            qualname = f"{prefix}{node.name}"
            yield node, qualname, parent
            is_class = isinstance(node, ast.ClassDef)
            inner_prefix = f"{qualname}." if is_class else f"{qualname}.<locals>."
            yield from walk_definitions(node.body, inner_prefix, parent if is_class else node)
        elif isinstance(node, _COMPOUND) or type(node).__name__ == "TryStar":
            for child in ("body", "orelse", "finalbody"):
                yield from walk_definitions(getattr(node, child, []), prefix, parent)
            for handler in getattr(node, "handlers", []):
                yield from walk_definitions(handler.body, prefix, parent)


def holders_of(body: list, target: ast.AST) -> set[int]:
    """ids of the compound statements (if/try/with/for/while, at any depth, also inside an enclosing def or
    class) that hold `target`."""
    holders: set[int] = set()
    statements = list(body)
    while statements:
        statement = statements.pop()
        if statement is target or not statement.lineno <= target.lineno <= (statement.end_lineno or 0):
            continue
        if not isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            holders.add(id(statement))
        for child in ("body", "orelse", "finalbody"):
            statements.extend(getattr(statement, child, []))
        for handler in getattr(statement, "handlers", []):
            statements.extend(handler.body)
    return holders


def find_definition(module: ModuleIndex, qualname: str, lineno: Optional[int] = None):
    """(node, enclosing function or None) of the def/class `qualname` (the one starting at `lineno` if given)."""
    for node, name, enclosing in walk_definitions(module.parsed.tree.body):
        if name == qualname and (lineno is None or lineno in (node.lineno, _first_line(node))):
            return node, enclosing
    return None, None


def _first_line(node) -> int:
    return min([node.lineno] + [d.lineno for d in node.decorator_list])


def _lifted_source(module: ModuleIndex, node, first_decorator: int) -> str:
    """Source of the target from its `first_decorator`-th decorator on, dedented when it sits in a block."""
    if not first_decorator:
        return _statement_text(module.text, node)
    segment = function_source(module.text, node, first_decorator=first_decorator)
    remaining = node.decorator_list[first_decorator:]
    start = (remaining[0].lineno, _at_column(module.text, remaining[0])) if remaining else (node.lineno, node.col_offset)
    return _dedent(module.text, start, segment + _trailing_comment(module.text, node))


def attribute_uses(node: ast.AST) -> dict:
    """{name: attributes read on it} for every `name.attr` in `node` (memoized on the node)."""
    cached = getattr(node, "_attribute_uses", None)
    if cached is None:
        cached = {}
        for child in ast.walk(node):
            if isinstance(child, ast.Attribute) and isinstance(child.value, ast.Name):
                cached.setdefault(child.value.id, set()).add(child.attr)
        node._attribute_uses = cached
    return cached


def _class_only_count(node, nested: bool) -> int:
    """Leading @staticmethod/@classmethod of a method lifted to module level."""
    count = 0
    for decorator in node.decorator_list if nested else []:
        if not (isinstance(decorator, ast.Name) and decorator.id in _CLASS_ONLY_DECORATORS):
            break
        count += 1
    return count


def _project_decorator_count(index: RepoIndex, module: ModuleIndex, node, start: int) -> int:
    """How many outermost decorators from `start` on are not triton's (a project's `@libentry()`)."""
    names = TritonNames(module.parsed.tree, index.triton_aliases(module.path))
    count = 0
    for decorator in node.decorator_list[start:]:
        if names.triton_role(decorator) is not None:
            break
        count += 1
    return count if count < len(node.decorator_list) - start or not isinstance(node, ast.ClassDef) else 0


def _free_without_decorators(node, count: int) -> frozenset:
    """free_names of a def/class as if its `count` outermost decorators were not there."""
    if not count:
        return free_names(node)
    trimmed = copy.copy(node)
    trimmed.decorator_list = node.decorator_list[count:]
    trimmed.__dict__.pop("_free_names", None)
    return free_names(trimmed)


def extract_closure(index: RepoIndex, path: str, qualname: str, lineno: Optional[int] = None,
                    drop_unresolvable_decorators: bool = True) -> ClosureResult:
    """Cut the def or class `qualname` of file `path` out of the repository with its static dependency closure.

    Works for any definition (jit kernels, helpers, torch.nn.Module classes). Outermost decorators that are
    not triton's and cannot be resolved are left out (listed in `dropped_decorators`) unless
    `drop_unresolvable_decorators` is False. Raises KeyError when the file or the definition is not there."""
    module = index.module(path)
    if module is None:
        raise KeyError(f"no file {path!r} in {index.name or 'the repository'}")
    node, enclosing = find_definition(module, qualname, lineno)
    if node is None:
        raise KeyError(f"no definition {qualname!r} in {path}")
    scope = index_function_scope(module, enclosing) if enclosing is not None else module
    first = _class_only_count(node, "." in qualname)
    result = _extract(index, module, scope, node, path, qualname, first)
    if drop_unresolvable_decorators and not result.self_contained:
        # FlagGems' @libentry() pulls in the project's whole runtime: without the outermost decorators that are
        # not triton's, the kernel (autotune configs and all) may stand alone; keep that when it does better
        extra = _project_decorator_count(index, module, node, first)
        if extra:
            alternative = _extract(index, module, scope, node, path, qualname, first + extra)
            if len(alternative.unresolved) < len(result.unresolved):
                result = alternative
    return result


def _extract(index: RepoIndex, module: ModuleIndex, scope: ModuleIndex, node, path: str, qualname: str,
             dropped: int) -> ClosureResult:
    """One closure of `node` without its `dropped` outermost decorators, checked by selfcheck."""
    closure = _Closure(index)
    closure.holders = holders_of(module.parsed.tree.body, node)
    for future in module.future:
        closure.future[_statement_text(module.text, future)] = None
    if scope is module:  # a helper that calls back into the target must not copy it a second time
        closure.visited.add((module.path, node.name))
        closure.done_statements.add((module.path, node.lineno, node.col_offset))
    closure.note_attributes(scope, node, 1)
    closure.need_names(scope, _free_without_decorators(node, dropped) - {node.name}, 1)
    closure._add_block(_lifted_source(module, node, dropped), {node.name}, path)
    if scope is module:  # `kernel = triton.jit(kernel)` / `fast = triton.jit(kernel)` after the def
        aliases = {**index.own_triton_aliases(path), **index.triton_aliases(path)}
        for statement in closure._mutators(module, node.name) + _wrappers_of(module, node.name, aliases):
            closure.add_statement(module, statement, 1, skip={node.name})
    code = closure.render()
    check = check_module(code, f"{path}:{qualname}")
    reasons = dict(closure.reasons)
    for name in check.missing:
        reasons.setdefault(name, "undefined")
    if not check.compiles:
        reasons.setdefault("<compile>", check.error or "does not compile")
    return ClosureResult(
        code=code, name=node.name, qualname=qualname, path=path, unresolved=sorted(reasons), reasons=reasons,
        self_contained=check.self_contained, dependencies=closure.dependencies, conflicts=sorted(closure.conflicts),
        dropped_decorators=[source_segment(module.text, d) or "" for d in node.decorator_list[:dropped]],
    )
