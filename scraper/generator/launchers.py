"""Who launches each jit kernel, and which jit functions are only helpers of other kernels.

A kernel alone does not show how to call it. `RepoLaunches(index)` scans the repository's files that mention
triton for launches: `kernel[grid](...)` (also `kernel[grid]` kept and called later) and `kernel.run(...)`,
where `kernel` resolves (resolve.Resolver: imports, aliases, `ops.kernel` on a module, a wrapper applied by
hand such as `k2 = triton.autotune(...)(k)`, a local `fn = k_a if c else k_b` of the launching function) to a
jit function of the repository. The function or method holding the launch is the kernel's **launcher**; its
own closure (closure.extract_closure: exact source, with the kernel and everything both read) is cut out once
per launcher. A jit function read by another jit function and never launched is a **helper**.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Optional

from scraper.generator.closure import ClosureResult, attribute_uses, extract_closure, find_definition
from scraper.generator.resolve import Target, resolver_of
from scraper.generator.segments import statement_text
from scraper.generator.symbols import module_symbols
from scraper.generator.syntax import DEFINITIONS, FUNCTIONS, first_line, is_compound, iter_statements, walk_definitions

# what a launch looks like in the text: `...](` (a subscript called) or `.run(`; only files with one are walked
_LAUNCH_TEXT = re.compile(r"\]\s*\(|\.run\s*\(")
# test and benchmark code launches kernels too, but a library's own host function teaches more
_TEST_PATH = re.compile(r"(^|/)(tests?|benchmarks?|bench|examples?)(/|$)|(^|/)(test_|bench_)")
_CACHE_KEY = "launches"


@dataclass(frozen=True)
class LaunchSite:
    """One launch of a kernel: where, how, and the function holding it."""

    path: str  # file of the launching function
    host: str  # its qualname ("launch", "Op.forward", "outer.<locals>.inner")
    host_lineno: int  # its first line, decorators included
    lineno: int  # line of the launch
    how: str  # "grid" (`kernel[grid](...)`) | "run" (`kernel.run(...)`)


def repo_launches(index) -> "RepoLaunches":
    """The RepoLaunches of a repository index, built on first use and kept in the index's cache."""
    if _CACHE_KEY not in index.cache:
        index.cache[_CACHE_KEY] = RepoLaunches(index)
    return index.cache[_CACHE_KEY]


