"""What each discovery looks for (`scrape_github.py --discover`): its searches, and the text test on an archive's
`.py` files that confirms a repository.

* `triton` (the default): repositories with Triton kernels, the generator's input. Repository search for Triton in
  the name, description, topics or README, and code search for `triton.jit`; confirmed by a `.py` file that
  mentions both `triton` and `jit` as words.
* `pytorch`: Python repositories using PyTorch, the kind KernelBook drew from through paritybench (whose crawler
  searched `pytorch language:Python stars:>100`), the modules suite's input. Repository search only: a code search
  for `nn.Module` would match millions of files, most of them in repositories under --min-stars, and each
  repository it adds costs a `/repos/{o}/{r}` call before its stars are known. Confirmed by a `.py` file that
  defines a subclass of torch's nn.Module.

Both tests are cheap pre-filters on the text (0 API calls, one pass with the archive's CRC check): the generator
and the modules suite's listing do the real AST detection. Every scan counts the files of every discovery, so a
manifest line says how many files each test found and a repository another discovery downloaded is checked on
disk, without a request.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from scraper.github.manifest import NO_NN_MODULE, NO_TRITON

_TRITON = re.compile(rb"\btriton\b")
_JIT = re.compile(rb"\bjit\b")
_CLASS = re.compile(rb"class[ \t]+\w+[ \t]*\(([^)]*)\)")
_IMPORT = re.compile(rb"(?:from[ \t]+([\w.]+)[ \t]+)?import[ \t]+\(?([^)]*)")
# torch.nn.Module and the modules that define it (what `from torch.nn.modules import Module` names)
TORCH_MODULE = frozenset({b"torch.nn.Module", b"torch.nn.modules.Module", b"torch.nn.modules.module.Module"})
# A class's bases or an import's names in parentheses span at most this many lines and bytes; longer statements
# are not read, nor statements past the first MAX_STATEMENTS of a file (none of torch's own .py files has more than
# 194). With these caps each line is read once: a hostile 2 MiB file (230 000 unclosed `class a(`, a megabyte of
# spaces before each statement, 120 000 imports) takes about 0.1 s, where patterns over the whole text took 5 to 11 s.
MAX_STATEMENT_LINES = 20
MAX_STATEMENT_BYTES = 4000
MAX_STATEMENTS = 5000
STATEMENT_STARTS = tuple(keyword + space for keyword in (b"class", b"import", b"from") for space in (b" ", b"\t"))


def has_triton(text: bytes) -> bool:
    """True when a file mentions both `triton` and `jit` as words."""
    # `in` first: a pattern that starts with \b is tried at every position; most files never name triton
    return b"triton" in text and b"jit" in text and bool(_TRITON.search(text) and _JIT.search(text))


def has_nn_module(text: bytes) -> bool:
    """True when a file defines a class with a base that its own imports make torch's nn.Module:
    `class X(nn.Module)` after `from torch import nn` or `import torch.nn as nn`, `class X(torch.nn.Module)` after
    `import torch`, `class X(Module)` after `from torch.nn import Module`, any alias of these. Flax's
    `nn.Module` (`from flax import linen as nn`) is not one."""
    if b"Module" not in text or b"torch" not in text:
        return False
    names: dict[bytes, bytes] = {}
    bases: list[bytes] = []
    for statement in itertools.islice(statements(text), MAX_STATEMENTS):
        if not statement.startswith(b"class"):
            bind_imports(statement, names)
            continue
        own = class_bases(statement)
        if any(resolve(base, names) in TORCH_MODULE for base in own):  # the usual file: at its first class
            return True
        bases += own
    return any(resolve(base, names) in TORCH_MODULE for base in bases)  # a name imported after the class


def statements(text: bytes) -> Iterator[bytes]:
    """The class and import statements of a file, each without its indentation and comments, a parenthesized
    list continued over several lines joined into one (see MAX_STATEMENT_LINES)."""
    lines = text.split(b"\n")
    index = 0
    while index < len(lines):
        line = lines[index].lstrip()
        index += 1
        if not line.startswith(STATEMENT_STARTS):  # `classes = "("` is none: it would join the lines after it
            continue
        parts = [line.split(b"#", 1)[0]]
        depth = _depth(parts[0])
        while depth > 0 and len(parts) < MAX_STATEMENT_LINES and index < len(lines):
            parts.append(lines[index].split(b"#", 1)[0])
            depth += _depth(parts[-1])
            index += 1
        statement = b" ".join(parts)
        if len(statement) <= MAX_STATEMENT_BYTES:
            yield statement


def _depth(code: bytes) -> int:
    """How many more parentheses a line opens than it closes."""
    return code.count(b"(") - code.count(b")")


def class_bases(statement: bytes) -> list[bytes]:
    """The base classes of a class statement as dotted names (keywords such as metaclass= left out)."""
    match = _CLASS.match(statement)
    if not match:
        return []
    parts = (b"".join(part.split()) for part in match.group(1).split(b","))
    return [part for part in parts if part and b"=" not in part]


def bind_imports(statement: bytes, names: dict[bytes, bytes]) -> None:
    """Add the names an import statement binds to `names`, each with the dotted name it stands for: `import
    torch.nn` binds `torch`, `import torch.nn as nn` binds `nn` to `torch.nn`, `from torch import nn` binds `nn`
    to `torch.nn`."""
    match = _IMPORT.match(statement)
    if not match:
        return
    module, listed = match.groups()
    for part in listed.split(b";")[0].split(b","):
        words = part.split()
        if not words:
            continue
        alias = words[2] if len(words) == 3 and words[1] == b"as" else None
        if module:
            names[alias or words[0]] = module + b"." + words[0]
        else:
            names[alias or words[0].split(b".")[0]] = words[0] if alias else words[0].split(b".")[0]


def resolve(dotted: bytes, names: dict[bytes, bytes]) -> bytes:
    """`nn.Module` -> `torch.nn.Module` when `nn` stands for `torch.nn`; b"" when its first name is not imported."""
    head, dot, rest = dotted.partition(b".")
    full = names.get(head)
    return full + dot + rest if full else b""


@dataclass(frozen=True)
class Discovery:
    """One kind of repository the stage finds: its default searches, the test that confirms an archive, and
    where a repository whose archive fails it is recorded."""

    name: str
    query: str  # repository search, without stars:
    code_query: Optional[str]  # code search, without size:; None: repository search only
    count_key: str  # the manifest key counting the .py files that pass `matches`
    matches: Callable[[bytes], bool]
    rejected_file: str  # repositories whose archive failed the test, so reruns skip them
    reject_reason: str  # rejects.jsonl's reason (and skipped_known_<reason>)
    missing: str  # what the archive lacked, for rejects.jsonl

    def confirms(self, counts: dict) -> bool:
        """True when a scan's (or a manifest line's) count of this discovery's files is above 0."""
        count = counts.get(self.count_key)
        return type(count) is int and count > 0


