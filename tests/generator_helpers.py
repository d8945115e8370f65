"""Fixtures and independent oracles for the generator tests (tests/test_generator*.py)."""

from __future__ import annotations

import ast
import builtins
import zipfile
from pathlib import Path

FIXTURE_REPO = Path(__file__).resolve().parent / "fixtures" / "repos" / "acme-kernels"

# Written by hand from the fixture files (not from the generator's output): path -> jit functions' qualnames.
EXPECTED_KERNELS = {
    "acme/utils.py": ["_twice", "_helper"],
    "acme/ops/add.py": ["add_kernel", "scale_kernel"],
    "acme/ops/spellings.py": ["k_module_alias", "k_call_form", "k_from_import_as", "k_assigned_alias",
                              "k_heuristics", "k_under_libentry", "raw_body", "k_under_if"],
    "acme/ops/plain_jit.py": ["k_from_import"],
    "acme/ops/modobj.py": ["k_module_attribute"],
    "acme/ops/configs.py": ["k_loop_configs"],
    "acme/ops/fwd_a.py": ["_fwd_kernel"],
    "acme/ops/fwd_b.py": ["_fwd_kernel"],
    "acme/ops/nested.py": ["Ops.k_static_method", "Ops.k_method", "make_kernel.<locals>.k_in_function"],
    "acme/ops/external.py": ["k_external"],
    "acme/broken/py312_fstring.py": ["k_after_bad_line", "k_last"],
    "acme/broken/py2.py": ["k_in_py2_file"],
    "acme/broken/latin1.py": ["k_latin1"],
    "acme/broken/cookie_latin1.py": ["k_cookie"],
}
EXPECTED_COUNT = sum(len(v) for v in EXPECTED_KERNELS.values())
# Kernels whose closure cannot be complete, by construction of the fixture.
NOT_SELF_CONTAINED = {("acme/ops/external.py", "k_external"), ("acme/ops/nested.py", "make_kernel.<locals>.k_in_function")}
ZIPBALL_TOP = "acme-kernels-1a2b3c4"


def make_zipball(source: Path, dest: Path, top: str = ZIPBALL_TOP, extra: dict | None = None) -> Path:
    """Zip `source` in GitHub's zipball layout (`<top>/<files>`), plus `extra` {entry name: bytes} verbatim."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{top}/", b"")
        for path in sorted(source.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, f"{top}/{path.relative_to(source).as_posix()}")
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return dest


def file_lines(path: Path, lineno: int, end_lineno: int) -> str:
    """Lines lineno..end_lineno of a fixture file (decoded as the file declares), joined without the last newline."""
    data = path.read_bytes()
    encoding = "latin-1" if b"coding: latin-1" in data[:100] else "utf-8"
    lines = data.decode(encoding, errors="replace").splitlines(keepends=True)
    return "".join(lines[lineno - 1:end_lineno]).rstrip("\n")


def coarse_unbound_names(code: str) -> set[str]:
    """Oracle for the self-contained check, independent of the generator: every Name read anywhere, minus every
    name bound anywhere (assignments, defs, params, imports, loop targets), minus builtins. Coarser than real
    scoping (a local anywhere hides a global of the same name), which is fine for the fixtures."""
    tree = ast.parse(code)
    read, bound = set(), set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    return read - bound
