"""Static dependency closure: cut a definition out of a repository with everything it reads.

`extract_closure(index, path, qualname)` (index: repoindex.RepoIndex, the files and their name indexes)
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
import re
from dataclasses import dataclass, field
from typing import Iterable, Optional

from scraper.generator.detect import decorator_roots, foreign_decorator_count
from scraper.generator.fileindex import (Binding, ModuleIndex, index_function_scope, mutated_names,
                                         wrappers_of)
from scraper.generator.parse import source_segment
from scraper.generator.repoindex import DEFAULT_ALLOWED_IMPORTS, RepoIndex
from scraper.generator.resolve import resolver_of
from scraper.generator.scopes import BUILTINS, bound_names, class_early_reads, free_names
from scraper.generator.segments import statement_text
from scraper.generator.selfcheck import check_blocks
from scraper.generator.symbols import module_symbols
from scraper.generator.syntax import (DEFINITIONS, attribute_uses, branches, first_line, holders_of, is_main_guard, iter_statements,
                                      walk_definitions)

# Re-exported: callers outside the generator (suite/modules.py, run.py, main.py) import these from here.
__all__ = ["ClosureResult", "DEFAULT_ALLOWED_IMPORTS", "RepoIndex", "attribute_uses", "decorator_roots",
           "extract_closure", "find_definition"]

# a file name a statement builds a path to: the data a module reads from beside its own file
_DATA_FILE = re.compile(r"""["']([\w./-]*\.(?:ya?ml|json|toml|csv|txt|cfg|ini|pkl|pt|npy|npz|bin))["']""")
# Decorators that only make sense inside a class; a method lifted to module level goes without them.
_CLASS_ONLY_DECORATORS = {"staticmethod", "classmethod"}


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


MAX_BINDINGS = 256  # top-level statements binding one name that a closure follows (the cost is their square)


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
        # a copied module-level statement (not a def, class or import) reads a def or class of the repository:
        # importing the module runs project code (FlagGems' device detection), see _decorators_resolve
        self.runs_project_code = False

    def note_attributes(self, module: ModuleIndex, node: ast.AST, free: Iterable[str], depth: int) -> None:
        """Remember which attributes `node` reads on each name (for names that turn out to be repository
        modules: `from pkg import helpers as h` ... `h.f(x)` copies `f` and builds `h` as a module object).
        Only names of `free` (what `node` reads from its module) imported from outside an allowed library can
        be such modules; the tree is walked only when `node` reads one."""
        candidates = {name for name in free if _may_be_module(module, name, self.index)}
        if not candidates:
            return
        for name, attrs in attribute_uses(node).items():
            if name not in candidates:
                continue
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
        if bindings and len(bindings) > MAX_BINDINGS:  # `x=1` 20,000 times: each copy looks at all before it
            self.reasons.setdefault(name, "too_many_bindings")
        elif bindings:
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
        bindings = [b for b in bindings if not is_main_guard(b.node)] or bindings
        for binding in bindings:
            if binding.inner is not None and id(binding.node) in self.holders:
                self._use_binding(module, name, binding.inner, depth)
            elif binding.inner and _only_allowed_reimport(binding, name, self.index):
                # `if HAS_TRITON: import triton.language as tl ... (600 lines)`: the import line is what the
                # kernel needs, not the block (a fallback between two imports, try/except ImportError, stays whole)
                for inner in binding.inner:
                    self._use_import(module, name, inner, depth)
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
                if alias.asname or "." not in alias.name:  # `import pkg.helpers as h`, `import helpers`
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
            self.future[statement_text(module.text, future)] = None
        binds = _statement_binds(node)
        for name in sorted(binds):  # `X = 0` before `if c: X = 1`, also when the block came for another name
            if len(module.bindings.get(name, [])) > MAX_BINDINGS:
                self.reasons.setdefault(name, "too_many_bindings")
                continue
            earlier = self._earlier_bindings(module.bindings.get(name, []), node)
            if earlier:
                self._use_binding(module, name, earlier, depth + 1)
        text, free = _text_and_free_names(module, node)
        free = (free | _module_bound_early_reads(module, node)) - binds
        if "__file__" in free:
            self._note_data_file(module, node, text)
        if not self.runs_project_code and not isinstance(node, DEFINITIONS + (ast.Import, ast.ImportFrom)):
            self.runs_project_code = any(_reads_project_definition(module, name) for name in free)
        self.note_attributes(module, node, free, depth + 1)
        self.need_names(module, free, depth + 1, skip)
        self._add_block(text, binds, module.path)
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
            elif not is_main_guard(binding.node) and _position(binding.node) < _position(node):
                found.append(binding)
        return found

    def _mutators(self, module: ModuleIndex, name: str) -> list:
        """Top-level statements filling `name` in place; inside a statement holding the target, its own
        statements that do (the holder itself is not copied)."""
        found = []
        pending = list(module.mutators.get(name, []))
        while pending:
            statement = pending.pop(0)
            if is_main_guard(statement):  # does not run when the module is imported
                continue
            if id(statement) not in self.holders:
                found.append(statement)
                continue
            primary, alternatives = branches(statement)
            pending[:0] = [child for child in primary + alternatives if name in mutated_names(child)]
        return found

    def _note_data_file(self, module: ModuleIndex, node: ast.stmt, text: str) -> None:
        """A copied statement building a path from `__file__` to a data file (FlagGems' tuned configs in
        YAML), or doing so at import time, reads files beside its original file: the generated module, written
        elsewhere, would not find them, so it is not self-contained. A function that only may (fla's config
        cache, which falls back when the folder is not there) does not count."""
        literal = _DATA_FILE.search(text)
        if literal or not isinstance(node, DEFINITIONS):
            where = literal.group(1) if literal else module.path.split("::")[0]
            self.reasons.setdefault("__file__", f"data_file:{where}")

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

    def rendered_blocks(self) -> list:
        """The texts `render` joins: __future__ imports, allowed imports, copied statements."""
        return list(self.future) + list(self.imports) + self.blocks

    def render(self) -> str:
        """The module: __future__ imports, allowed imports, then the copied statements in dependency order."""
        heads = []
        if self.future:
            heads.append("\n".join(self.future))
        if self.imports:
            heads.append("\n".join(sorted(self.imports, key=lambda line: (not line.startswith("import "), line))))
        parts = ["\n\n".join(heads)] if heads else []
        previous_simple = False
        for block in self.blocks:
            simple = not block.lstrip().startswith(("def ", "async def ", "class ", "@"))
            if parts:  # simple statements in a row stay together; definitions get two blank lines around them
                parts.append("\n" if simple and previous_simple else "\n\n\n")
            parts.append(block.rstrip())
            previous_simple = simple
        return "".join(parts) + "\n"


def _position(node: ast.stmt) -> tuple[int, int]:
    return node.lineno, node.col_offset


def _alias_text(alias: ast.alias) -> str:
    return f"{alias.name} as {alias.asname}" if alias.asname else alias.name


def _import_line(alias: ast.alias) -> str:
    return f"import {_alias_text(alias)}"


def _statement_binds(node: ast.stmt) -> set[str]:
    """Names a top-level statement binds (memoized on the node: shared statements are asked many times)."""
    cached = getattr(node, "_binds", None)
    if cached is None:
        cached = node._binds = frozenset({node.name} if isinstance(node, DEFINITIONS) else bound_names([node]))
    return cached


def find_definition(module: ModuleIndex, qualname: str, lineno: Optional[int] = None):
    """(node, enclosing function or None) of the def/class `qualname` (the one starting at `lineno` if given)."""
    definitions = module.memo.get("definitions")
    if definitions is None:
        definitions = module.memo["definitions"] = {}
        for node, name, _, enclosing in walk_definitions(module.parsed.tree.body):
            definitions.setdefault(name, []).append((node, enclosing))
    for node, enclosing in definitions.get(qualname, []):
        if lineno is None or lineno in (node.lineno, first_line(node)):
            return node, enclosing
    return None, None


def _class_only_count(node, nested: bool) -> int:
    """Leading @staticmethod/@classmethod of a method lifted to module level."""
    count = 0
    for decorator in node.decorator_list if nested else []:
        if not (isinstance(decorator, ast.Name) and decorator.id in _CLASS_ONLY_DECORATORS):
            break
        count += 1
    return count


def statement_free_names(text: str, node: ast.AST) -> frozenset:
    """Names the statement `text` (the source of `node`) reads from module scope and does not bind, builtins
    included: from the compiler's symbol tables; from scopes.py's analysis of `node` for a statement that
    does not compile alone (`yield` or `return` in a function body seen as a scope)."""
    symbols = module_symbols(text)
    return free_names(node) if symbols.error else symbols.free


def _text_and_free_names(module: ModuleIndex, node: ast.stmt) -> tuple[str, frozenset]:
    """statement_text and statement_free_names of a top-level statement, memoized on the node."""
    cached = getattr(node, "_text_and_free", None)
    if cached is None:
        text = statement_text(module.text, node)
        cached = node._text_and_free = (text, statement_free_names(text, node))
    return cached


def _shadowed_base(closure: _Closure, scope: ModuleIndex, node) -> None:
    """`class Impl(Impl, nn.Module)`: a class whose bases (or decorators) read the name it rebinds reads the
    earlier binding of that name (lmdeploy imports the abstract Impl from another module): copy that one first."""
    if not isinstance(node, ast.ClassDef):
        return
    outer = node.bases + [keyword.value for keyword in node.keywords] + node.decorator_list
    if node.name not in {name for expression in outer for name in free_names(expression)}:
        return
    earlier = closure._earlier_bindings(scope.bindings.get(node.name, []), node)
    if earlier:
        closure._use_binding(scope, node.name, earlier, 1)


def _module_bound_early_reads(module: ModuleIndex, node: ast.stmt) -> frozenset:
    """The names a class body reads before binding them (scopes.class_early_reads) that `module` binds: those
    reads get the module's binding (only those: a class name read after its own def is the class's)."""
    if not isinstance(node, ast.ClassDef):
        return frozenset()
    memo = getattr(node, "_early_reads", None)  # per scope, on the node: a class is copied by many closures
    if memo is None:
        memo = node._early_reads = {}
    if module.path not in memo:
        memo[module.path] = class_early_reads(node, module.bindings)
    return memo[module.path]


def _trimmed_free_names(text: str, node, count: int) -> frozenset:
    """statement_free_names of a def/class without its `count` outermost decorators (`text` is that source)."""
    if not count:
        return statement_free_names(text, node)
    trimmed = copy.copy(node)
    trimmed.decorator_list = node.decorator_list[count:]
    trimmed.__dict__.pop("_free_names", None)
    return statement_free_names(text, trimmed)


def _may_be_module(module: ModuleIndex, name: str, index: RepoIndex) -> bool:
    """True when `name`, as `module` sees it, may be a repository module: bound by `import x.y [as z]` of the
    repository, or by `from x import name` where name is a submodule of x or x imports it (a re-export);
    memoized per file."""
    key = ("may_be_module", name)
    if key not in module.memo:
        scope = module
        while scope is not None and name not in scope.bindings:
            scope = scope.parent
        bindings = [c for b in (scope.bindings[name] if scope is not None else []) for c in [b] + (b.inner or [])]
        module.memo[key] = any(c.alias is not None and _may_import_module(c, index, module.path) for c in bindings)
    return module.memo[key]


def _may_import_module(binding: Binding, index: RepoIndex, importer: str) -> bool:
    if _imports_allowed(binding, index):
        return False
    node, alias = binding.node, binding.alias
    if isinstance(node, ast.Import):
        return True
    target_path = index.find_module(importer.split("::")[0], node.module, node.level)
    target = index.module(target_path) if target_path else None
    if target is None:
        return False
    return bool(index.submodule(target_path, alias.name)) or target.star_imports != [] or any(
        b.alias is not None or b.inner for b in target.bindings.get(alias.name, []))


def _only_allowed_reimport(binding: Binding, name: str, index: RepoIndex) -> bool:
    """True when a compound statement binds `name` on its main path only by imports of allowed libraries and
    its alternatives (else, except) import no other module under that name."""
    if not all(inner.alias is not None and _imports_allowed(inner, index) for inner in binding.inner):
        return False
    alternatives = branches(binding.node)[1]
    return not any(isinstance(node, (ast.Import, ast.ImportFrom)) and name in bound_names([node])
                   for node in iter_statements(alternatives))


def _imports_allowed(binding: Binding, index: RepoIndex) -> bool:
    node = binding.node
    if isinstance(node, ast.Import):
        return index.is_allowed(binding.alias.name)
    return not node.level and index.is_allowed(node.module or "")


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
    if drop_unresolvable_decorators:
        # FlagGems' @libentry() pulls in the project's whole runtime: without the outermost decorators that are
        # not triton's, the kernel (autotune configs and all) may stand alone; they go when their own closure
        # leaves something unresolved or runs project code on import (device detection that fails elsewhere)
        extra = foreign_decorator_count(node, index.aliases.names(module.path), first)
        if extra and not _decorators_resolve(index, scope, node.decorator_list[first:first + extra]):
            first += extra
    return _extract(index, module, scope, node, path, qualname, first)


def _decorators_resolve(index: RepoIndex, scope: ModuleIndex, decorators: list) -> bool:
    """True when the closure of these decorator expressions (as `scope` sees them) resolves every name; cached
    by decorator text and what its names are (a project decorator imported by a thousand files is judged once)."""
    free = frozenset().union(*(free_names(d) for d in decorators))
    key = ("decorators", tuple(source_segment(scope.text, d) for d in decorators),
           tuple(_origin(index, scope, name) for name in sorted(free)))
    if key not in index.cache:
        closure = _Closure(index)
        for decorator in decorators:
            closure.note_attributes(scope, decorator, free, 1)
        closure.need_names(scope, free, 1)
        index.cache[key] = not closure.reasons and not closure.runs_project_code
    return index.cache[key]


def _origin(index: RepoIndex, scope: ModuleIndex, name: str) -> tuple:
    """What `name` is in `scope`, as a cache key: for a name bound only by imports, the import texts and the
    repository definitions they reach (the same in every file importing them); else the file itself."""
    bindings = scope.bindings.get(name, []) if scope.parent is None else []
    if not bindings or any(b.alias is None or b.inner is not None for b in bindings):
        return name, scope.path
    texts = tuple(source_segment(scope.text, b.node) or "" for b in bindings)
    return name, texts, resolver_of(index).definitions(scope.path, name)


def _reads_project_definition(module: ModuleIndex, name: str) -> bool:
    """True when `name`, at the top level of `module`, is a def or class of the file or is imported from
    another file of the repository (memoized per file)."""
    key = ("project_definition", name)
    if key not in module.memo:
        scope = module
        while scope is not None and name not in scope.bindings:
            scope = scope.parent
        bindings = scope.bindings[name] if scope is not None else []
        module.memo[key] = any(isinstance(b.node, DEFINITIONS) or (b.alias is not None and module.in_repo
                                                                    and module.in_repo(module.path.split("::")[0], b.node))
                               for b in bindings)
    return module.memo[key]


def _extract(index: RepoIndex, module: ModuleIndex, scope: ModuleIndex, node, path: str, qualname: str,
             dropped: int) -> ClosureResult:
    """One closure of `node` without its `dropped` outermost decorators, checked by selfcheck."""
    closure = _Closure(index)
    closure.holders = holders_of(module.parsed.tree.body, node)
    for future in module.future:
        closure.future[statement_text(module.text, future)] = None
    if scope is module:  # a helper that calls back into the target must not copy it a second time
        closure.visited.add((module.path, node.name))
        closure.done_statements.add((module.path, node.lineno, node.col_offset))
    text = statement_text(module.text, node, dropped)
    free = (_trimmed_free_names(text, node, dropped) | _module_bound_early_reads(scope, node)) - {node.name}
    closure.note_attributes(scope, node, free, 1)
    closure.need_names(scope, free, 1)
    _shadowed_base(closure, scope, node)
    closure._add_block(text, {node.name}, path)
    if scope is module:  # `kernel = triton.jit(kernel)` / `fast = triton.jit(kernel)` after the def
        aliases = {**index.own_triton_aliases(path), **index.triton_aliases(path)}
        for statement in closure._mutators(module, node.name) + wrappers_of(module, node.name, aliases):
            closure.add_statement(module, statement, 1, skip={node.name})
    code = closure.render()
    check = check_blocks(closure.rendered_blocks())
    reasons = dict(closure.reasons)
    for name in check.missing:
        reasons.setdefault(name, "undefined")
    if not check.compiles:
        reasons.setdefault("<compile>", check.error or "does not compile")
    return ClosureResult(
        code=code, name=node.name, qualname=qualname, path=path, unresolved=sorted(reasons), reasons=reasons,
        # the closure's own findings count too: `language.math` on a rebuilt module object binds no name the
        # symbol tables could miss, yet fails with AttributeError on import
        self_contained=check.self_contained and not reasons, dependencies=closure.dependencies,
        conflicts=sorted(closure.conflicts),
        dropped_decorators=[source_segment(module.text, d) or "" for d in node.decorator_list[:dropped]],
    )
