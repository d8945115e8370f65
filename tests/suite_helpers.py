"""One helper for every test that runs `run_inductor_suite.py --suite modules` on small modules it writes itself:
the listing (modules.jsonl, one {"name", "class_name", "code"} per module, as scraper.modules.listing writes it),
the run on this machine's CPU (`--gpus none --device cpu`, by default `--backend none`: nothing compiled), and
the manifest it leaves, by model name."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Union

import run_inductor_suite

CPU = ("--gpus", "none", "--device", "cpu")
Modules = Union[dict, Iterable]  # {name: code}, [(name, code)], or listing entries as dicts


def class_name_of(code: str) -> str:
    """The module's class: the last class the code defines (helpers come first)."""
    return code.split("class ")[-1].split("(")[0].split(":")[0].strip()


def listing_entries(modules: Modules, header: str = "") -> list[dict]:
    """The listing's lines for `modules`; `header` (imports) goes before each code."""
    pairs = modules.items() if isinstance(modules, dict) else modules
    entries = []
    for item in pairs:
        if isinstance(item, dict):
            entries.append(item)
        else:
            name, code = item
            entries.append({"name": name, "class_name": class_name_of(code), "code": header + code})
    return entries


def write_listing(path: Path, modules: Modules, header: str = "") -> Path:
    path.write_text("".join(json.dumps(entry) + "\n" for entry in listing_entries(modules, header)),
                    encoding="utf-8")
    return path


@dataclass
class SuiteRun:
    """What one run left: its exit status, its manifest's rows by model (each with `_root`, the --out folder)."""

    code: int
    rows: dict
    out: Path


def manifest_rows(out: Path) -> dict:
    """The suite manifest of `out` by model name (a model run twice: its latest line), each row with `_root`."""
    path = out / "suite" / "manifest.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    return {row["model"]: dict(row, _root=out) for row in map(json.loads, filter(str.strip, lines))}


def run_modules(folder: Path, modules: Modules, *flags: str, name: str = "tcd", header: str = "",
                backend: str = "none", listing: str = "modules.jsonl") -> SuiteRun:
    """`modules` through --suite modules on the CPU into `folder/name`, with `flags` added (e.g.
    "--unsafe-no-sandbox", "--timeout", "300"); `backend` None leaves --backend at its default."""
    listed = write_listing(folder / listing, modules, header)
    out = folder / name
    argv = ["--suite", "modules", "--modules-file", str(listed), "--out", str(out), *CPU, "-q",
            *(["--backend", backend] if backend else []), *flags]
    code = run_inductor_suite.main(argv)
    return SuiteRun(code, manifest_rows(out), out)
