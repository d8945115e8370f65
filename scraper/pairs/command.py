"""`triton-data pairs <action>`: what is done to the pairs stage 1 wrote.

    triton-data pairs check PAIRS.jsonl [--device cpu] ...   python -m scraper.pairs.check: each pair's Triton
                                                             against its PyTorch, pair_correct written back
"""

from __future__ import annotations

import sys
from typing import Optional

from scraper.cli import EXIT_USAGE, version

ACTIONS = {"check": "run each pair's Triton against its PyTorch (GPU; --device cpu: a dry run), write pair_correct"}


def usage(prog: str) -> str:
    return "\n".join([f"usage: {prog} <action> [options]   ({prog} <action> --help)", "", "actions:"]
                     + [f"  {name}  {what}" for name, what in ACTIONS.items()])


def main(argv: Optional[list[str]] = None, prog: str = "triton-data pairs") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(prog))
        return 0 if argv else EXIT_USAGE
    if argv[0] == "--version":  # as every subcommand's argparse answers it
        print(f"triton-data {version()}")
        raise SystemExit(0)
    if argv[0] not in ACTIONS:
        print(f"{prog}: unknown action {argv[0]!r}\n\n{usage(prog)}", file=sys.stderr)
        return EXIT_USAGE
    from scraper.pairs import check

    return check.main(argv[1:], prog=f"{prog} {argv[0]}")