class RepoLaunches:
    """Launch sites and helper roles of every jit function of a repository."""

    def __init__(self, index) -> None:
        self.index = index
        self.resolver = resolver_of(index)
        paths = [path for path, text in index.texts.items() if "triton" in text]
        kernels = [k for path in paths for k in index.kernels(path) if not k.nested]
        self.kernels = {Target(k.path, k.name) for k in kernels}
        self.sites: dict[Target, list] = {}
        self.wrappers: dict[Target, tuple] = {}  # function launching its parameter -> (position, name)
        self.read_by_jit: set[Target] = set()
        self._closures: dict[tuple, ClosureResult] = {}
        for path in paths:
            self._scan_launches(path)
        if self.wrappers:
            for path in paths:
                self._scan_wrapper_calls(path)
        for kernel in kernels:
            self._note_reads(Target(kernel.path, kernel.name), kernel.node)

    def role(self, kernel) -> str:
        """"helper" for a jit function read by other jit functions and launched nowhere, else "kernel"."""
        target = Target(kernel.path, kernel.name)
        helper = not kernel.nested and target in self.read_by_jit and not self.sites.get(target)
        return "helper" if helper else "kernel"

    def sites_of(self, kernel) -> list:
        """Every launch site of `kernel`, the preferred one first (same file, then library code, then path)."""
        sites = self.sites.get(Target(kernel.path, kernel.name), []) if not kernel.nested else []
        return sorted(sites, key=lambda s: (s.path != kernel.path, bool(_TEST_PATH.search(s.path)), s.path, s.lineno))

    def launcher(self, kernel) -> Optional[tuple]:
        """(preferred LaunchSite, its ClosureResult) of `kernel`, or None when nothing launches it."""
        sites = self.sites_of(kernel)
        if not sites:
            return None
        site = sites[0]
        key = (site.path, site.host, site.host_lineno)
        if key not in self._closures:
            self._closures[key] = extract_closure(self.index, site.path, site.host, site.host_lineno)
        return site, self._closures[key]

    def launcher_record(self, kernel) -> Optional[dict]:
        """The `launcher` field of `kernel`'s record (see docs/generator.md), or None when nothing launches it."""
        found = self.launcher(kernel)
        if found is None:
            return None
        site, closure = found
        module = self.index.module(site.path)
        node, _ = find_definition(module, site.host, site.host_lineno)
        return {
            "path": site.path, "qualname": site.host, "name": node.name, "lineno": site.host_lineno,
            "end_lineno": node.end_lineno, "launch_lineno": site.lineno, "how": site.how,
            "source": statement_text(module.text, node), "code": closure.code,
            "self_contained": closure.self_contained, "unresolved": closure.unresolved,
            "sites": len(self.sites_of(kernel)),
        }

    def _scan_launches(self, path: str) -> None:
        text = self.index.texts[path]
        lines = _match_lines(text)
        if not lines:
            return
        for host, host_lines in _hosts(self.index.module(path), lines):
            if self._is_jit(path, host):
                continue
            for target, lineno, how in self._launches_in(path, host, host_lines):
                site = LaunchSite(path, host.qualname, first_line(host.node), lineno, how)
                self.sites.setdefault(target, []).append(site)

    def _scan_wrapper_calls(self, path: str) -> None:
        """Launch sites where a function calls a launching wrapper with a kernel (`_launch(kernel, grid)`)."""
        text = self.index.texts[path]
        names = {target.name for target in self.wrappers}
        lines = _match_lines(text, re.compile(r"\b(?:%s)\s*\(" % "|".join(map(re.escape, sorted(names)))))
        if not lines:
            return
        for host, host_lines in _hosts(self.index.module(path), lines):
            local, calls = _host_facts(host.node, host_lines)
            for call in (n for n in calls if isinstance(n, ast.Call)):
                for wrapper in self.resolver.expression(path, call.func) if isinstance(call.func, (ast.Name, ast.Attribute)) else ():
                    argument = _argument(call, *self.wrappers.get(wrapper, (None, None)))
                    for target in self._kernel_targets(path, argument, local) if argument is not None else ():
                        site = LaunchSite(path, host.qualname, first_line(host.node), call.lineno, f"wrapper:{wrapper.name}")
                        self.sites.setdefault(target, []).append(site)

    def _is_jit(self, path: str, host) -> bool:
        return any(k.node is host.node for k in self.index.kernels(path))

    def _launches_in(self, path: str, host, lines: set):
        """(kernel target, line, how) of each launch inside function `host` (a Definition); a module-level
        function launching one of its parameters (`def launch(kernel, grid): kernel[grid](...)`) is noted as
        a wrapper: its callers launch what they pass it."""
        function = host.node
        local, calls = _host_facts(function, lines)
        params = _positional_params(function)
        for node in calls:
            launched, how = _launched_expression(node)
            if launched is None:
                continue
            if isinstance(launched, ast.Name) and launched.id in params and launched.id not in local:
                if host.parent == "module":
                    self.wrappers[Target(path, function.name)] = (params.index(launched.id), launched.id)
                continue
            for target in self._kernel_targets(path, launched, local):
                yield target, node.lineno, how

    def _kernel_targets(self, path: str, expr: ast.AST, local: dict) -> list:
        """The jit kernels `expr` (a name, `mod.name`, or a local bound to such) may be."""
        if isinstance(expr, ast.Name) and expr.id in local:
            names = [n for value in local[expr.id] for n in ast.walk(value) if isinstance(n, (ast.Name, ast.Attribute))]
        else:
            names = [expr]
        found = [t for n in names for t in self.resolver.expression(path, n)]
        return [t for t in dict.fromkeys(found) if t in self.kernels]

    def _note_reads(self, target: Target, node: ast.AST) -> None:
        """Mark the jit functions a jit function reads (calls) by name or as `module.name`."""
        text = statement_text(self.index.texts[target.path], node)
        for name in module_symbols(text).free:
            for found in self.resolver.definitions(target.path, name):
                if found.name is None:
                    self._note_module_reads(target, node, name, found.path)
                elif found in self.kernels and found != target:
                    self.read_by_jit.add(found)

    def _note_module_reads(self, target: Target, node: ast.AST, name: str, module_path: str) -> None:
        for attr in attribute_uses(node).get(name, ()):
            for found in self.resolver.member(module_path, attr):
                if found in self.kernels and found != target:
                    self.read_by_jit.add(found)


