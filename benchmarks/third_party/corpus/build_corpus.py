#!/usr/bin/env python
"""Rebuild benchmarks/third_party/corpus/ from the PyPI wheels of three real Triton projects (see README.md here).

    pip download --no-deps -d /tmp/wheels liger-kernel==0.8.5 fla-core==0.6.0 unsloth==2026.10.9
    python benchmarks/third_party/corpus/build_corpus.py /tmp/wheels

Copies the selected .py files (paths kept, under <owner>__<repo>/) and each project's LICENSE; files whose
header names a copyleft license (AGPL/GPL) are left out.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# wheel file -> (folder, top-level prefixes kept, license entry in the wheel)
SELECTION = {
    "liger_kernel-0.8.5-py3-none-any.whl": (
        "linkedin__Liger-Kernel", ["liger_kernel/ops/*.py", "liger_kernel/utils.py", "liger_kernel/__init__.py"],
        "liger_kernel-0.8.5.dist-info/licenses/LICENSE"),
    "fla_core-0.6.0-py3-none-any.whl": (
        "fla-org__flash-linear-attention",
        ["fla/ops/utils/", "fla/ops/common/", "fla/ops/gla/", "fla/ops/delta_rule/", "fla/ops/simple_gla/",
         "fla/ops/based/", "fla/ops/retention/", "fla/modules/", "fla/utils/"],
        "fla_core-0.6.0.dist-info/licenses/LICENSE"),
    "unsloth-2026.10.9-py3-none-any.whl": (
        "unslothai__unsloth", ["unsloth/kernels/", "unsloth/device_type.py"], "unsloth-2026.10.9.dist-info/licenses/LICENSE"),
}


def selected(name: str, patterns: list[str]) -> bool:
    """True when a wheel entry matches one of the patterns (`dir/` prefix, `dir/*.py` one level, exact file)."""
    for pattern in patterns:
        if pattern.endswith("/*.py"):
            folder = pattern[:-4]
            if name.startswith(folder) and "/" not in name[len(folder):] and name.endswith(".py"):
                return True
        elif pattern.endswith("/") and name.startswith(pattern) and name.endswith(".py"):
            return True
        elif name == pattern:
            return True
    return False


def permissive(data: bytes) -> bool:
    """False for files whose header says they are under a copyleft license (unsloth has AGPL-3.0 files)."""
    head = data[:3000].decode("utf-8", "replace")
    return not any(marker in head for marker in ("Affero", "AGPL", "GNU General Public", "GPL-"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheels", type=Path, help="folder with the three wheels")
    args = parser.parse_args(argv)
    for wheel, (folder, patterns, license_entry) in SELECTION.items():
        with zipfile.ZipFile(args.wheels / wheel) as archive:
            for name in archive.namelist():
                if selected(name, patterns) and ".." not in name.split("/") and permissive(archive.read(name)):
                    target = HERE / folder / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.read(name))
            (HERE / folder / "LICENSE").write_bytes(archive.read(license_entry))
    return 0


if __name__ == "__main__":
    sys.exit(main())
