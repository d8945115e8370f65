"""What a piece of module-level source reads from and binds at module scope, from the compiler's symbol tables.

`module_symbols(text)` runs CPython's `symtable` (C speed, nothing executed) over a module or one top-level
statement and returns the names read from module scope anywhere in it (in any function, class or lambda: a
name that resolves to the globals) and the names bound at module level. Results are cached by text: a helper
shared by many kernels of a repository is analysed once, whichever closure copies it. The raw tables of
`_symtable` are read directly: the `symtable` module's wrapper objects cost more than the analysis itself.
"""

from __future__ import annotations

import _symtable
import functools
import re
import warnings
from dataclasses import dataclass
from typing import Optional

_SCOPE_OFF, _SCOPE_MASK = _symtable.SCOPE_OFF, _symtable.SCOPE_MASK
_GLOBAL_SCOPES = (_symtable.GLOBAL_IMPLICIT, _symtable.GLOBAL_EXPLICIT)
_BINDS = _symtable.DEF_LOCAL | _symtable.DEF_IMPORT
_STAR_IMPORT = re.compile(r"^[ \t]*from[ \t]+[\w.]+[ \t]+import[ \t]+\*", re.MULTILINE)


@dataclass(frozen=True)
class Symbols:
    """Module-scope facts of a source text; `error` is set (and the sets empty) when it does not compile."""

    reads: frozenset = frozenset()
    bound: frozenset = frozenset()
    star_import: bool = False
    error: Optional[str] = None

    @property
    def free(self) -> frozenset:
        """Names read from module scope that the text does not bind itself (builtins included)."""
        return self.reads - self.bound


@functools.lru_cache(maxsize=8192)
def module_symbols(text: str) -> Symbols:
    """Symbols of `text` compiled as a module (see the module docstring). Never raises for bad source."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            top = _symtable.symtable(text, "<generated>", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return Symbols(error=f"{type(exc).__name__}: {exc}")
    # a `global X` in a function binds nothing at module level until the function runs: X stays free (the
    # closure copies the module's `X = None`; unsloth's decorator reads it while the module is imported)
    bound = {name for name, flags in top.symbols.items() if flags & _BINDS}
    reads = {name for name, flags in top.symbols.items() if flags & _symtable.USE}
    stack = list(top.children)
    while stack:
        table = stack.pop()
        stack.extend(table.children)
        reads.update(name for name, flags in table.symbols.items()
                     if flags & _symtable.USE and (flags >> _SCOPE_OFF) & _SCOPE_MASK in _GLOBAL_SCOPES)
    return Symbols(frozenset(reads), frozenset(bound), "*" in text and bool(_STAR_IMPORT.search(text)))