TRITON = Discovery("triton", query="triton in:name,description,topics,readme language:python",
                   code_query="triton.jit language:python", count_key="triton_files", matches=has_triton,
                   rejected_file=NO_TRITON, reject_reason="no_triton", missing="no .py file mentions triton and jit")
PYTORCH = Discovery("pytorch", query="pytorch language:python", code_query=None, count_key="nn_module_files",
                    matches=has_nn_module, rejected_file=NO_NN_MODULE, reject_reason="no_nn_module",
                    missing="no .py file defines a subclass of torch.nn.Module")
DISCOVERIES = {discovery.name: discovery for discovery in (TRITON, PYTORCH)}
DEFAULT_DISCOVERY = TRITON.name


def zero_counts() -> dict[str, int]:
    """{count_key: 0} for every discovery: what a scan starts from."""
    return {discovery.count_key: 0 for discovery in DISCOVERIES.values()}


def count_file(counts: dict[str, int], text: bytes) -> None:
    """Add one .py file's text to `counts`: 1 for each discovery whose test it passes."""
    for discovery in DISCOVERIES.values():
        counts[discovery.count_key] += discovery.matches(text)


def still_confirmed(found: list[str], counts: dict) -> list[str]:
    """The discoveries in `found` (a manifest line's) whose test a new archive's `counts` still pass; a name this
    version does not know is kept (it cannot be checked)."""
    return [name for name in found if name not in DISCOVERIES or DISCOVERIES[name].confirms(counts)]
