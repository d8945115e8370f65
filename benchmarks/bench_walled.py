#!/usr/bin/env python3
"""Modules per minute behind the wall: the same --suite modules run with one sandboxed process per module
(--modules-per-process 1, the baseline) and with persistent walled workers (the default: one sandbox runs many
modules), in the same run, on the CPU (--device cpu --backend none: a dry run of every module, TRITON_INTERPRET=1).
Prints both rates, the ratio (issue #24's goal: >= 2.5x with 2 workers) and whether both runs gave every module the
same status, phase and error.

    python benchmarks/bench_walled.py                         # 40 built-in modules, 2 workers
    python benchmarks/bench_walled.py -n 20 -k 2
    python benchmarks/bench_walled.py --repos DIR --limit 60  # modules of downloaded repositories instead
    python benchmarks/bench_walled.py --backend inductor      # compile them too (CPU Inductor: C++ kernels)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import run_inductor_suite  # noqa: E402

HEADER = "import torch\nfrom torch import nn\nimport torch.nn.functional as F\n"
# Shapes of module ordinary repositories hold (a conv block, an MLP, attention, a norm, a residual), each made
# several ways by its parameters: the work per module is what a dry run of a small scraped module costs.
TEMPLATES = [
    "class ConvBlock{i}(nn.Module):\n    def __init__(self, cin={c}, cout={d}):\n        super().__init__()\n"
    "        self.conv = nn.Conv2d(cin, cout, 3, padding=1)\n        self.bn = nn.BatchNorm2d(cout)\n"
    "    def forward(self, x):\n        return F.relu(self.bn(self.conv(x)))\n",
    "class Mlp{i}(nn.Module):\n    def __init__(self, dim={d}, hidden={h}):\n        super().__init__()\n"
    "        self.fc1 = nn.Linear(dim, hidden)\n        self.fc2 = nn.Linear(hidden, dim)\n"
    "    def forward(self, x):\n        return self.fc2(F.gelu(self.fc1(x)))\n",
    "class Attention{i}(nn.Module):\n    def __init__(self, dim={d}, heads=4):\n        super().__init__()\n"
    "        self.heads = heads\n        self.qkv = nn.Linear(dim, dim * 3)\n        self.proj = nn.Linear(dim, dim)\n"
    "    def forward(self, x):\n        b, n, c = x.shape\n"
    "        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)\n"
    "        attn = (q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5).softmax(-1)\n"
    "        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))\n",
    "class Norm{i}(nn.Module):\n    def __init__(self, dim={d}, eps=1e-5):\n        super().__init__()\n"
    "        self.weight = nn.Parameter(torch.ones(dim))\n        self.eps = eps\n"
    "    def forward(self, x):\n        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight\n",
    "class Residual{i}(nn.Module):\n    def __init__(self, channels={c}):\n        super().__init__()\n"
    "        self.a = nn.Conv2d(channels, channels, 3, padding=1)\n"
    "        self.b = nn.Conv2d(channels, channels, 1)\n"
    "    def forward(self, x):\n        return F.relu(x + self.b(F.relu(self.a(x))))\n",
]


def built_in_modules(count: int) -> list[dict]:
    """`count` modules made from TEMPLATES with varied sizes."""
    modules = []
    for index in range(count):
        code = TEMPLATES[index % len(TEMPLATES)].format(i=index, c=8 + index % 5 * 8, d=16 * (1 + index % 4),
                                                        h=32 * (1 + index % 3))
        modules.append({"name": f"m{index:03d}", "class_name": code.split("class ")[1].split("(")[0],
                        "code": HEADER + code})
    return modules


def run(out: Path, inputs: list[str], workers: int, per_process: int, backend: str, timeout: float) -> tuple:
    """(seconds, manifest rows by model) of one suite run."""
    started = time.perf_counter()
    run_inductor_suite.main(["--suite", "modules", *inputs, "--out", str(out), "--gpus", "none",
                             "--workers-per-gpu", str(workers), "--device", "cpu", "--backend", backend,
                             "--timeout", str(timeout), "--modules-per-process", str(per_process), "-q"])
    seconds = time.perf_counter() - started
    lines = (out / "suite" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return seconds, {row["model"]: row for row in map(json.loads, lines)}


def outcome(row: dict) -> tuple:
    return row.get("status"), row.get("phase"), row.get("error")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=40, help="built-in modules (default: %(default)s)")
    parser.add_argument("-k", "--workers", type=int, default=2, help="worker processes (default: %(default)s)")
    parser.add_argument("--per-process", type=int, default=20, help="modules per persistent sandbox (default: "
                        "%(default)s, the suite's)")
    parser.add_argument("--repos", type=Path, help="downloaded repositories (scrape_github.py's folder) instead of "
                        "the built-in modules")
    parser.add_argument("--limit", type=int, help="with --repos: at most this many modules")
    parser.add_argument("--backend", default="none", help="torch.compile backend (default: none, a dry run)")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    os.environ.setdefault("TRITON_INTERPRET", "1")
    with tempfile.TemporaryDirectory() as tmp:
        if args.repos:
            inputs = ["--repos", str(args.repos), *(["--limit", str(args.limit)] if args.limit else [])]
        else:
            modules_file = Path(tmp) / "modules.jsonl"
            modules_file.write_text("".join(json.dumps(m) + "\n" for m in built_in_modules(args.n)))
            inputs = ["--modules-file", str(modules_file)]
        base_s, base = run(Path(tmp) / "one_per_module", inputs, args.workers, 1, args.backend, args.timeout)
        new_s, new = run(Path(tmp) / "persistent", inputs, args.workers, args.per_process, args.backend,
                         args.timeout)
    differ = sorted(name for name in set(base) | set(new) if outcome(base.get(name, {})) != outcome(new.get(name, {})))
    ok = sum(row.get("status") == "ok" for row in new.values())
    print(f"modules: {len(new)} ({ok} ok), {args.workers} workers, backend {args.backend}, on the CPU")
    print(f"one walled process per module: {base_s:7.1f} s  {len(base) / base_s * 60:6.1f} modules/min")
    print(f"persistent walled workers:     {new_s:7.1f} s  {len(new) / new_s * 60:6.1f} modules/min")
    print(f"ratio: {base_s / new_s:.2f}x (goal >= 2.5x)")
    print("same results: " + ("yes" if not differ else f"no, {len(differ)} differ: {', '.join(differ[:10])}"))
    return 0 if not differ else 1


if __name__ == "__main__":
    sys.exit(main())