def _match_lines(text: str, pattern: re.Pattern = _LAUNCH_TEXT) -> list[int]:
    """1-based numbers of the lines where `pattern` (by default: launch-looking text) matches."""
    lines, line, offset = [], 1, 0
    for match in pattern.finditer(text):
        line += text.count("\n", offset, match.start())
        offset = match.start()
        if not lines or lines[-1] != line:
            lines.append(line)
    return lines


def _host_function(functions: list, line: int):
    """The function a caller calls around `line`: the outermost of `functions` (walk_definitions'
    Definitions) holding it that is not nested in another function (a module-level function or a method;
    a launch inside `def run(): k[grid](...)` nested in `def op(...)` belongs to `op`, which allocates and
    calls). None at module level."""
    for definition in functions:
        if definition.enclosing is None and first_line(definition.node) <= line <= definition.node.end_lineno:
            return definition
    return None


def _launched_expression(node: ast.AST) -> tuple:
    """(the launched object, how) for `x[grid](...)`, `f = x[grid]` (called later) and `x.run(...)`, else
    (None, None)."""
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Subscript) and isinstance(func.value, (ast.Name, ast.Attribute)):
            return func.value, "grid"
        if isinstance(func, ast.Attribute) and func.attr == "run" and isinstance(func.value, (ast.Name, ast.Attribute)):
            return func.value, "run"
    elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Subscript):
        if isinstance(node.value.value, (ast.Name, ast.Attribute)):
            return node.value.value, "grid"
    return None, None


def _positional_params(function: ast.AST) -> list:
    """Names of a function's positional parameters, in order."""
    return [a.arg for a in function.args.posonlyargs + function.args.args]


def _argument(call: ast.Call, position: Optional[int], name: Optional[str]) -> Optional[ast.AST]:
    """The argument a call passes for the parameter at `position` named `name` (None when it passes none)."""
    if position is None:
        return None
    if position < len(call.args) and not any(isinstance(a, ast.Starred) for a in call.args[:position + 1]):
        return call.args[position]
    return next((k.value for k in call.keywords if k.arg == name), None)


def _hosts(module, lines: list) -> list:
    """[(the function holding some of `lines` (a Definition, see _host_function), those lines)] of a file."""
    functions = module.memo.get("functions")
    if functions is None:
        functions = module.memo["functions"] = [d for d in walk_definitions(module.parsed.tree.body)
                                                 if isinstance(d.node, FUNCTIONS)]
    hosts: dict[int, tuple] = {}
    for line in lines:
        host = _host_function(functions, line)
        if host is not None:
            hosts.setdefault(id(host.node), (host, set()))[1].add(line)
    return list(hosts.values())


def _host_facts(function: ast.AST, lines: set) -> tuple[dict, list]:
    """({local name: [values assigned to it]} for the plain `name = value` statements of a function, [the
    calls and assignments inside its simple statements that span one of `lines`]). Only those statements are
    walked, with a plain stack (ast.walk's generators cost more than the walk)."""
    local: dict[str, list] = {}
    found = []
    for statement in iter_statements(function.body):
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(statement.targets[0], ast.Name):
            local.setdefault(statement.targets[0].id, []).append(statement.value)
        if is_compound(statement) or isinstance(statement, DEFINITIONS):
            continue
        if any(statement.lineno <= line <= statement.end_lineno for line in lines):
            found.extend(_calls_and_assignments(statement))
    return local, sorted(found, key=lambda n: (n.lineno, n.col_offset))


def _calls_and_assignments(statement: ast.stmt) -> list:
    found = []
    stack = [statement]
    while stack:
        node = stack.pop()
        if node.__class__ is ast.Call or node.__class__ is ast.Assign:
            found.append(node)
        for name in getattr(node, "_fields", ()):
            value = getattr(node, name, None)
            if value.__class__ is list:
                stack.extend(value)
            elif isinstance(value, ast.AST):
                stack.append(value)
    return found
