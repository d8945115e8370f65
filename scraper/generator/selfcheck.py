"""The static self-contained check: a module is self-contained when it compiles and every name it reads is
defined in it, imported by it, or a builtin. Nothing is executed.

It uses the compiler's own symbol tables (`symtable`, C speed, see symbols.py): a name read in any scope that
resolves to the module's globals must be bound at module level or be a builtin. It checks the module as
written (every block's text), not the closure's bookkeeping, so it also catches the closure missing something."""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass, field
from typing import Iterable, Optional

from scraper.generator.scopes import BUILTINS
from scraper.generator.symbols import module_symbols
from scraper.generator.syntax import attribute_uses

_MODULE_OBJECT = re.compile(r"^(\w+) = types\.ModuleType\(", re.M)
_ATTRIBUTE_SET = re.compile(r"^(\w+)\.(\w+) = ", re.M)


@dataclass
class SelfCheck:
    """Outcome of `check_module`."""

    compiles: bool
    missing: list = field(default_factory=list)  # names read but never bound (sorted)
    error: Optional[str] = None

    @property
    def self_contained(self) -> bool:
        return self.compiles and not self.missing


def check_module(code: str, filename: str = "<generated>") -> SelfCheck:
    """Compile `code` into symbol tables (no execution) and list the module-scope names read but never bound."""
    return check_blocks([code])


def _missing_module_attributes(blocks: list) -> set:
    """`X.attr` read somewhere but never set, for each X the module builds as `X = types.ModuleType(...)` (a
    repository module rebuilt by the closure; `language.math` read on one built without `math` fails with
    AttributeError on import, though every name is bound)."""
    objects = set().union(*(_module_facts(block)[0] for block in blocks))
    if not objects:
        return set()
    attributes = set().union(*(_module_facts(block)[1] for block in blocks))
    read = set()
    for block in blocks:
        for name in module_symbols(block).reads & objects:
            # the text's `X.attr` spellings are a superset of the attributes read (comments and strings add
            # some): only a block spelling one that is not set is parsed to know
            if not {f"{name}.{attr}" for attr in _spelled_attributes(block, name)} <= attributes:
                read.update(f"{name}.{attr}" for attr in _block_attribute_uses(block).get(name, ()))
    return read - attributes


@functools.lru_cache(maxsize=16384)  # a repository's shared blocks come back with every kernel that copies them
def _spelled_attributes(block: str, name: str) -> frozenset:
    """Every `name.attr` spelled in the text, also across line breaks, backslashes and comments (implicit
    line joining inside brackets allows `name  # ...` then `.attr` on the next line)."""
    gap = r"(?:\s|\\|#[^\n]*)*"
    return frozenset(re.findall(rf"\b{re.escape(name)}{gap}\.{gap}(\w+)", block))


@functools.lru_cache(maxsize=8192)
def _module_facts(block: str) -> tuple[frozenset, frozenset]:
    """(names a block builds as `X = types.ModuleType(...)`, the `X.attr` it sets at its top level)."""
    return frozenset(_MODULE_OBJECT.findall(block)), frozenset(f"{n}.{a}" for n, a in _ATTRIBUTE_SET.findall(block))


@functools.lru_cache(maxsize=4096)
def _block_attribute_uses(block: str) -> dict:
    try:
        return attribute_uses(ast.parse(block))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return {}


def check_blocks(blocks: Iterable[str]) -> SelfCheck:
    """check_module of the module made of `blocks` (top-level statements, joined by newlines), from each
    block's own symbol tables: a name read from module scope anywhere must be bound by some block. Each
    block's tables are cached, so the repository's shared helpers are compiled once, not once per kernel."""
    blocks = list(blocks)
    reads, bound, star = set(), set(), False
    for block in blocks:
        symbols = module_symbols(block)
        if symbols.error:
            return SelfCheck(False, error=symbols.error)
        reads |= symbols.reads
        bound |= symbols.bound
        star |= symbols.star_import
    missing = sorted((reads - bound - BUILTINS) | _missing_module_attributes(blocks))
    if star and missing:  # names may come from the star import; the check cannot know, so it says so
        return SelfCheck(True, missing=missing, error="star import: names not checkable")
    return SelfCheck(True, missing=missing)
