"""Where the dataset stage writes, and what it may replace.

`-o` names the main file, or a folder (a trailing `/`, or a folder that exists) that gets the default file name.
Beside the main file go the per-split files and the side files (kernels.jsonl, stats, rejects, the card). A run
replaces only files the dataset stage wrote before (scraper.fileio.OutputFolder): a main, per-split or side file
of anyone else's is an error before any work is done (so is a file name whose extension is not the format's), and
a README.md that is not this stage's card is left alone (the card is then not written, and the run says so)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from scraper.fileio import OutputFolder
from scraper.paths import DEFAULT_DATASET_DIR

log = logging.getLogger(__name__)

STAGE = "create_json"
DEFAULT_FOLDER = DEFAULT_DATASET_DIR
CARD_FILES = ("README.md", "token_lengths.png")
CARD_MARKER = "<!-- dataset card written by triton-data (create_json.py) -->"
_OLD_CARD_SIGN = "pretty_name: Triton kernels"  # cards written before the marker existed


def names_folder(output: Optional[str | os.PathLike]) -> bool:
    """True when `-o output` means a folder (none given, a trailing separator, or a folder that exists)."""
    if output is None:
        return True
    text = os.fspath(output)
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


def resolve(output: Optional[str | os.PathLike], default_name: str) -> Path:
    """The main output file for `-o output`: a folder (trailing separator, or existing) gets `default_name`."""
    if output is None:
        return DEFAULT_FOLDER / default_name
    return Path(output) / default_name if names_folder(output) else Path(output)


def format_of(output: Optional[str | os.PathLike], formats: tuple) -> Optional[str]:
    """The format a file named by `-o` asks for by its extension (`data.parquet` -> parquet), or None (a folder,
    or an extension that is none of `formats`)."""
    if names_folder(output):
        return None
    suffix = Path(output).suffix.lower().lstrip(".")
    return suffix if suffix in formats else None


def format_mismatch(output: Optional[str | os.PathLike], fmt: str) -> Optional[str]:
    """Why the file `-o output` names cannot hold `fmt` (its extension says another format or none), or None.
    A .json name holding Parquet bytes, or JSON in notes.txt, would mislead every reader of it."""
    if names_folder(output) or Path(output).suffix.lower() == f".{fmt}":
        return None
    return (f"-o {output}: a {fmt} dataset file must end in .{fmt} (--format picks json, jsonl or parquet; a "
            f"name ending in one of them picks it); for a folder, end the name with '/'")


def is_own_card(path: Path) -> bool:
    """True when the file is a dataset card this stage wrote."""
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:4096]
    except OSError:
        return False
    return CARD_MARKER in head or _OLD_CARD_SIGN in head


def claim(main: Path, required: list[str], card: bool = False) -> bool:
    """Refuse (FileExistsError) when `main` or one of `required` exists and is not this stage's (before anything is
    written), make the output folder,
    and record what this run will write. Returns whether the card may be written (False, with a warning, when
    a README.md or histogram of someone else's is there)."""
    folder = main.parent
    owned = OutputFolder(folder, STAGE, adopt=lambda f: is_own_card(f / "README.md"))
    owned.refuse_foreign([main.name, *required])  # the main file too: `-o mine/data.json` may be the user's own
    folder.mkdir(parents=True, exist_ok=True)
    card_ok = card and not [name for name in owned.foreign(CARD_FILES)
                            if not (name == "README.md" and is_own_card(folder / name))]
    if card and not card_ok:
        log.warning("%s holds a README.md or %s that create_json.py did not write: left alone, no dataset card "
                    "written (choose an output folder of its own, e.g. -o %s/)", folder, CARD_FILES[1],
                    main.with_suffix("").name)
    owned.claim([main.name, *required, *(CARD_FILES if card_ok else ())])
    return card_ok
