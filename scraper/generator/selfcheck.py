"""The static self-contained check: a module is self-contained when it compiles and every name it reads is
defined in it, imported by it, or a builtin. Nothing is executed.

It uses the compiler's own symbol tables (`symtable`, C speed): a name read in any scope that resolves to the
module's globals must be bound at module level or be a builtin. This is independent of the closure's own scope
analysis (scraper.generator.scopes), so it also catches the closure missing something."""

from __future__ import annotations

import re
import symtable
import warnings
from dataclasses import dataclass, field
from typing import Optional

from scraper.generator.scopes import BUILTINS


_STAR_IMPORT = re.compile(r"^\s*from\s+[\w.]+\s+import\s+\*", re.MULTILINE)


@dataclass
class SelfCheck:
    """Outcome of `check_module`."""

    compiles: bool
    missing: list = field(default_factory=list)  # names read but never bound (sorted)
    error: Optional[str] = None

    @property
    def self_contained(self) -> bool:
        return self.compiles and not self.missing


def global_reads(code: str, filename: str = "<generated>") -> tuple[set[str], set[str], bool]:
    """(names read from module scope, names bound at module scope, has a star import). Raises SyntaxError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        top = symtable.symtable(code, filename, "exec")
    reads: set[str] = set()
    bound = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported() or s.is_namespace()}
    bound |= {s.get_name() for s in top.get_symbols() if s.is_declared_global()}
    star = bool(_STAR_IMPORT.search(code))
    stack = [top]
    while stack:
        table = stack.pop()
        stack.extend(table.get_children())
        for symbol in table.get_symbols():
            if not symbol.is_referenced():
                continue
            if table is top or symbol.is_global():
                reads.add(symbol.get_name())
    return reads, bound, star


def check_module(code: str, filename: str = "<generated>") -> SelfCheck:
    """Parse `code` into symbol tables (no execution) and list the module-scope names read but never bound."""
    try:
        reads, bound, star = global_reads(code, filename)
    except (SyntaxError, ValueError, RecursionError) as exc:
        return SelfCheck(False, error=f"{type(exc).__name__}: {exc}")
    missing = sorted(reads - bound - BUILTINS)
    if star and missing:  # names may come from the star import; the check cannot know, so it says so
        return SelfCheck(True, missing=missing, error="star import: names not checkable")
    return SelfCheck(True, missing=missing)
