#!/usr/bin/env python3
"""Time exact + near dedup of N kernels (default 50,000) made by varying real ones: the Inductor kernels of the
test fixtures and the jit kernels of the real repository code in benchmarks/third_party/corpus.

Baseline, measured in the same run: `scraper.records.kernel_id` over every kernel (normalize + sha256), the work
every stage already does once per kernel to give it its id. The dedup step (what create_json.py runs:
exact dedup on ids, MinHash signatures, datasketch LSH, clusters, rejects.jsonl) is reported as a time and as a
ratio to that baseline.

    python benchmarks/bench_dedup.py            # 50,000 kernels
    python benchmarks/bench_dedup.py -n 5000    # quicker
"""

from __future__ import annotations

import argparse
import ast
import random
import re
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from scraper.dataset import dedup, pipeline  # noqa: E402
from scraper.dataset.item import Item  # noqa: E402
from scraper.records import KernelRecord, kernel_id  # noqa: E402
from scraper.stats import Rejects, Stats  # noqa: E402

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "torch_compile_debug"
CORPUS = REPO_ROOT / "benchmarks" / "third_party" / "corpus"
NUMBER = re.compile(r"(?<![\w.])\d+(?![\w.])")
TMP = re.compile(r"\btmp(\d+)\b")


def fixture_kernels() -> list[str]:
    """Every Inductor kernel of the fixture archives, as header imports + the @triton.jit function (the shape of
    the Inductor stage's clean module: the heuristics decorator and GPU-only lines dropped)."""
    kernels = []
    for archive in sorted(FIXTURES.glob("tcd_*.tar.gz")):
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                if member.name.endswith("output_code.py"):
                    kernels += embedded_kernels(tar.extractfile(member).read().decode())
    return kernels


def corpus_kernels() -> list[str]:
    """Every jit kernel of the real repository code in benchmarks/third_party/corpus (found by the generator's detector)."""
    from scraper.generator.detect import find_kernels_in_source

    kernels = []
    for file in sorted(CORPUS.rglob("*.py")):
        kernels += [k.source for k in find_kernels_in_source(file.read_text(errors="replace"), str(file))]
    return kernels


def embedded_kernels(output_code: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(output_code)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "triton":
            text = node.args[1].value
            header = [line for line in text[:text.find("@")].splitlines() if line.startswith(("import", "from"))]
            found.append("\n".join(header) + "\n\n" + text[text.index("@triton.jit"):])
    return found


def vary(base: str, index: int, rng: random.Random) -> str:
    """A variant of `base`: an exact copy (Inductor: under another kernel number) with a comment (exact
    duplicate), a copy with one constant changed (near duplicate), or a copy with renamed temporaries (Inductor's
    tmpN; a different document)."""
    roll = rng.random()
    if roll < 0.25:
        return re.sub(r"(def triton_\w+?)_\d+\(", rf"\1_{index}(", base, count=1) + f"# copy {index}\n"
    if roll < 0.6:
        numbers = list(NUMBER.finditer(base))
        if numbers:
            match = rng.choice(numbers)
            return base[:match.start()] + str(rng.randrange(1, 1 << 20)) + base[match.end():]
        return base + f"\nCONSTANT_{index} = {index}\n"
    prefix = f"v{index}_"
    return TMP.sub(lambda m: f"{prefix}{m.group(1)}", base) + f"\nCONSTANT_{index} = {index}\n"


def make_codes(count: int, seed: int) -> tuple[list, str]:
    rng = random.Random(seed)
    inductor, github = fixture_kernels(), corpus_kernels()
    bases = inductor + github
    described = f"{len(inductor)} Inductor fixture kernels + {len(github)} kernels of benchmarks/third_party/corpus"
    return [vary(rng.choice(bases), index, rng) for index in range(count)], described


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--count", type=int, default=50_000, help="kernels to generate (default: 50000)")
    parser.add_argument("--threshold", type=float, default=dedup.DEFAULT_THRESHOLD, help="near-dedup threshold")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    codes, described = make_codes(args.count, args.seed)
    print(f"{len(codes)} kernels varied from {described}, "
          f"{sum(map(len, codes)) / len(codes):.0f} characters on average", file=sys.stderr)

    start = time.perf_counter()
    ids = [kernel_id(code) for code in codes]
    baseline = time.perf_counter() - start

    records = [Item(KernelRecord(name=f"k{i}", code=code, source="inductor", id=kid, model=f"m{i % 50}"))
               for i, (code, kid) in enumerate(zip(codes, ids))]
    with tempfile.TemporaryDirectory() as tmp:
        stats = Stats("bench")
        rejects = Rejects(Path(tmp) / "rejects.jsonl", stats)
        start = time.perf_counter()
        kept, clusters = pipeline.deduplicate(records, args.threshold, rejects)
        elapsed = time.perf_counter() - start

    largest = max(int(size) for size in clusters.get("near", clusters["exact"]))
    print(f"baseline  normalize + sha256 of every kernel (kernel_id): {baseline:7.2f} s")
    print(f"dedup     exact + near (threshold {args.threshold}), rejects.jsonl: {elapsed:7.2f} s")
    print(f"ratio     dedup / baseline = {elapsed / baseline:.2f}")
    print(f"result    {len(records)} in, {stats.counts['dropped_exact_duplicate']} exact duplicates, "
          f"{stats.counts['dropped_near_duplicate']} near duplicates, {len(kept)} kept, largest cluster {largest}")
    if len(records) >= 50_000:
        print(f"goal      exact + near dedup of 50,000 kernels in under 60 s: {'met' if elapsed < 60 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
